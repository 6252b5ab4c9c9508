package nftpolicy

// Host protection: a second table of our own, inet calico-libnetwork-host,
// kept whether network policy is on or off. It guards the host and the
// network against its containers and against forged encapsulated traffic:
//
//	chain prerouting (hook prerouting, priority raw):
//	    iifname "cali*" fib saddr . iif oif 0 drop      anti-spoofing: an endpoint
//	                                                    sends from addresses routed to it
//	chain input (hook input, priority filter):
//	    iifname "cali*" jump endpoint-to-host
//	    udp dport 4789, VNI 4096, ip saddr != @nodes4 drop   VXLAN from registered nodes only
//	    meta l4proto ipip, ip saddr != @nodes4 drop          IPIP from registered nodes only (kernels with ipip)
//	chain forward (hook forward, priority filter):
//	    iifname "cali*" tcp to a closed endpoint (etcd) drop
//	chain endpoint-to-host:
//	    ct state established,related accept              replies to what the host opened
//	    ct state invalid drop
//	    ICMPv6 router/neighbour solicitation and neighbour advertisement accept
//	    allowed ports accept; closed ports (etcd) drop
//	    drop (DefaultEndpointToHostAction Drop) or nothing (Accept, Return)
//
// The table is small: every change replaces it in one transaction (add,
// delete and re-create in the same batch), so there is never a moment
// without it.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// DefaultHostTable is the host protection table's name.
const DefaultHostTable = "calico-libnetwork-host"

const (
	hostChainPre    = "prerouting"
	hostChainInput  = "input"
	hostChainFwd    = "forward"
	hostChainToHost = "endpoint-to-host"
	hostSetNodes4   = "nodes4"
	// fingerprintTag precedes the fingerprint of the rules in the first
	// rule's comment.
	fingerprintTag = "rules="
)

// HostPort is one port of one IP protocol (unix.IPPROTO_TCP, ...).
type HostPort struct {
	Proto uint8
	Port  uint16
}

func (p HostPort) String() string { return fmt.Sprintf("%s/%d", protoWord(p.Proto), p.Port) }

func protoWord(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprint(p)
}

// HostRules is what the host protection table enforces.
type HostRules struct {
	// DropToHost drops connections containers open to this host's own
	// addresses (DefaultEndpointToHostAction Drop); otherwise they are left
	// to the policy table and the host's own firewall.
	DropToHost bool
	// AllowedPorts are ports of this host containers may always connect to.
	AllowedPorts []HostPort
	// ClosedPorts are ports of this host containers may never connect to
	// (the etcd ports), unless they are in AllowedPorts.
	ClosedPorts []HostPort
	// ClosedEndpoints are TCP services elsewhere (the etcd cluster's
	// members) containers may not connect to, unless their port is allowed.
	ClosedEndpoints []netip.AddrPort
	// Nodes are the registered nodes' IPv4 addresses: VXLAN packets of our
	// VNI and IPIP packets from any other source are dropped.
	Nodes     []netip.Addr
	VXLANPort uint16
	VXLANVNI  uint32
	// IPIP: IPIP packets (IP protocol 4) from anyone but the nodes are
	// dropped too. Set where this kernel has ipip (elsewhere the kernel
	// drops them itself); like Calico, this also drops other software's
	// IPIP from non-nodes on such a host.
	IPIP bool
}

// normalized sorts and de-duplicates, and removes closed ports and
// endpoints that are allowed, so that equal rules compare equal.
func (r HostRules) normalized() HostRules {
	ports := func(ps []HostPort) []HostPort {
		out := slices.Clone(ps)
		sort.Slice(out, func(i, j int) bool {
			if out[i].Proto != out[j].Proto {
				return out[i].Proto < out[j].Proto
			}
			return out[i].Port < out[j].Port
		})
		return slices.Compact(out)
	}
	r.AllowedPorts = ports(r.AllowedPorts)
	allowed := func(p HostPort) bool { return slices.Contains(r.AllowedPorts, p) }
	r.ClosedPorts = slices.DeleteFunc(ports(r.ClosedPorts), allowed)
	eps := slices.Clone(r.ClosedEndpoints)
	for i := range eps {
		eps[i] = netip.AddrPortFrom(eps[i].Addr().Unmap(), eps[i].Port())
	}
	slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
	r.ClosedEndpoints = slices.DeleteFunc(slices.Compact(eps), func(ap netip.AddrPort) bool {
		return allowed(HostPort{Proto: unix.IPPROTO_TCP, Port: ap.Port()})
	})
	var nodes []netip.Addr
	for _, a := range r.Nodes {
		if a = a.Unmap(); a.Is4() {
			nodes = append(nodes, a)
		}
	}
	slices.SortFunc(nodes, func(a, b netip.Addr) int { return a.Compare(b) })
	r.Nodes = slices.Compact(nodes)
	return r
}

// hostRuleFormat versions the host table's rules (v2: IPIP from registered
// nodes only), so an upgraded daemon rewrites an older table.
const hostRuleFormat = "host-v2"

