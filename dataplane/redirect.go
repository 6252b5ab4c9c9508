package dataplane

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/bpfredirect"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
)

// Redirector is the eBPF redirect path as the data plane drives it
// (package bpfredirect): on each endpoint veth from its creation, off it
// when it goes, and reconciled against the kernel by SyncRedirect.
type Redirector interface {
	AttachEndpoint(name string, ifindex int, v4 netip.Addr) error
	Detach(name string)
	Sync(want []bpfredirect.Interface, listedAt time.Time) error
	SetTunnel(ifindex int, local netip.Addr) error
}

// UseRedirect makes SetupEndpoint, TeardownEndpoint and DownEndpoint keep
// r on the endpoints' veths. Call it before the first endpoint is set up.
func (d *Dataplane) UseRedirect(r Redirector) { d.redirect = r }

// attachRedirect puts the path on a new endpoint veth. A failure costs
// only speed (the kernel's path carries the endpoint): it is logged.
func (d *Dataplane) attachRedirect(ep Endpoint, index int) {
	if d.redirect == nil {
		return
	}
	for _, a := range ep.Addrs {
		if a.Addr().Is4() {
			if err := d.redirect.AttachEndpoint(ep.HostIface, index, a.Addr()); err != nil {
				d.log.Warn("eBPF redirect path not on this endpoint: the kernel's path carries it", "iface", ep.HostIface, "err", err)
			}
			return
		}
	}
}

func (d *Dataplane) detachRedirect(hostIface string) {
	if d.redirect != nil {
		d.redirect.Detach(hostIface)
	}
}

// SyncRedirect puts the path on every endpoint veth of this node (with
// the IPv4 address its host route names), on the interface holding the
// node's address and on vxlan.calico, and takes it off everything else;
// the programs encapsulate VXLAN themselves for vxlan.calico's local
// address (the node's) while the device is there.
// Not on tunl0: the programs parse Ethernet frames, and IPIP's device has
// none (IPIP traffic takes the kernel's path).
func (d *Dataplane) SyncRedirect(nodeIP netip.Addr) error {
	if d.redirect == nil {
		return nil
	}
	listedAt := time.Now()
	links, err := netlinksafe.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	routes, err := netlinksafe.RouteListFiltered(unix.AF_INET, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list endpoint routes: %w", err)
	}
	addrOf := map[int]netip.Addr{}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 32 {
			if ip, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
				addrOf[r.LinkIndex] = ip
			}
		}
	}
	uplink := 0
	if nodeIP.IsValid() {
		uplink, _, _ = nl.LinkHolding(nodeIP)
	}
	var want []bpfredirect.Interface
	tunnel, local := 0, netip.Addr{}
	for _, l := range links {
		a := l.Attrs()
		switch {
		case strings.HasPrefix(a.Alias, AliasPrefix+d.owner+"/"):
			if ip, ok := addrOf[a.Index]; ok {
				want = append(want, bpfredirect.Interface{Name: a.Name, Index: a.Index, Endpoint: true, IPv4: ip})
			}
		case a.Index == uplink || a.Name == vxlan.Device:
			want = append(want, bpfredirect.Interface{Name: a.Name, Index: a.Index})
		}
		if ip, ok := vxlan.WireFormat(l); ok && a.Name == vxlan.Device {
			tunnel, local = a.Index, ip
		}
	}
	if err := d.redirect.SetTunnel(tunnel, local); err != nil {
		return err
	}
	return d.redirect.Sync(want, listedAt)
}
