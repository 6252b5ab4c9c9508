// Package ipip is the IP-in-IP carrier: packets to another host's block are
// wrapped in an outer IPv4 header (20 bytes) and sent through the kernel's
// tunl0, the ipip fallback device, which has no fixed remote: each route
// names the remote host as its "onlink" next hop and the kernel uses that
// as the outer destination. tunl0 also receives every host's IPIP packets;
// the host protection table admits them from registered nodes only.
//
// Where the kernel has no ipip (as on this project's CI machine) Available
// says so; routing then carries IPIP pools by VXLAN (routing/fallback.go).
package ipip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
)

const (
	// Device is the kernel's ipip fallback device (it exists in every
	// network namespace once the ipip module is loaded).
	Device = "tunl0"
	// Overhead is the outer IPv4 header.
	Overhead = 20
	// Alias marks tunl0 as ours while IPIP routes use it, so Remove only
	// takes down a device we brought up.
	Alias = "calico-libnetwork-ipip"
)

// Carrier is the IPIP carrier of a host at LocalIP.
type Carrier struct {
	LocalIP netip.Addr
	MTU     int // of tunl0; 0: the uplink's MTU minus Overhead
}

var _ carrier.Carrier = (*Carrier)(nil)

// New returns a carrier for a host at localIP whose tunl0 gets mtu (0: the
// uplink's MTU minus Overhead).
func New(localIP netip.Addr, mtu int) *Carrier {
	return &Carrier{LocalIP: localIP, MTU: mtu}
}

func (c *Carrier) Mode() carrier.Mode { return carrier.ModeIPIP }
func (c *Carrier) Overhead() int      { return Overhead }

// Available reports whether this kernel has ipip.
func (c *Carrier) Available() (bool, string) {
	if c.LocalIP.IsValid() && !c.LocalIP.Is4() {
		return false, "IPIP needs this node's IPv4 address (set --ip)"
	}
	if _, err := netlinksafe.LinkByName(Device); err == nil || carrier.KernelHasLinkKind("ipip") {
		return true, ""
	}
	return false, "the kernel has no ipip support (module ipip missing): IPIP pools are carried by VXLAN to and from this node"
}

// Prepare brings tunl0 up with the MTU the routes need. Peers need no
// entries: every route names its remote host.
func (c *Carrier) Prepare(peers []netip.Addr) error {
	l, err := c.ensureDevice()
	if err != nil {
		return err
	}
	mtu, err := c.mtu()
	if err != nil {
		return err
	}
	if l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set %s MTU %d: %w", Device, mtu, err)
		}
	}
	if l.Attrs().Alias != Alias {
		if err := netlink.LinkSetAlias(l, Alias); err != nil {
			return fmt.Errorf("mark %s: %w", Device, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("bring up %s: %w", Device, err)
		}
	}
	return nil
}

// ensureDevice returns tunl0, making it where the namespace has no
// fallback device (net.core.fb_tunnels_only_for_init_net): an ipip device
// with no local or remote address is the fallback device's twin.
func (c *Carrier) ensureDevice() (netlink.Link, error) {
	if l, err := netlinksafe.LinkByName(Device); err == nil {
		return l, nil
	}
	la := netlink.NewLinkAttrs()
	la.Name = Device
	// Path MTU discovery on, as on the kernel's own tunl0.
	if err := netlink.LinkAdd(&netlink.Iptun{LinkAttrs: la, PMtuDisc: 1}); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create %s: %w", Device, err)
	}
	l, err := netlinksafe.LinkByName(Device)
	if err != nil {
		return nil, fmt.Errorf("%s missing after creating it: %w", Device, err)
	}
	return l, nil
}

func (c *Carrier) mtu() (int, error) {
	if c.MTU > 0 {
		return c.MTU, nil
	}
	_, parentMTU, err := nl.LinkHolding(c.LocalIP)
	if err != nil {
		return 0, fmt.Errorf("the interface holding %s (for %s's MTU): %w", c.LocalIP, Device, err)
	}
	return parentMTU - Overhead, nil
}

// Route sends r onlink through tunl0 to the remote host, which the kernel
// makes the outer destination.
func (c *Carrier) Route(r carrier.BlockRoute) (*netlink.Route, error) {
	if !r.Via.Is4() {
		return nil, fmt.Errorf("%s: IPIP carries IPv4 only", r)
	}
	return carrier.OnlinkVia(Device, r)
}

// Remove takes tunl0 down when it carries our mark (the kernel's fallback
// device cannot be deleted; one we did not bring up is left as it is). Its
// routes go with it.
func (c *Carrier) Remove() error {
	l, err := netlinksafe.LinkByName(Device)
	if err != nil || l.Attrs().Alias != Alias {
		return nil
	}
	if err := netlink.LinkSetDown(l); err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("take down %s: %w", Device, err)
	}
	if err := netlink.LinkSetAlias(l, ""); err != nil && !nl.IsNotFound(err) {
		return fmt.Errorf("unmark %s: %w", Device, err)
	}
	return nil
}
