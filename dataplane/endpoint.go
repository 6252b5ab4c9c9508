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
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	vnl "github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

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
	// Trace, when set, is told how long each step of SetupEndpoint took.
	Trace func(step string, took time.Duration)
}

// Dataplane programs the kernel of the current network namespace.
type Dataplane struct {
	log   *slog.Logger
	owner string
	v6    ipv6State // forward6.go
	// redirect, when set, is the eBPF redirect path (redirect.go).
	redirect Redirector
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
//
// It makes as few netlink requests as the kernel allows: the create
// carries the MAC and both sides' MTU (the netlink package then reads the
// new index), one request marks the host side and brings it up, one per
// route; all but that one share a socket.
func (d *Dataplane) SetupEndpoint(ep Endpoint) (err error) {
	trace := ep.tracer()
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = ep.HostIface
	la.MTU = ep.MTU // the peer gets it too
	la.HardwareAddr = HostMAC
	veth := &netlink.Veth{LinkAttrs: la, PeerName: ep.TempIface}
	if err := d.addVeth(h, veth); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = h.LinkDel(veth)
		}
	}()
	trace("veth-create")
	if veth.Index == 0 {
		return fmt.Errorf("find new veth %s: no index", ep.HostIface)
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
	trace("sysctls")
	if err := markAndUp(veth.Index, d.alias(ep.ID)); err != nil {
		return fmt.Errorf("mark and bring up veth %s: %w", ep.HostIface, err)
	}
	trace("alias-up")
	for _, a := range ep.Addrs {
		if err := h.RouteReplace(hostRoute(veth.Index, a)); err != nil {
			return fmt.Errorf("add route to %s via %s: %w", a, ep.HostIface, err)
		}
	}
	trace("routes")
	d.attachRedirect(ep, veth.Index)
	trace("bpf-attach")
	return nil
}

// addVeth creates the pair; when a link of either name is left from a
// crash, it is removed and the pair created again.
func (d *Dataplane) addVeth(h netlinksafe.Handle, veth *netlink.Veth) error {
	err := h.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) {
		for _, name := range []string{veth.Name, veth.PeerName} {
			if l, lerr := h.LinkByName(name); lerr == nil {
				d.log.Warn("replacing stale link", "link", name)
				if derr := h.LinkDel(l); derr != nil && !isNotFound(derr) {
					return fmt.Errorf("remove stale link %s: %w", name, derr)
				}
			}
		}
		veth.Index = 0
		err = h.LinkAdd(veth)
	}
	if err != nil {
		return fmt.Errorf("create veth %s/%s: %w", veth.Name, veth.PeerName, err)
	}
	return nil
}

// markAndUp sets the link's alias and brings it up in one request (the
// netlink package would take one for each).
func markAndUp(index int, alias string) error {
	req := vnl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := vnl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(msg)
	req.AddData(vnl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// tracer returns the endpoint's Trace as a function of the step alone,
// timing each step from the previous one.
func (ep Endpoint) tracer() func(step string) {
	if ep.Trace == nil {
		return func(string) {}
	}
	last := time.Now()
	return func(step string) {
		now := time.Now()
		ep.Trace(step, now.Sub(last))
		last = now
	}
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

// TeardownEndpoint removes the veth, by name in one request; its routes
// (addrs) go with it. Missing pieces are not an error: Docker retries
// Leave.
func (d *Dataplane) TeardownEndpoint(hostIface string, addrs []netip.Prefix) error {
	d.detachRedirect(hostIface)
	req := vnl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(vnl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(vnl.NewRtAttr(unix.IFLA_IFNAME, vnl.ZeroTerminated(hostIface)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !isNotFound(err) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove veth %s: %w", hostIface, err)
	}
	return nil
}

// DownEndpoint sets the veth down, by name in one request: the kernel then
// drops its routes (IPv4 and IPv6) at once, so nothing is routed to a
// container that left while the veth waits to be deleted. A missing veth
// is not an error.
func (d *Dataplane) DownEndpoint(hostIface string) error {
	d.detachRedirect(hostIface)
	req := vnl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := vnl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags, msg.Change = 0, unix.IFF_UP
	req.AddData(msg)
	req.AddData(vnl.NewRtAttr(unix.IFLA_IFNAME, vnl.ZeroTerminated(hostIface)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !isNotFound(err) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("set veth %s down: %w", hostIface, err)
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