// fingerprint covers every field: plain has no String method, which shows
// only how many nodes there are (a node replaced by another must change it).
func (r HostRules) fingerprint() string {
	type plain HostRules
	h := sha256.Sum256([]byte(fmt.Sprintf("%s|%s|%+v", ruleFormat, hostRuleFormat, plain(r))))
	return hex.EncodeToString(h[:8])
}

// HostConfig configures a HostProtection. The zero value works.
type HostConfig struct {
	Table       string // DefaultHostTable
	IfacePrefix string // DefaultIfacePrefix
	NetNS       int    // a namespace's file descriptor; 0 is the caller's
	Log         *slog.Logger
}

// HostProtection keeps the host protection table in line with HostRules.
// Its methods are safe for concurrent use.
type HostProtection struct {
	cfg   HostConfig
	table *nftables.Table

	mu      sync.Mutex
	applied string // fingerprint of what the kernel holds, "" when unknown
}

// NewHostProtection returns a HostProtection; nothing is written until Apply.
func NewHostProtection(cfg HostConfig) *HostProtection {
	if cfg.Table == "" {
		cfg.Table = DefaultHostTable
	}
	if cfg.IfacePrefix == "" {
		cfg.IfacePrefix = DefaultIfacePrefix
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &HostProtection{cfg: cfg, table: &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet}}
}

// Table is the table's name.
func (h *HostProtection) Table() string { return h.cfg.Table }

// Apply makes the kernel enforce r. It writes only when r differs from
// what was applied last or, with verify, when the kernel's table is not
// the one last applied (missing, or changed behind our back). It reports
// whether it wrote.
func (h *HostProtection) Apply(r HostRules, verify bool) (bool, error) {
	r = r.normalized()
	fp := r.fingerprint()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.applied == fp {
		if !verify {
			return false, nil
		}
		ok, err := h.holds(fp, len(r.Nodes))
		if err != nil {
			return false, err
		}
		if ok {
			return false, nil
		}
		h.cfg.Log.Warn("host protection table changed behind our back; restoring it", "table", h.cfg.Table)
	}
	if err := h.replace(r, fp); err != nil {
		h.applied = ""
		return false, fmt.Errorf("nftables: apply table %s: %w", h.cfg.Table, err)
	}
	h.applied = fp
	return true, nil
}

// Remove deletes the host protection table, and only it (uninstall, tests).
func (h *HostProtection) Remove() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := dial(h.cfg.NetNS, false)
	if err != nil {
		return err
	}
	c.AddTable(h.table) // so that the delete finds it
	c.DelTable(h.table)
	h.applied = ""
	return c.Flush()
}

// holds checks that the kernel's table is the one with fingerprint fp.
func (h *HostProtection) holds(fp string, nodes int) (bool, error) {
	c, err := dial(h.cfg.NetNS, true)
	if err != nil {
		return false, err
	}
	defer func() { _ = c.CloseLasting() }()
	if _, err := c.ListTableOfFamily(h.cfg.Table, nftables.TableFamilyINet); err != nil {
		return false, nil // gone
	}
	ch, err := c.ListChain(h.table, hostChainInput)
	if err != nil {
		return false, nil
	}
	rules, err := c.GetRules(h.table, ch)
	if err != nil || len(rules) == 0 {
		return false, nil
	}
	comment, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment)
	if !strings.Contains(comment, fingerprintTag+fp) {
		return false, nil
	}
	set, err := c.GetSetByName(h.table, hostSetNodes4)
	if err != nil {
		return false, nil
	}
	elems, err := c.GetSetElements(set)
	if err != nil || len(elems) != nodes {
		return false, nil
	}
	return true, nil
}

// replace writes the whole table in one transaction.
func (h *HostProtection) replace(r HostRules, fp string) error {
	c, err := dial(h.cfg.NetNS, false)
	if err != nil {
		return err
	}
	c.AddTable(h.table)
	c.DelTable(h.table)
	c.AddTable(h.table)
	nodes := &nftables.Set{Table: h.table, Name: hostSetNodes4, KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(nodes, addrElems(r.Nodes)); err != nil {
		return fmt.Errorf("set %s: %w", hostSetNodes4, err)
	}
	accept := nftables.ChainPolicyAccept
	base := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: h.table, Hooknum: hook, Priority: prio, Type: nftables.ChainTypeFilter, Policy: &accept})
	}
	toHost := c.AddChain(&nftables.Chain{Name: hostChainToHost, Table: h.table})
	chains := map[string]*nftables.Chain{
		hostChainPre:    base(hostChainPre, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw),
		hostChainInput:  base(hostChainInput, nftables.ChainHookInput, nftables.ChainPriorityFilter),
		hostChainFwd:    base(hostChainFwd, nftables.ChainHookForward, nftables.ChainPriorityFilter),
		hostChainToHost: toHost,
	}
	for _, name := range []string{hostChainPre, hostChainInput, hostChainFwd, hostChainToHost} {
		for _, ru := range h.rules(name, r, fp) {
			c.AddRule(&nftables.Rule{Table: h.table, Chain: chains[name], Exprs: ru.exprs, UserData: ru.userData()})
		}
	}
	return c.Flush()
}

