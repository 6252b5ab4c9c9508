package dataplane

import (
	"fmt"
	"net"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/direct"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/ownedroute"
)

// bgpRouteOwner lists and applies the routes carrying BGPRouteProtocol in
// the main table.
func bgpRouteOwner() ownedroute.Reconciler {
	return ownedroute.Reconciler{Protocol: BGPRouteProtocol, Table: unix.RT_TABLE_MAIN}
}

// ApplyBGPRoutes makes the kernel's routes carrying BGPRouteProtocol equal
// to want: each a plain route via a host on a directly connected subnet,
// at BGPRouteMetric. A next hop the kernel reaches through a router is
// skipped (with why), never installed. nil removes them all.
func ApplyBGPRoutes(want []carrier.BlockRoute) (ApplyResult, error) {
	var res ApplyResult
	var routes []*netlink.Route
	for _, r := range want {
		if r.Blackhole || r.Mode != carrier.ModeDirect {
			res.Skipped = append(res.Skipped, r.String()+": only direct routes are learned over BGP")
			continue
		}
		nr, err := direct.Carrier{}.Route(r)
		if err != nil {
			res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", r, err))
			continue
		}
		rs, err := netlink.RouteGet(r.Via.AsSlice())
		if err != nil || len(rs) == 0 || rs[0].Gw != nil {
			res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %s is not on a directly connected subnet", r, r.Via))
			continue
		}
		nr.LinkIndex, nr.Priority = rs[0].LinkIndex, BGPRouteMetric
		routes = append(routes, nr)
	}
	have, err := bgpRouteOwner().List()
	if err != nil {
		return res, err
	}
	r, err := bgpRouteOwner().Apply(routes, have)
	res.Added, res.Removed = r.Added, r.Removed
	return res, err
}

// BGPRoutesInKernel lists the learned routes installed ("dst via gw dev
// name metric m"), for status output and tests.
func BGPRoutesInKernel() ([]string, error) {
	rs, err := bgpRouteOwner().List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		dev := ""
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = " dev " + l.Attrs().Name
		}
		out = append(out, fmt.Sprintf("%s via %s%s metric %d", r.Dst, net.IP(r.Gw), dev, r.Priority))
	}
	sort.Strings(out)
	return out, nil
}
