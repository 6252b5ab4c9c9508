package dataplane

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VXLAN settings, as Calico uses them.
const (
	VXLANDevice   = "vxlan.calico"
	VXLANVNI      = 4096
	VXLANPort     = 4789
	VXLANOverhead = 50
	// VXLANAlias marks the device; it is not an endpoint alias, so the
	// endpoint reconciler leaves it alone.
	VXLANAlias = "calico-libnetwork-vxlan"
)

// VTEPMAC derives a host's VXLAN device MAC from its address, so every host
// can compute every other host's without storing it (locally administered,
// unicast).
func VTEPMAC(hostIP netip.Addr) net.HardwareAddr {
	b := hostIP.As4()
	return net.HardwareAddr{0x66, 0xee, b[0], b[1], b[2], b[3]}
}

// VXLANCarrier encapsulates packets to other hosts in VXLAN. Routes point at
// the remote host's address "onlink" through the device; a permanent
// neighbour entry maps that address to the remote VTEP's MAC and a forwarding
// entry maps the MAC to the remote host, so nothing is learnt or flooded.
type VXLANCarrier struct {
	LocalIP netip.Addr
	MTU     int // of the device; 0: parent's MTU minus the overhead
	log     func(msg string, args ...any)
}

// NewVXLANCarrier returns a carrier for a host at localIP.
func (d *Dataplane) NewVXLANCarrier(localIP netip.Addr, mtu int) *VXLANCarrier {
	return &VXLANCarrier{LocalIP: localIP, MTU: mtu, log: d.log.Info}
}

func (v *VXLANCarrier) Mode() RouteMode { return ModeVXLAN }

func (v *VXLANCarrier) Available() (bool, string) {
	if !v.LocalIP.Is4() {
		return false, "VXLAN needs this node's IPv4 address (set --ip)"
	}
	if _, err := netlinksafe.LinkByName(VXLANDevice); err == nil || kernelHasLinkKind("vxlan") {
		return true, ""
	}
	return false, "the kernel has no vxlan support (module vxlan missing)"
}

func (v *VXLANCarrier) ensureDevice() (netlink.Link, error) {
	parent, parentMTU, err := linkHolding(v.LocalIP)
	if err != nil {
		return nil, err
	}
	mtu := v.MTU
	if mtu == 0 {
		mtu = parentMTU - VXLANOverhead
	}
	mac := VTEPMAC(v.LocalIP)
	if l, err := netlinksafe.LinkByName(VXLANDevice); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if ok && vx.VxlanId == VXLANVNI && vx.SrcAddr.Equal(v.LocalIP.AsSlice()) && vx.HardwareAddr.String() == mac.String() && vx.VtepDevIndex == parent {
			if vx.MTU != mtu {
				if err := netlink.LinkSetMTU(l, mtu); err != nil {
					return nil, fmt.Errorf("set %s MTU: %w", VXLANDevice, err)
				}
			}
			if vx.Flags&net.FlagUp == 0 {
				if err := netlink.LinkSetUp(l); err != nil {
					return nil, err
				}
			}
			return l, nil
		}
		v.log("recreating VXLAN device with new settings", "device", VXLANDevice)
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("remove outdated %s: %w", VXLANDevice, err)
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = VXLANDevice
	la.MTU = mtu
	la.HardwareAddr = mac
	la.Alias = VXLANAlias
	vx := &netlink.Vxlan{LinkAttrs: la, VxlanId: VXLANVNI, VtepDevIndex: parent, SrcAddr: v.LocalIP.AsSlice(), Port: VXLANPort, Learning: false}
	if err := netlink.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create %s: %w", VXLANDevice, err)
	}
	l, err := netlinksafe.LinkByName(VXLANDevice)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetAlias(l, VXLANAlias); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		_ = netlink.LinkDel(l)
		return nil, fmt.Errorf("bring up %s: %w", VXLANDevice, err)
	}
	v.log("created VXLAN device", "device", VXLANDevice, "local", v.LocalIP, "mtu", mtu)
	return l, nil
}

// Prepare creates the device and makes its neighbour and forwarding entries
// exactly the peers'.
func (v *VXLANCarrier) Prepare(peers []netip.Addr) error {
	l, err := v.ensureDevice()
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	want := map[string]netip.Addr{}
	for _, p := range peers {
		if p.Is4() && p != v.LocalIP {
			want[p.String()] = p
		}
	}
	for _, p := range want {
		mac := VTEPMAC(p)
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: p.AsSlice(), HardwareAddr: mac}); err != nil {
			return fmt.Errorf("neighbour %s on %s: %w", p, VXLANDevice, err)
		}
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: p.AsSlice(), HardwareAddr: mac}); err != nil {
			return fmt.Errorf("forwarding entry %s on %s: %w", p, VXLANDevice, err)
		}
	}
	// Remove entries of hosts that left.
	if ns, err := netlink.NeighList(idx, unix.AF_INET); err == nil {
		for _, n := range ns {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				if _, keep := want[a.Unmap().String()]; !keep {
					_ = netlink.NeighDel(&n)
				}
			}
		}
	}
	if fdb, err := netlink.NeighList(idx, unix.AF_BRIDGE); err == nil {
		for _, n := range fdb {
			if a, ok := netip.AddrFromSlice(n.IP); ok && n.IP != nil {
				if _, keep := want[a.Unmap().String()]; !keep {
					_ = netlink.NeighDel(&n)
				}
			}
		}
	}
	return nil
}

func (v *VXLANCarrier) Route(r BlockRoute) (*netlink.Route, error) {
	l, err := netlinksafe.LinkByName(VXLANDevice)
	if err != nil {
		return nil, fmt.Errorf("%s missing: %w", VXLANDevice, err)
	}
	return &netlink.Route{
		Dst: prefixToIPNet(r.Dst), Gw: r.Via.AsSlice(), LinkIndex: l.Attrs().Index,
		Flags: int(netlink.FLAG_ONLINK), Protocol: BlockRouteProtocol,
	}, nil
}

// Remove deletes the device (and with it its routes and entries).
func (v *VXLANCarrier) Remove() error {
	l, err := netlinksafe.LinkByName(VXLANDevice)
	if err != nil {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove %s: %w", VXLANDevice, err)
	}
	return nil
}

// linkHolding returns the index and MTU of the interface that has addr.
func linkHolding(addr netip.Addr) (int, int, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range links {
		as, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l.Attrs().Index, l.Attrs().MTU, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no interface holds this node's address %s: check --ip", addr)
}

// LinkMTUHolding is the MTU of the interface holding addr (0 if none).
func LinkMTUHolding(addr netip.Addr) int {
	_, mtu, err := linkHolding(addr)
	if err != nil {
		return 0
	}
	return mtu
}
