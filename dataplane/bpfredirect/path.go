// Package bpfredirect owns the eBPF redirect path: two tc programs
// (attached with tcx, so they live only as long as the daemon holds them)
// that carry the established TCP traffic of containers straight to where
// the kernel would route it, past the forwarding hooks:
//
//   - on each host-side cali veth's ingress (what a container sends), to
//     another container on this host through that container's veth peer
//     (bpf_redirect_peer), or out of the uplink or a tunnel (bpf_redirect);
//   - on the uplink's and the tunnels' ingress, into a container.
//
// Only a connection the kernel's own path has accepted is taken: its
// conntrack entry is confirmed, has seen a reply, is assured, has no NAT
// and carries the mark the policy table sets on the flows it lets through
// (so every connection's first packets walked our policy and every other
// table). SYN, FIN and RST always take the kernel's path, so conntrack sees
// connections open and close; so does anything the programs do not parse
// (IPv6, UDP, IP options, fragments), a packet whose route the kernel
// would not forward at once (local, unreachable, neighbour unresolved,
// too big), and a container's packet from an address not its own. When
// the daemon stops, the programs go with it and the kernel's path carries
// everything: nothing is cut off.
package bpfredirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// liberalSysctl: packets of a connection that bypass conntrack do not move
// its TCP window; with strict window tracking the next packet that takes
// the kernel's path (a FIN, a retransmission) could be judged out of window
// and dropped as invalid. The nftables flow offload sets the same per
// connection.
const liberalSysctl = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"

// Path holds the loaded programs and their attachments.
type Path struct {
	coll     *ebpf.Collection
	mu       sync.Mutex
	attached map[int]attachment // ifindex -> its tcx link
}

type attachment struct {
	name  string
	index int
	addr  netip.Addr // an endpoint's; invalid for an uplink
	link  link.Link
	at    time.Time
}

// Open reads the kernel, loads both programs and their maps (ctMark is
// the conntrack mark bit the policy table sets on the connections it lets
// through, nftpolicy.DefaultAcceptedCTMark), and sets
// conntrack's TCP window tracking to liberal. An error says what the
// kernel lacks; the caller then keeps to the nftables path.
func Open(ctMark uint32) (*Path, error) {
	k, err := ReadKernel()
	if err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollection(collectionSpec(k, ctMark))
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load eBPF programs: %+v", ve)
		}
		return nil, fmt.Errorf("load eBPF programs: %w", err)
	}
	// An interface that cannot exist: the kernel answers "no such device"
	// when it has tcx links, something else when it has not.
	if l, err := link.AttachTCX(link.TCXOptions{Interface: math.MaxInt32, Program: coll.Programs["to_endpoint"], Attach: ebpf.AttachTCXIngress}); err == nil {
		_ = l.Close()
	} else if errors.Is(err, ebpf.ErrNotSupported) {
		coll.Close()
		return nil, fmt.Errorf("tcx links (kernel 6.6+): %w", err)
	}
	if err := os.WriteFile(liberalSysctl, []byte("1"), 0o644); err != nil {
		coll.Close()
		return nil, fmt.Errorf("set %s: %w", liberalSysctl, err)
	}
	return &Path{coll: coll, attached: map[int]attachment{}}, nil
}

func collectionSpec(k Kernel, ctMark uint32) *ebpf.CollectionSpec {
	prog := func(name string, from bool) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Name: name, Type: ebpf.SchedCLS, License: "Dual BSD/GPL",
			Instructions: program(k, ctMark, from)}
	}
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			mapIfaces:   {Name: "cali_ifaces", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 65536},
			mapAddrs:    {Name: "cali_addrs", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 65536},
			mapCounters: {Name: "cali_counters", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: numCounters},
			mapTunnel:   {Name: "cali_tunnel", Type: ebpf.Array, KeySize: 4, ValueSize: tunValSize, MaxEntries: 1},
		},
		Programs: map[string]*ebpf.ProgramSpec{
			"from_endpoint": prog("cali_from_ep", true),
			"to_endpoint":   prog("cali_to_ep", false),
		},
	}
}

// AttachEndpoint puts the from-endpoint program on a host-side veth and
// records its IPv4 address (the only source its packets may have on this
// path, and where the to-endpoint program delivers). Again for the same
// interface and address it changes nothing.
func (p *Path) AttachEndpoint(name string, ifindex int, v4 netip.Addr) error {
	if !v4.Is4() || v4.IsUnspecified() {
		return fmt.Errorf("endpoint %s: no IPv4 address", name)
	}
	return p.attach(attachment{name: name, index: ifindex, addr: v4})
}

// AttachUplink puts the to-endpoint program on an uplink or a tunnel (one
// with an Ethernet header: VXLAN, not IPIP's tunl0).
func (p *Path) AttachUplink(name string, ifindex int) error {
	return p.attach(attachment{name: name, index: ifindex})
}

