package dataplane

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
)

// Autodetect finds this host's address of one family (4 or 6) with its
// prefix length. method is "" (the interface holding the default route),
// "can-reach=ADDR" (the source address used to reach ADDR) or
// "interface=REGEX" (the first matching interface with an address).
func Autodetect(family int, method string) (netip.Prefix, error) {
	fam := netlink.FAMILY_V4
	if family == 6 {
		fam = netlink.FAMILY_V6
	}
	switch {
	case method == "" || method == "first-found" || method == "autodetect":
		rs, err := netlinksafe.RouteList(nil, fam)
		if err != nil {
			return netip.Prefix{}, err
		}
		for _, r := range rs {
			if r.Dst == nil || isDefault(r.Dst) {
				if p, ok := globalAddrOn(r.LinkIndex, fam); ok {
					return p, nil
				}
			}
		}
		return netip.Prefix{}, fmt.Errorf("no IPv%d default route to autodetect this node's address from: set --ip (IP) or IP_AUTODETECTION_METHOD", family)
	case strings.HasPrefix(method, "can-reach="):
		target, err := netip.ParseAddr(strings.TrimPrefix(method, "can-reach="))
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("IP autodetection %q: give can-reach=<an IP address>", method)
		}
		rs, err := netlink.RouteGet(target.AsSlice())
		if err != nil || len(rs) == 0 {
			return netip.Prefix{}, fmt.Errorf("IP autodetection %q: no route to %s", method, target)
		}
		src, _ := netip.AddrFromSlice(rs[0].Src)
		src = src.Unmap()
		if p, ok := prefixOf(rs[0].LinkIndex, fam, src); ok {
			return p, nil
		}
		return netip.PrefixFrom(src, src.BitLen()), nil
	case strings.HasPrefix(method, "interface="):
		re, err := regexp.Compile("^(" + strings.TrimPrefix(method, "interface=") + ")$")
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("IP autodetection %q: bad regular expression: %w", method, err)
		}
		links, err := netlinksafe.LinkList()
		if err != nil {
			return netip.Prefix{}, err
		}
		for _, l := range links {
			if re.MatchString(l.Attrs().Name) {
				if p, ok := globalAddrOn(l.Attrs().Index, fam); ok {
					return p, nil
				}
			}
		}
		return netip.Prefix{}, fmt.Errorf("IP autodetection %q: no matching interface has an IPv%d address", method, family)
	}
	return netip.Prefix{}, fmt.Errorf("unknown IP autodetection method %q: use can-reach=ADDR or interface=REGEX", method)
}

func globalAddrOn(index, fam int) (netip.Prefix, bool) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return netip.Prefix{}, false
	}
	as, err := netlinksafe.AddrList(l, fam)
	if err != nil {
		return netip.Prefix{}, false
	}
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() || ip.IsLoopback() {
			continue
		}
		ones, _ := a.Mask.Size()
		return netip.PrefixFrom(ip.Unmap(), ones), true
	}
	return netip.Prefix{}, false
}

func prefixOf(index, fam int, ip netip.Addr) (netip.Prefix, bool) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return netip.Prefix{}, false
	}
	as, _ := netlinksafe.AddrList(l, fam)
	for _, a := range as {
		if x, ok := netip.AddrFromSlice(a.IP); ok && x.Unmap() == ip {
			ones, _ := a.Mask.Size()
			return netip.PrefixFrom(ip, ones), true
		}
	}
	return netip.Prefix{}, false
}

// PrefixOfAddr returns ip with the prefix length of the interface holding
// it, or a host prefix when no interface does.
func PrefixOfAddr(ip netip.Addr) netip.Prefix {
	fam := netlink.FAMILY_V4
	if ip.Is6() {
		fam = netlink.FAMILY_V6
	}
	if idx, _, err := nl.LinkHolding(ip); err == nil {
		if p, ok := prefixOf(idx, fam, ip); ok {
			return p
		}
	}
	return netip.PrefixFrom(ip, ip.BitLen())
}
