package dataplane

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPv6 forwarding without losing router advertisements.
//
// net.ipv6.conf.all.forwarding=1 turns the host into an IPv6 router on
// every interface: it then ignores router advertisements (unless accept_ra
// is 2) and, at that moment, drops every RA-learned default route. So the
// daemon turns forwarding on per interface instead, with force_forwarding
// (Linux 6.17 and later): on each cali interface and on the uplinks (an
// interface with a global IPv6 address or an IPv6 default route), while
// all.forwarding and the interfaces' own forwarding (router mode) stay as
// they were, so RAs are still heard. On older kernels, where only the
// global switch forwards, it first sets accept_ra=2 on every interface that
// learns from RAs (accept_ra=1, not a router), which keeps their
// RA-learned routes and keeps accepting RAs, then turns all.forwarding on.

const procIPv6Conf = "/proc/sys/net/ipv6/conf/"

// forceForwardingSupported reports whether this kernel forwards IPv6 per
// interface.
func forceForwardingSupported() bool {
	_, err := os.Stat(procIPv6Conf + "all/force_forwarding")
	return err == nil
}

func readConf(iface, key string) string {
	b, err := os.ReadFile(procIPv6Conf + iface + "/" + key)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func writeConf(iface, key, val string) error {
	if err := os.WriteFile(procIPv6Conf+iface+"/"+key, []byte(val), 0o644); err != nil {
		return fmt.Errorf("set sysctl net.ipv6.conf.%s.%s=%s: %w", iface, key, val, err)
	}
	return nil
}

// ipv6State remembers that IPv6 forwarding was asked for, so that the
// periodic EnsureForwarding extends it to uplinks that appear later.
type ipv6State struct {
	on atomic.Bool
	// perInterface is false on kernels without force_forwarding (or when a
	// test says so): then the global switch is used.
	perInterface func() bool
}

// enableIPv6Forwarding turns IPv6 forwarding on for the endpoints, keeping
// the host's RA-learned routes (see above).
func (d *Dataplane) enableIPv6Forwarding() error {
	d.v6.on.Store(true)
	return d.refreshIPv6Forwarding()
}

func (d *Dataplane) perInterfaceIPv6() bool {
	if d.v6.perInterface != nil {
		return d.v6.perInterface()
	}
	return forceForwardingSupported()
}

// refreshIPv6Forwarding applies the IPv6 forwarding settings to the
// interfaces present now; it does nothing until an IPv6 endpoint asked.
func (d *Dataplane) refreshIPv6Forwarding() error {
	if !d.v6.on.Load() || !ipv6Available() {
		return nil
	}
	if readConf("all", "forwarding") == "1" {
		return nil // the host already routes IPv6 everywhere: nothing to add
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	if d.perInterfaceIPv6() {
		uplinks, err := ipv6Uplinks(links)
		if err != nil {
			return err
		}
		for _, l := range links {
			name := l.Attrs().Name
			if (uplinks[l.Attrs().Index] || strings.HasPrefix(name, "cali")) && readConf(name, "force_forwarding") != "1" {
				if err := writeConf(name, "force_forwarding", "1"); err != nil {
					return err
				}
				d.log.Info("IPv6 forwarding turned on for an interface (all.forwarding stays off, so router advertisements are still accepted)", "interface", name)
			}
		}
		return nil
	}
	// The global switch: keep what RAs taught first.
	for _, l := range links {
		name := l.Attrs().Name
		if name == "lo" || strings.HasPrefix(name, "cali") {
			continue
		}
		if readConf(name, "accept_ra") == "1" && readConf(name, "forwarding") == "0" {
			if err := writeConf(name, "accept_ra", "2"); err != nil {
				return err
			}
			d.log.Info("accept_ra=2 so that the interface keeps its router advertisements once IPv6 forwarding is on", "interface", name)
		}
	}
	if err := writeConf("all", "forwarding", "1"); err != nil {
		return err
	}
	d.log.Info("IPv6 forwarding turned on with net.ipv6.conf.all.forwarding (this kernel has no per-interface force_forwarding)")
	return nil
}

// ipv6Uplinks are the interfaces (by index) through which IPv6 traffic
// reaches and leaves the host: those with a global IPv6 address or an IPv6
// default route, other than lo and cali interfaces.
func ipv6Uplinks(links []netlink.Link) (map[int]bool, error) {
	skip := map[int]bool{}
	for _, l := range links {
		if n := l.Attrs().Name; n == "lo" || strings.HasPrefix(n, "cali") {
			skip[l.Attrs().Index] = true
		}
	}
	out := map[int]bool{}
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("list IPv6 addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() && !skip[a.LinkIndex] {
			out[a.LinkIndex] = true
		}
	}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list IPv6 routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || isDefault(r.Dst)) && !skip[r.LinkIndex] {
			out[r.LinkIndex] = true
		}
		for _, nh := range r.MultiPath {
			if (r.Dst == nil || isDefault(r.Dst)) && !skip[nh.LinkIndex] {
				out[nh.LinkIndex] = true
			}
		}
	}
	return out, nil
}
