// Package carrier defines how packets are carried to another host's
// containers. Each way (direct, vxlan, ipip) is one implementation in a
// folder of its own, owning its device, its constants and the bytes its
// encapsulation takes from the MTU.
package carrier

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
)

// Mode is how packets reach another host's block. Each mode is one
// implementation of Carrier.
type Mode string

const (
	ModeDirect Mode = "direct"
	ModeVXLAN  Mode = "vxlan"
	ModeIPIP   Mode = "ipip"
)

// BlockRoute is one wanted route between hosts.
type BlockRoute struct {
	Dst       netip.Prefix
	Blackhole bool       // this host's own block: drop what no endpoint route matches
	Via       netip.Addr // the remote host's address
	Mode      Mode
}

func (r BlockRoute) String() string {
	if r.Blackhole {
		return "blackhole " + r.Dst.String()
	}
	return fmt.Sprintf("%s via %s (%s)", r.Dst, r.Via, r.Mode)
}

// Carrier is one way of carrying packets to another host: it prepares what
// the mode needs (a device, neighbour entries) and renders the kernel route.
type Carrier interface {
	// Mode names the carrier.
	Mode() Mode
	// Available reports whether this kernel can do it, with the reason if not.
	Available() (bool, string)
	// Prepare makes the carrier's device and peer entries match peers
	// (the remote hosts' addresses that routes through it use).
	Prepare(peers []netip.Addr) error
	// Route renders r for the kernel. The route's protocol is left to the
	// reconciler that owns it. A LinkIndex of 0 means "the device the
	// kernel would use to reach r.Via", resolved by the caller.
	Route(r BlockRoute) (*netlink.Route, error)
	// Remove deletes everything the carrier made.
	Remove() error
	// Overhead is the bytes its encapsulation takes from the MTU.
	Overhead() int
}

var (
	kindMu    sync.Mutex
	kindCache = map[string]bool{} // what this kernel can create does not change while we run
)

// KernelHasLinkKind tries, once per kind, to create a throwaway link of it.
func KernelHasLinkKind(kind string) bool {
	kindMu.Lock()
	defer kindMu.Unlock()
	if v, ok := kindCache[kind]; ok {
		return v
	}
	v := probeLinkKind(kind)
	kindCache[kind] = v
	return v
}

func probeLinkKind(kind string) bool {
	name := "calprobe0"
	var l netlink.Link
	attrs := netlink.LinkAttrs{Name: name}
	switch kind {
	case "ipip":
		l = &netlink.Iptun{LinkAttrs: attrs}
	case "vxlan":
		l = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: 4095, Port: 4790}
	default:
		return false
	}
	if err := netlink.LinkAdd(l); err != nil {
		return false
	}
	if got, err := netlinksafe.LinkByName(name); err == nil {
		_ = netlink.LinkDel(got)
	}
	return true
}

// OnlinkVia is r sent onlink through the tunnel device dev to the remote
// host's address: how every encapsulating carrier routes a block.
func OnlinkVia(dev string, r BlockRoute) (*netlink.Route, error) {
	l, err := netlinksafe.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("%s missing: %w", dev, err)
	}
	return &netlink.Route{
		Dst: nl.IPNet(r.Dst), Gw: r.Via.AsSlice(), LinkIndex: l.Attrs().Index,
		Flags: int(netlink.FLAG_ONLINK),
	}, nil
}
