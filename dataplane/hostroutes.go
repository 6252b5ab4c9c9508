package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/direct"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/ipip"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/ownedroute"
)

// BlockRouteProtocol marks the routes between hosts (remote blocks, borrowed
// addresses, blackholes for this host's blocks). It differs from
// RouteProtocol so that each reconciler owns exactly its own routes.
const BlockRouteProtocol netlink.RouteProtocol = 78

// BGPRouteProtocol marks the routes to other nodes' blocks learned over
// BGP (package bgp), installed with BGPRouteMetric: behind the route sync's
// protocol-78 route to the same block (metric 0 for IPv4, the kernel's
// 1024 for IPv6), so they carry traffic only while that one is missing.
// The three marks: 77 endpoints (RouteProtocol), 78 route sync, 79 BGP.
const (
	BGPRouteProtocol netlink.RouteProtocol = 79
	BGPRouteMetric                         = 2000
)

// blockRouteOwner lists and applies the routes carrying BlockRouteProtocol
// in the main table.
func blockRouteOwner() ownedroute.Reconciler {
	return ownedroute.Reconciler{Protocol: BlockRouteProtocol, Table: unix.RT_TABLE_MAIN}
}

// LinkMTUHolding is the MTU of the interface holding addr (0 if none).
func LinkMTUHolding(addr netip.Addr) int {
	_, mtu, err := nl.LinkHolding(addr)
	if err != nil {
		return 0
	}
	return mtu
}

// NewVXLANCarrier returns a VXLAN carrier for a host at localIP logging
// through d (mtu 0: the uplink's minus the overhead).
func (d *Dataplane) NewVXLANCarrier(localIP netip.Addr, mtu int) *vxlan.Carrier {
	return vxlan.New(localIP, mtu, d.log)
}

// BlockRoutes reconciles the routes between hosts: it keeps the kernel's
// routes carrying BlockRouteProtocol equal to the wanted set.
type BlockRoutes struct {
	dp       *Dataplane
	carriers map[carrier.Mode]carrier.Carrier
}

// NewBlockRoutes returns a reconciler using the given carriers (direct and
// ipip are always present; a given one replaces the default of its mode).
func (d *Dataplane) NewBlockRoutes(carriers ...carrier.Carrier) *BlockRoutes {
	b := &BlockRoutes{dp: d, carriers: map[carrier.Mode]carrier.Carrier{carrier.ModeDirect: direct.Carrier{}, carrier.ModeIPIP: ipip.New(netip.Addr{}, 0)}}
	for _, c := range carriers {
		b.carriers[c.Mode()] = c
	}
	return b
}

// Carrier returns the carrier of a mode.
func (b *BlockRoutes) Carrier(m carrier.Mode) carrier.Carrier { return b.carriers[m] }

// ApplyResult says what Apply did and what it could not do.
type ApplyResult struct {
	Added, Removed int
	Skipped        []string // wanted routes that could not be installed, with why
}

// Apply makes the kernel's inter-host routes equal to want: it prepares the
// carriers the routes use, renders the routes, reconciles them and takes
// down the carriers nobody needs any more.
func (b *BlockRoutes) Apply(want []carrier.BlockRoute) (ApplyResult, error) {
	var res ApplyResult
	peers := peersByMode(want)
	usable, skipped, errs := b.prepare(peers)
	res.Skipped = append(res.Skipped, skipped...)
	routes, skipped, rerrs := b.render(want, usable)
	res.Skipped = append(res.Skipped, skipped...)
	errs = append(errs, rerrs...)
	have, err := blockRouteOwner().List()
	if err != nil {
		return res, err
	}
	r, err := blockRouteOwner().Apply(routes, have)
	res.Added, res.Removed = r.Added, r.Removed
	if err != nil {
		errs = append(errs, err)
	}
	for m, c := range b.carriers {
		if len(peers[m]) == 0 {
			if err := c.Remove(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return res, errors.Join(errs...)
}

// peersByMode lists, per mode, the remote hosts that routes through it use.
func peersByMode(want []carrier.BlockRoute) map[carrier.Mode][]netip.Addr {
	peers := map[carrier.Mode][]netip.Addr{}
	for _, r := range want {
		if !r.Blackhole {
			peers[r.Mode] = append(peers[r.Mode], r.Via)
		}
	}
	return peers
}

// prepare readies every carrier some route needs and says which are usable;
// a carrier the kernel cannot do is reported, not an error.
func (b *BlockRoutes) prepare(peers map[carrier.Mode][]netip.Addr) (usable map[carrier.Mode]bool, skipped []string, errs []error) {
	usable = map[carrier.Mode]bool{carrier.ModeDirect: true}
	for m, c := range b.carriers {
		if m == carrier.ModeDirect || len(peers[m]) == 0 {
			continue
		}
		if ok, why := c.Available(); !ok {
			skipped = append(skipped, why)
			continue
		}
		if err := c.Prepare(uniqueAddrs(peers[m])); err != nil {
			errs = append(errs, fmt.Errorf("prepare %s: %w", m, err))
			continue
		}
		usable[m] = true
	}
	return usable, skipped, errs
}

// render turns the wanted routes into kernel routes through their carriers.
func (b *BlockRoutes) render(want []carrier.BlockRoute, usable map[carrier.Mode]bool) (routes []*netlink.Route, skipped []string, errs []error) {
	for _, r := range want {
		if r.Blackhole {
			routes = append(routes, &netlink.Route{Dst: prefixToIPNet(r.Dst), Type: unix.RTN_BLACKHOLE})
			continue
		}
		if !usable[r.Mode] {
			skipped = append(skipped, r.String())
			continue
		}
		c, ok := b.carriers[r.Mode]
		if !ok {
			skipped = append(skipped, r.String()+": no carrier")
			continue
		}
		nr, err := c.Route(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if nr.LinkIndex == 0 {
			// Resolve the device now so the key matches what the kernel
			// reports; a next hop behind a router cannot carry a plain route.
			rs, err := netlink.RouteGet(r.Via.AsSlice())
			if err != nil || len(rs) == 0 || rs[0].Gw != nil {
				skipped = append(skipped, fmt.Sprintf("%s: host %s is not on a directly connected subnet; set the pool's vxlanMode to CrossSubnet or Always", r, r.Via))
				continue
			}
			nr.LinkIndex = rs[0].LinkIndex
		}
		routes = append(routes, nr)
	}
	return routes, skipped, errs
}

// BlockRoutesInKernel lists the inter-host routes currently installed, for
// status output and tests.
func BlockRoutesInKernel() ([]string, error) {
	rs, err := blockRouteOwner().List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		s := r.Dst.String()
		switch {
		case r.Type == unix.RTN_BLACKHOLE:
			s = "blackhole " + s
		case r.Gw != nil:
			dev := ""
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				dev = " dev " + l.Attrs().Name
			}
			s += " via " + net.IP(r.Gw).String() + dev
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

func uniqueAddrs(in []netip.Addr) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, a := range in {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}
