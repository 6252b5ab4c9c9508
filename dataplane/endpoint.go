// Package dataplane owns every kernel object the plugin makes: veths, their
// sysctls and the routes to endpoints. It knows nothing of Docker or etcd.
package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/ownedroute"
)

// RouteProtocol marks every route this plugin adds, so reconciliation finds
// exactly its own routes and never touches anyone else's.
const RouteProtocol netlink.RouteProtocol = 77

// AliasPrefix marks every link this plugin creates (IFLA_IFALIAS), for the
// same reason. The full alias is AliasPrefix + owner + "/" + endpoint ID, so
// a daemon only ever reconciles the links of its own node.
const AliasPrefix = "calico-libnetwork:"

// HostMAC is the MAC of every host-side veth, as in Calico.
var HostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}

// GatewayIPv4 is the next hop containers use; proxy ARP on the host side
// answers for it.
const GatewayIPv4 = "169.254.1.1"

// GatewayIPv6 is the host-side veth's link-local address (EUI-64 of HostMAC);
// it is what containers use as their IPv6 next hop.
const GatewayIPv6 = "fe80::ecee:eeff:feee:eeee"

// Endpoint describes one container attachment on the host side.
type Endpoint struct {
	ID        string         // endpoint ID, stored in the link alias
	HostIface string         // e.g. cali0123456789a
	TempIface string         // peer name before Docker moves and renames it
	Addrs     []netip.Prefix // /32 and /128 addresses of the container
	MTU       int
}

// Dataplane programs the kernel of the current network namespace.
type Dataplane struct {
	log   *slog.Logger
	owner string
	v6    ipv6State // forward6.go
}

// New returns a Dataplane whose links are marked as owned by owner (the node
// name).
func New(log *slog.Logger, owner string) *Dataplane {
	if log == nil {
		log = slog.Default()
	}
	return &Dataplane{log: log, owner: owner}
}

func (d *Dataplane) alias(id string) string { return AliasPrefix + d.owner + "/" + id }

// EnableForwarding turns on IPv4 forwarding, and IPv6 forwarding (per
// interface where the kernel can, see forward6.go) when asked.
func (d *Dataplane) EnableForwarding(v6 bool) error {
	if err := setSysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if v6 && ipv6Available() {
		return d.enableIPv6Forwarding() // per interface: see forward6.go
	}
	return nil
}

func ipv6Available() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

func setSysctl(name, value string) error {
	if _, err := sysctl.Sysctl(name, value); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// SetupEndpoint creates the veth pair, configures the host side and adds a
// host route per address. A stale link of the same name (left by a crash) is
// replaced. On failure nothing it made is left behind.
func (d *Dataplane) SetupEndpoint(ep Endpoint) (err error) {
	for _, name := range []string{ep.HostIface, ep.TempIface} {
		if l, lerr := netlinksafe.LinkByName(name); lerr == nil {
			d.log.Warn("replacing stale link", "link", name)
			if derr := netlink.LinkDel(l); derr != nil && !isNotFound(derr) {
				return fmt.Errorf("remove stale link %s: %w", name, derr)
			}
		}
	}
	la := netlink.NewLinkAttrs()
	la.Name = ep.HostIface
	la.MTU = ep.MTU
	la.HardwareAddr = HostMAC
	veth := &netlink.Veth{LinkAttrs: la, PeerName: ep.TempIface}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s/%s: %w", ep.HostIface, ep.TempIface, err)
	}
	defer func() {
		if err != nil {
			if l, lerr := netlinksafe.LinkByName(ep.HostIface); lerr == nil {
				_ = netlink.LinkDel(l)
			}
		}
	}()
	host, err := netlinksafe.LinkByName(ep.HostIface)
	if err != nil {
		return fmt.Errorf("find new veth %s: %w", ep.HostIface, err)
	}
	if err := netlink.LinkSetAlias(host, d.alias(ep.ID)); err != nil {
		return fmt.Errorf("mark veth %s: %w", ep.HostIface, err)
	}
	if peer, perr := netlinksafe.LinkByName(ep.TempIface); perr == nil && ep.MTU > 0 {
		if err := netlink.LinkSetMTU(peer, ep.MTU); err != nil {
			return fmt.Errorf("set MTU on %s: %w", ep.TempIface, err)
		}
	}
	has6 := false
	for _, a := range ep.Addrs {
		if a.Addr().Is6() {
			has6 = true
		}
	}
	if err := configureHostSide(ep.HostIface, has6); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up %s: %w", ep.HostIface, err)
	}
	for _, a := range ep.Addrs {
		if err := netlink.RouteReplace(hostRoute(host.Attrs().Index, a)); err != nil {
			return fmt.Errorf("add route to %s via %s: %w", a, ep.HostIface, err)
		}
	}
	return nil
}

