// Package vxlan carries packets to other hosts in VXLAN, with Calico's
// device name, VNI and port. Routes point at the remote host's address
// "onlink" through the device; a permanent neighbour entry maps that address
// to the remote VTEP's MAC and a forwarding entry maps the MAC to the remote
// host, so nothing is learnt or flooded.
package vxlan

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
)

// VXLAN settings, as Calico uses them.
const (
	Device = "vxlan.calico"
	VNI    = 4096
	Port   = 4789
	// Overhead is the outer Ethernet, IPv4, UDP and VXLAN headers.
	Overhead = 50
	// Alias marks the device; it is not an endpoint alias, so the endpoint
	// reconciler leaves it alone.
	Alias = "calico-libnetwork-vxlan"
)

// VTEPMAC derives a host's VXLAN device MAC from its address, so every host
// can compute every other host's without storing it (locally administered,
// unicast).
func VTEPMAC(hostIP netip.Addr) net.HardwareAddr {
	b := hostIP.As4()
	return net.HardwareAddr{0x66, 0xee, b[0], b[1], b[2], b[3]}
}

// Carrier is the VXLAN carrier of a host at LocalIP.
type Carrier struct {
	LocalIP netip.Addr
	MTU     int // of the device; 0: parent's MTU minus the overhead
	log     *slog.Logger
}

var _ carrier.Carrier = (*Carrier)(nil)

// New returns a carrier for a host at localIP whose device gets mtu (0: the
// uplink's MTU minus Overhead).
func New(localIP netip.Addr, mtu int, log *slog.Logger) *Carrier {
	if log == nil {
		log = slog.Default()
	}
	return &Carrier{LocalIP: localIP, MTU: mtu, log: log}
}

func (v *Carrier) Mode() carrier.Mode { return carrier.ModeVXLAN }
func (v *Carrier) Overhead() int      { return Overhead }

func (v *Carrier) Available() (bool, string) {
	if !v.LocalIP.Is4() {
		return false, "VXLAN needs this node's IPv4 address (set --ip)"
	}
	if _, err := netlinksafe.LinkByName(Device); err == nil || carrier.KernelHasLinkKind("vxlan") {
		return true, ""
	}
	return false, "the kernel has no vxlan support (module vxlan missing)"
}

// matches reports whether an existing device already has our settings.
func (v *Carrier) matches(l netlink.Link, parent int, mac net.HardwareAddr) bool {
	local, ok := WireFormat(l)
	if !ok {
		return false
	}
	vx := l.(*netlink.Vxlan) // WireFormat checked it is one
	return local == v.LocalIP && vx.HardwareAddr.String() == mac.String() && vx.VtepDevIndex == parent && !vx.Learning
}

// WireFormat reports whether l is a VXLAN device sending and accepting
// this carrier's packets (its VNI and port, a zero outer UDP checksum, an
// IPv4 local address), and that address: what the eBPF path needs to
// encapsulate and take apart VXLAN in its place.
func WireFormat(l netlink.Link) (local netip.Addr, ok bool) {
	vx, isVX := l.(*netlink.Vxlan)
	if !isVX || vx.VxlanId != VNI || vx.Port != Port || vx.UDPCSum {
		return netip.Addr{}, false
	}
	local, ok = netip.AddrFromSlice(vx.SrcAddr.To4())
	return local, ok
}

func (v *Carrier) ensureDevice() (netlink.Link, error) {
	parent, parentMTU, err := nl.LinkHolding(v.LocalIP)
	if err != nil {
		return nil, err
	}
	mtu := v.MTU
	if mtu == 0 {
		mtu = parentMTU - Overhead
	}
	mac := VTEPMAC(v.LocalIP)
	if l, err := netlinksafe.LinkByName(Device); err == nil {
		if v.matches(l, parent, mac) {
			return l, fixUp(l, mtu)
		}
		v.log.Info("recreating VXLAN device with new settings", "device", Device)
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("remove outdated %s: %w", Device, err)
		}
	}
	return v.create(parent, mtu, mac)
}

// fixUp brings a device with the right identity to the wanted MTU and up.
func fixUp(l netlink.Link, mtu int) error {
	if l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set %s MTU: %w", Device, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

func (v *Carrier) create(parent, mtu int, mac net.HardwareAddr) (netlink.Link, error) {
	if err := addDevice(Device, mtu, mac, parent, net.IP(v.LocalIP.AsSlice())); err != nil {
		return nil, err
	}
	l, err := netlinksafe.LinkByName(Device)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetAlias(l, Alias); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		_ = netlink.LinkDel(l)
		return nil, fmt.Errorf("bring up %s: %w", Device, err)
	}
	v.log.Info("created VXLAN device", "device", Device, "local", v.LocalIP, "mtu", mtu)
	return l, nil
}

// Prepare creates the device and makes its neighbour and forwarding entries
// exactly the peers'.
func (v *Carrier) Prepare(peers []netip.Addr) error {
	l, err := v.ensureDevice()
	if err != nil {
		return err
	}
	if err := v.ensureTxChecksum(); err != nil {
		return err
	}
	idx := l.Attrs().Index
	want := map[netip.Addr]bool{}
	for _, p := range peers {
		if p.Is4() && p != v.LocalIP {
			want[p] = true
		}
	}
	have := map[int]map[netip.Addr]netlink.Neigh{}
	for _, fam := range []int{unix.AF_INET, unix.AF_BRIDGE} {
		have[fam] = map[netip.Addr]netlink.Neigh{}
		ns, err := netlink.NeighList(idx, fam)
		if err != nil {
			continue
		}
		for _, n := range ns {
			a, ok := netip.AddrFromSlice(n.IP)
			if !ok || n.IP == nil {
				continue
			}
			if !want[a.Unmap()] { // a host that left
				_ = netlink.NeighDel(&n)
				continue
			}
			have[fam][a.Unmap()] = n
		}
	}
	// Only what is missing or wrong is written: a pass over a settled
	// kernel writes nothing.
	for p := range want {
		mac := VTEPMAC(p)
		if !neighIs(have[unix.AF_INET], p, mac) {
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: p.AsSlice(), HardwareAddr: mac}); err != nil {
				return fmt.Errorf("neighbour %s on %s: %w", p, Device, err)
			}
		}
		if !neighIs(have[unix.AF_BRIDGE], p, mac) {
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, IP: p.AsSlice(), HardwareAddr: mac}); err != nil {
				return fmt.Errorf("forwarding entry %s on %s: %w", p, Device, err)
			}
		}
	}
	return nil
}

// neighIs says whether have holds a permanent entry for p with mac.
func neighIs(have map[netip.Addr]netlink.Neigh, p netip.Addr, mac net.HardwareAddr) bool {
	n, ok := have[p]
	return ok && n.State&netlink.NUD_PERMANENT != 0 && n.HardwareAddr.String() == mac.String()
}

// Route sends r onlink through the device to the remote VTEP's address.
func (v *Carrier) Route(r carrier.BlockRoute) (*netlink.Route, error) {
	return carrier.OnlinkVia(Device, r)
}

// Remove deletes the device (and with it its routes and entries).
func (v *Carrier) Remove() error {
	l, err := netlinksafe.LinkByName(Device)
	if err != nil {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("remove %s: %w", Device, err)
	}
	return nil
}
