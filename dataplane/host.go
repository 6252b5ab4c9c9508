package dataplane

import (
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HostPrefixes lists what the host's own networks occupy: the prefixes of
// its addresses and the destinations of its routes in every table, except
// default routes and our own (protocols 77, 78 and 79), so that default pools
// can avoid them.
func HostPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlinksafe.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if r.Dst == nil || r.Protocol == RouteProtocol || r.Protocol == BlockRouteProtocol || r.Protocol == BGPRouteProtocol || isDefault(r.Dst) {
				continue
			}
			if p, ok := netip.AddrFromSlice(r.Dst.IP); ok {
				ones, _ := r.Dst.Mask.Size()
				out = append(out, netip.PrefixFrom(p.Unmap(), ones).Masked())
			}
		}
		addrs, err := netlinksafe.AddrList(nil, fam)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if p, ok := netip.AddrFromSlice(a.IP); ok && a.IPNet != nil {
				ones, _ := a.Mask.Size()
				out = append(out, netip.PrefixFrom(p.Unmap(), ones).Masked())
			}
		}
	}
	return out, nil
}

// DefaultMTU is the MTU of the interface holding the default route, or 1500.
func DefaultMTU() int {
	rs, err := netlinksafe.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 1500
	}
	for _, r := range rs {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
				return l.Attrs().MTU
			}
		}
	}
	return 1500
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// GatewayRoutable reports whether the host has a route to 169.254.1.1.
// Proxy ARP answers for the containers' gateway only when it does (normally
// through the default route); without one containers cannot send anything.
func GatewayRoutable() bool {
	rs, err := netlink.RouteGet(net.ParseIP(GatewayIPv4))
	return err == nil && len(rs) > 0 && rs[0].Type != unix.RTN_UNREACHABLE
}