// rules renders one chain of the table.
func (h *HostProtection) rules(chain string, r HostRules, fp string) []rule {
	nb := func() *builder { return &builder{} }
	prefix := h.cfg.IfacePrefix
	drop, acc := verdict(expr.VerdictDrop), verdict(expr.VerdictAccept)
	var out []rule
	switch chain {
	case hostChainPre:
		out = append(out, nb().ifnamePrefix(true, prefix).
			add("fib saddr . iif oif 0", &expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true}, cmp(expr.CmpOpEq, make([]byte, 4))).
			add("drop", drop).rule("an endpoint sends from its own addresses only"))
	case hostChainInput:
		// The first rule's comment carries the fingerprint (see holds).
		out = append(out, nb().ifnamePrefix(true, prefix).add("jump "+hostChainToHost, jump(hostChainToHost)).
			rule("from endpoints to this host "+fingerprintTag+fp))
		vni := []byte{byte(r.VXLANVNI >> 16), byte(r.VXLANVNI >> 8), byte(r.VXLANVNI)}
		saddr, word := addrPayload(4, true)
		out = append(out, nb().nfproto(4).l4proto(unix.IPPROTO_UDP, false).
			add(fmt.Sprintf("th dport %d", r.VXLANPort), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, cmp(expr.CmpOpEq, be16(r.VXLANPort))).
			add(fmt.Sprintf("@th,96,24 %d", r.VXLANVNI), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 3}, cmp(expr.CmpOpEq, vni)).
			add(word+" != @"+hostSetNodes4, saddr, lookup(hostSetNodes4, true)).
			add("counter drop", &expr.Counter{}, drop).rule("VXLAN only from registered nodes"))
		if r.IPIP {
			saddr, word = addrPayload(4, true)
			out = append(out, nb().nfproto(4).l4proto(unix.IPPROTO_IPIP, false).
				add(word+" != @"+hostSetNodes4, saddr, lookup(hostSetNodes4, true)).
				add("counter drop", &expr.Counter{}, drop).rule("IPIP only from registered nodes"))
		}
	case hostChainFwd:
		for _, ep := range r.ClosedEndpoints {
			fam := 4
			if ep.Addr().Is6() {
				fam = 6
			}
			daddr, word := addrPayload(fam, false)
			out = append(out, nb().ifnamePrefix(true, prefix).nfproto(fam).l4proto(unix.IPPROTO_TCP, false).
				add(fmt.Sprintf("%s %s", word, ep.Addr()), daddr, cmp(expr.CmpOpEq, ep.Addr().AsSlice())).
				add(fmt.Sprintf("th dport %d", ep.Port()), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, cmp(expr.CmpOpEq, be16(ep.Port()))).
				add("counter drop", &expr.Counter{}, drop).rule("the datastore is closed to endpoints"))
		}
	case hostChainToHost:
		out = append(out,
			nb().ctState("established,related", expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED).add("accept", acc).rule("replies to connections the host opened"),
			nb().ctState("invalid", expr.CtStateBitINVALID).add("drop", drop).rule("not part of any valid connection"))
		for _, t := range [][2]byte{{133, 133}, {135, 136}} {
			out = append(out, nb().nfproto(6).l4proto(unix.IPPROTO_ICMPV6, false).add(fmt.Sprintf("icmpv6 type %d-%d", t[0], t[1]),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{t[0]}, ToData: []byte{t[1]}}).
				add("accept", acc).rule("IPv6 router and neighbour discovery"))
		}
		port := func(p HostPort, v *expr.Verdict, word, comment string) rule {
			return nb().l4proto(p.Proto, false).
				add(fmt.Sprintf("th dport %d", p.Port), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, cmp(expr.CmpOpEq, be16(p.Port))).
				add(word, v).rule(comment)
		}
		for _, p := range r.AllowedPorts {
			out = append(out, port(p, acc, "accept", "endpointToHostAllowedPorts "+p.String()))
		}
		for _, p := range r.ClosedPorts {
			out = append(out, port(p, drop, "drop", "the datastore is closed to endpoints"))
		}
		if r.DropToHost {
			out = append(out, nb().add("counter drop", &expr.Counter{}, drop).rule("defaultEndpointToHostAction Drop"))
		}
	}
	return out
}

// String renders r for logs, as it is enforced.
func (r HostRules) String() string {
	r = r.normalized()
	var b strings.Builder
	action := "accept (policy and the host's firewall decide)"
	if r.DropToHost {
		action = "drop"
	}
	fmt.Fprintf(&b, "endpoint to host: %s; allowed %v; closed %v %v; VXLAN from %d node(s)", action, r.AllowedPorts, r.ClosedPorts, r.ClosedEndpoints, len(r.Nodes))
	return b.String()
}
