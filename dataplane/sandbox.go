package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/ownedroute"
)

// A container on several calico networks has one cali interface per
// network in one namespace. Docker adds each Join's routes to that same
// namespace, so each interface gets gateways of its own: index 1 keeps
// Calico's 169.254.1.1 and the host veth's EUI-64 link-local address, index
// n > 1 uses 169.254.1.n and fe80::ee:n. Docker then puts the default route
// on whichever endpoint it picks (Docker 28: --gw-priority), and the
// gateway it sets is always reached through that endpoint's interface.

// MaxGatewayIndex is the most calico interfaces one container can have.
const MaxGatewayIndex = 254

// Gateways returns the IPv4 and IPv6 next hops of a container's interface
// number index (1-based).
func Gateways(index int) (v4, v6 netip.Addr) {
	if index <= 1 {
		return netip.MustParseAddr(GatewayIPv4), netip.MustParseAddr(GatewayIPv6)
	}
	v4 = netip.AddrFrom4([4]byte{169, 254, 1, byte(index)})
	v6 = netip.MustParseAddr(fmt.Sprintf("fe80::ee:%x", index))
	return v4, v6
}

// SandboxRoute is a route inside a container's namespace, to Dst through
// the container side of HostIface, via that interface's gateway.
type SandboxRoute struct {
	Dst       netip.Prefix
	HostIface string
	Gateway   netip.Addr
}

func (r SandboxRoute) String() string {
	return fmt.Sprintf("%s via %s (%s)", r.Dst, r.Gateway, r.HostIface)
}

// ErrInterfaceNotInSandbox says that a host veth's peer has not been moved
// into the container's namespace yet (Docker moves it after Join answers).
var ErrInterfaceNotInSandbox = errors.New("container side of the veth is not in the sandbox yet")

// SandboxResult counts what ApplySandboxRoutes changed.
type SandboxResult struct {
	Added, Removed int
}

// ApplySandboxRoutes makes the routes carrying RouteProtocol inside the
// network namespace at nsPath exactly want; nothing else there is touched.
// Routes whose interface is not in the namespace yet are left out and
// reported with ErrInterfaceNotInSandbox, so the caller retries.
func (d *Dataplane) ApplySandboxRoutes(nsPath string, want []SandboxRoute) (SandboxResult, error) {
	var res SandboxResult
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return res, fmt.Errorf("open sandbox %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlinksafe.NewHandleAt(ns)
	if err != nil {
		return res, fmt.Errorf("netlink in sandbox %s: %w", nsPath, err)
	}
	defer h.Close()

	index := map[string]int{} // host veth -> container-side ifindex in the sandbox
	var missing []string
	var desired []*netlink.Route
	for _, r := range want {
		idx, ok := index[r.HostIface]
		if !ok {
			idx, err = sandboxIndex(h, r.HostIface)
			if errors.Is(err, ErrInterfaceNotInSandbox) {
				missing = append(missing, r.HostIface)
			} else if err != nil {
				return res, err
			}
			index[r.HostIface] = idx
		}
		if idx == 0 {
			continue
		}
		desired = append(desired, sandboxRoute(idx, r))
	}
	owner := ownedroute.Reconciler{Protocol: RouteProtocol, Kernel: h}
	have, err := owner.List()
	if err != nil {
		return res, fmt.Errorf("sandbox %s: %w", nsPath, err)
	}
	r, err := owner.Apply(desired, have)
	res.Added, res.Removed = r.Added, r.Removed
	if err != nil {
		return res, fmt.Errorf("sandbox %s: %w", nsPath, err)
	}
	if len(missing) > 0 {
		return res, fmt.Errorf("%s: %w", strings.Join(missing, ", "), ErrInterfaceNotInSandbox)
	}
	return res, nil
}

// sandboxIndex finds the container side of a host veth inside the sandbox
// h is bound to: the veth peer's index, once the peer lives in another
// namespace and is a cali interface there.
func sandboxIndex(h netlinksafe.Handle, hostIface string) (int, error) {
	l, err := netlinksafe.LinkByName(hostIface)
	if err != nil {
		if isNotFound(err) {
			return 0, fmt.Errorf("%s: %w", hostIface, ErrInterfaceNotInSandbox)
		}
		return 0, fmt.Errorf("find %s: %w", hostIface, err)
	}
	veth, ok := l.(*netlink.Veth)
	if !ok {
		return 0, fmt.Errorf("%s is a %s, not a veth", hostIface, l.Type())
	}
	peer, err := netlink.VethPeerIndex(veth)
	if err != nil {
		return 0, fmt.Errorf("peer of %s: %w", hostIface, err)
	}
	if l.Attrs().NetNsID < 0 {
		// The peer is still in this namespace, under its temporary name.
		return 0, fmt.Errorf("%s: %w", hostIface, ErrInterfaceNotInSandbox)
	}
	in, err := h.LinkByIndex(peer)
	if err != nil || !strings.HasPrefix(in.Attrs().Name, "cali") {
		return 0, fmt.Errorf("%s (peer index %d): %w", hostIface, peer, ErrInterfaceNotInSandbox)
	}
	return peer, nil
}

func sandboxRoute(linkIndex int, r SandboxRoute) *netlink.Route {
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       prefixToIPNet(r.Dst),
		Gw:        net.IP(r.Gateway.AsSlice()),
		Protocol:  RouteProtocol,
		Scope:     netlink.SCOPE_UNIVERSE,
	}
}

// AddGatewayAddress gives a host veth the extra IPv6 link-local address a
// container interface with a gateway index above 1 routes through (no
// duplicate address detection: it must answer at once).
func AddGatewayAddress(hostIface string, gw netip.Addr) error {
	l, err := netlinksafe.LinkByName(hostIface)
	if err != nil {
		return fmt.Errorf("find %s: %w", hostIface, err)
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(gw, 64)), Flags: 0x02 /* IFA_F_NODAD */}
	if err := netlink.AddrReplace(l, a); err != nil {
		return fmt.Errorf("add gateway address %s to %s: %w", gw, hostIface, err)
	}
	return nil
}
