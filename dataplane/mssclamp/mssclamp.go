// Package mssclamp owns one nftables table, inet calico-libnetwork-mss,
// that clamps the TCP MSS of connections our containers open or accept to
// the MTU of the route their packets leave by:
//
//	table inet calico-libnetwork-mss {
//	    chain forward { type filter hook forward priority mangle; policy accept;
//	        iifname "cali*" tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu
//	    }
//	}
//
// Container veths get the full MTU (the uplink's): traffic that is not
// encapsulated needs nothing smaller. Only the tunnels' devices
// (vxlan.calico, tunl0) have the smaller MTU, so a container cannot know
// from its own interface that a peer behind a tunnel needs smaller
// segments. The clamp tells both ends in the handshake: the SYN and the
// SYN-ACK a container sends into a tunnel carry the tunnel's MSS (the
// kernel only lowers an MSS, never raises it), so neither side sends a
// segment the tunnel cannot carry. Everything else (UDP, ICMP, a peer
// that does not clamp) falls back to path MTU discovery: the host answers
// a too-big packet with ICMP "fragmentation needed" through its output
// hook, which no policy chain of ours filters.
//
// The table never changes with the cluster, so it is written once and
// rewritten only when it is missing or not ours (checked each repair
// pass). It is left in place on shutdown, like the other tables.
package mssclamp

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Table is the table's name (family inet).
const Table = "calico-libnetwork-mss"

const (
	chainForward = "forward"
	// version marks the rule's comment; bumping it makes an upgraded
	// daemon rewrite a table an older one wrote.
	version = "mss-clamp v1"
	// tcpOptMaxseg is the TCP MSS option's kind; its value is 2 bytes at
	// offset 2.
	tcpOptMaxseg = 2
	tcpFlagSYN   = 0x02
	tcpFlagRST   = 0x04
)

// Clamp writes and checks the table in one network namespace.
type Clamp struct {
	// IfacePrefix names the container veths' host side ("cali").
	IfacePrefix string
	// NetNS is a namespace file descriptor; 0: the calling thread's.
	NetNS int
}

// New returns a clamp for the veths named prefix* in the current
// namespace.
func New(prefix string) *Clamp { return &Clamp{IfacePrefix: prefix} }

func (c *Clamp) dial() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if c.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(c.NetNS))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return conn, nil
}

func (c *Clamp) table() *nftables.Table {
	return &nftables.Table{Name: Table, Family: nftables.TableFamilyINet}
}

// comment is the rule's comment: what it does and for which veths.
func (c *Clamp) comment() string {
	return fmt.Sprintf("%s: SYNs from %s* get the MSS of their route's MTU", version, c.IfacePrefix)
}

// Ensure writes the table unless the kernel already holds it as this
// version writes it; it reports whether it wrote.
func (c *Clamp) Ensure() (bool, error) {
	if c.IfacePrefix == "" {
		return false, errors.New("mssclamp: no interface prefix")
	}
	ok, err := c.Holds()
	if err != nil {
		return false, err
	}
	if ok {
		return false, nil
	}
	if err := c.replace(); err != nil {
		return false, fmt.Errorf("nftables: write table inet %s: %w", Table, err)
	}
	return true, nil
}

// Holds reports whether the kernel holds the table with exactly our rule.
func (c *Clamp) Holds() (bool, error) {
	conn, err := c.dial()
	if err != nil {
		return false, err
	}
	if _, err := conn.ListTableOfFamily(Table, nftables.TableFamilyINet); err != nil {
		return false, nil // missing
	}
	ch, err := conn.ListChain(c.table(), chainForward)
	if err != nil || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward {
		return false, nil
	}
	rules, err := conn.GetRules(c.table(), ch)
	if err != nil || len(rules) != 1 {
		return false, nil
	}
	got, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment)
	return got == c.comment(), nil
}

// replace writes the whole table in one transaction (added, deleted and
// made again), so there is never a moment without it.
func (c *Clamp) replace() error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	t := c.table()
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	accept := nftables.ChainPolicyAccept
	ch := conn.AddChain(&nftables.Chain{Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle, Policy: &accept})
	conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: c.exprs(),
		UserData: userdata.AppendString(nil, userdata.TypeComment, c.comment())})
	return conn.Flush()
}

// exprs is the rule: iifname "<prefix>*" meta l4proto tcp
// tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu.
func (c *Clamp) exprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		// A prefix match: compare only the prefix's bytes.
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(c.IfacePrefix)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFlagSYN | tcpFlagRST}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{tcpFlagSYN}},
		// The route's MTU minus the IP and TCP headers; the kernel only
		// ever lowers the option.
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Exthdr{SourceRegister: 1, Type: tcpOptMaxseg, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	}
}

// Remove deletes the table, and only it (uninstall, tests).
func (c *Clamp) Remove() error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	conn.AddTable(c.table()) // so that the delete finds it
	conn.DelTable(c.table())
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: remove table inet %s: %w", Table, err)
	}
	return nil
}