func configureHostSide(iface string, v6 bool) error {
	settings := [][2]string{
		{"net.ipv4.conf." + iface + ".proxy_arp", "1"},
		// Answer ARP at once rather than after a random delay of up to 0.8 s.
		{"net.ipv4.neigh." + iface + ".proxy_delay", "0"},
		{"net.ipv4.conf." + iface + ".forwarding", "1"},
	}
	if v6 && ipv6Available() {
		settings = append(settings,
			[2]string{"net.ipv6.conf." + iface + ".disable_ipv6", "0"},
			[2]string{"net.ipv6.conf." + iface + ".proxy_ndp", "1"},
			// The link-local gateway address must be usable as soon as the container starts.
			[2]string{"net.ipv6.conf." + iface + ".accept_dad", "0"},
			// A container's router advertisements or redirects never steer the host.
			[2]string{"net.ipv6.conf." + iface + ".accept_ra", "0"},
			[2]string{"net.ipv6.conf." + iface + ".accept_redirects", "0"},
		)
		// Forward what the container sends. Not with the interface's own
		// forwarding (router mode) where the kernel has force_forwarding:
		// turning any interface's forwarding on makes the kernel drop every
		// RA-learned default route of the host (see forward6.go).
		if forceForwardingSupported() {
			settings = append(settings, [2]string{"net.ipv6.conf." + iface + ".force_forwarding", "1"})
		} else {
			settings = append(settings, [2]string{"net.ipv6.conf." + iface + ".forwarding", "1"})
		}
	}
	for _, s := range settings {
		if err := setSysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	return nil
}

func hostRoute(linkIndex int, a netip.Prefix) *netlink.Route {
	bits := 32
	if a.Addr().Is6() {
		bits = 128
	}
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       prefixToIPNet(netip.PrefixFrom(a.Addr(), bits)),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  RouteProtocol,
	}
}

func prefixToIPNet(p netip.Prefix) *net.IPNet { return nl.IPNet(p) }

// TeardownEndpoint removes the host routes and the veth. Missing pieces are
// not an error: Docker retries Leave.
func (d *Dataplane) TeardownEndpoint(hostIface string, addrs []netip.Prefix) error {
	l, err := netlinksafe.LinkByName(hostIface)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostIface, err)
	}
	for _, a := range addrs {
		if err := netlink.RouteDel(hostRoute(l.Attrs().Index, a)); err != nil && !isNotFound(err) && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("remove route to %s: %w", a, err)
		}
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove veth %s: %w", hostIface, err)
	}
	return nil
}

func isNotFound(err error) bool { return nl.IsNotFound(err) }

// LinkExists reports whether a link of that name exists.
func LinkExists(name string) bool {
	_, err := netlinksafe.LinkByName(name)
	return err == nil
}

// OurLinks lists the endpoint links this daemon's node owns: link name ->
// endpoint ID.
func (d *Dataplane) OurLinks() (map[string]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[string]string{}
	for _, l := range links {
		if id, ok := strings.CutPrefix(l.Attrs().Alias, AliasPrefix+d.owner+"/"); ok {
			out[l.Attrs().Name] = id
		}
	}
	return out, nil
}

// OurRoutes lists the routes carrying RouteProtocol.
func OurRoutes() ([]netlink.Route, error) {
	return ownedroute.Reconciler{Protocol: RouteProtocol}.List()
}