func (p *Path) attach(a attachment) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if have, ok := p.attached[a.index]; ok && have.name == a.name && have.addr == a.addr {
		return nil
	}
	p.detachLocked(a.index)
	var val uint32 // 0: an uplink
	if a.addr.IsValid() {
		b := a.addr.As4()
		val = binary.NativeEndian.Uint32(b[:])
	}
	prog := p.coll.Programs["to_endpoint"]
	if a.addr.IsValid() {
		prog = p.coll.Programs["from_endpoint"]
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: a.index, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attach eBPF program to %s: %w", a.name, err)
	}
	a.link, a.at = l, time.Now()
	p.attached[a.index] = a
	err = p.coll.Maps[mapIfaces].Put(uint32(a.index), val)
	if err == nil && a.addr.IsValid() {
		err = p.coll.Maps[mapAddrs].Put(val, uint32(a.index))
	}
	if err != nil {
		p.detachLocked(a.index)
		return fmt.Errorf("attach eBPF program to %s: map: %w", a.name, err)
	}
	return nil
}

// Detach takes the program off an interface (by name) and forgets its
// address. Nothing attached is not an error.
func (p *Path) Detach(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for idx, a := range p.attached {
		if a.name == name {
			p.detachLocked(idx)
		}
	}
}

func (p *Path) detachLocked(ifindex int) {
	a, ok := p.attached[ifindex]
	if !ok {
		return
	}
	if a.link != nil {
		_ = a.link.Close()
	}
	_ = p.coll.Maps[mapIfaces].Delete(uint32(ifindex))
	if a.addr.IsValid() {
		b := a.addr.As4()
		// Only if it still points here: another endpoint may have the
		// address now.
		var idx uint32
		if p.coll.Maps[mapAddrs].Lookup(binary.NativeEndian.Uint32(b[:]), &idx) == nil && idx == uint32(ifindex) {
			_ = p.coll.Maps[mapAddrs].Delete(binary.NativeEndian.Uint32(b[:]))
		}
	}
	delete(p.attached, ifindex)
}

// Interface is one interface the path should be on.
type Interface struct {
	Name     string
	Index    int
	Endpoint bool       // a host-side cali veth, else an uplink or tunnel
	IPv4     netip.Addr // an endpoint's address
}

// Sync makes the attachments want, as listed at listedAt: attaches what is
// missing, detaches what is no longer there (an interface deleted, renamed
// or whose index changed) unless it was attached after the listing (an
// endpoint Join made meanwhile). Errors are joined; the rest is still done.
func (p *Path) Sync(want []Interface, listedAt time.Time) error {
	keep := map[int]bool{}
	var errs []error
	for _, w := range want {
		keep[w.Index] = true
		var err error
		if w.Endpoint {
			err = p.AttachEndpoint(w.Name, w.Index, w.IPv4)
		} else {
			err = p.AttachUplink(w.Name, w.Index)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	p.mu.Lock()
	for idx, a := range p.attached {
		if !keep[idx] && a.at.Before(listedAt) {
			p.detachLocked(idx)
		}
	}
	p.mu.Unlock()
	return errors.Join(errs...)
}

// Attached counts the interfaces the programs are on, by kind.
func (p *Path) Attached() (endpoints, uplinks int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.attached {
		if a.addr.IsValid() {
			endpoints++
		} else {
			uplinks++
		}
	}
	return endpoints, uplinks
}

// Counts are the programs' packet counts since the path was opened,
// summed over CPUs.
type Counts struct {
	ToEndpoint   uint64 // redirected into containers
	Decapsulated uint64 // of ToEndpoint: taken out of VXLAN by the program
	Out          uint64 // redirected out of an uplink or the tunnel device
	Encapsulated uint64 // of Out: put into VXLAN by the program
	Passed       uint64 // left to the kernel's path
}

// Counters reads the counts.
func (p *Path) Counters() (Counts, error) {
	var sums [numCounters]uint64
	for i := range sums {
		var per []uint64
		if err := p.coll.Maps[mapCounters].Lookup(uint32(i), &per); err != nil {
			return Counts{}, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range per {
			sums[i] += v
		}
	}
	return Counts{
		ToEndpoint: sums[CountToEndpoint], Decapsulated: sums[CountDecap],
		Out: sums[CountOut] + sums[CountEncap], Encapsulated: sums[CountEncap],
		Passed: sums[CountPassed],
	}, nil
}

// SetTunnel tells the programs where vxlan.calico is (its ifindex) and
// the host's VTEP address (the device's local address): from then on they
// encapsulate and take apart VXLAN themselves. An ifindex of 0 stops it.
func (p *Path) SetTunnel(ifindex int, local netip.Addr) error {
	val := make([]byte, tunValSize)
	if ifindex > 0 && local.Is4() {
		b := local.As4()
		copy(val[tunLocal:], b[:])
		binary.NativeEndian.PutUint32(val[tunIfindex:], uint32(ifindex))
	}
	if err := p.coll.Maps[mapTunnel].Put(uint32(0), val); err != nil {
		return fmt.Errorf("eBPF path: tunnel map: %w", err)
	}
	return nil
}

// Close detaches everything and unloads the programs: the kernel's path
// carries all traffic from then on.
func (p *Path) Close() error {
	p.mu.Lock()
	for idx := range p.attached {
		p.detachLocked(idx)
	}
	p.mu.Unlock()
	p.coll.Close()
	return nil
}
