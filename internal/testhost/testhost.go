// Package testhost builds, for data plane tests, hosts as network
// namespaces running the real data plane, their uplinks, containers
// attached as Docker and the daemon attach them, and block routes as the
// routing agent makes them.
package testhost

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// Host is one host namespace: its uplink address, its data plane and its
// containers by name.
type Host struct {
	NS   ns.NetNS
	IP   netip.Addr
	DP   *dataplane.Dataplane
	Ctrs map[string]Ctr
	tag  string // in the names of its veths
}

// Ctr is one container: its namespace, its address and its veth's host
// side.
type Ctr struct {
	NS    ns.NetNS
	IP    netip.Addr
	Iface string
}

// New makes a host namespace at ip (its uplink's address) whose data plane
// is owner's, with forwarding on; tag goes into its veths' names.
func New(t *testing.T, ip, owner, tag string) *Host {
	h := &Host{NS: testns.New(t), IP: netip.MustParseAddr(ip), DP: dataplane.New(nil, owner), Ctrs: map[string]Ctr{}, tag: tag}
	testns.Do(t, h.NS, func() {
		if err := h.DP.EnableForwarding(false); err != nil {
			t.Fatal(err)
		}
	})
	return h
}

// Link joins a's devA and b's devB with a veth pair and gives each its
// host's address on a /24, and a default route via .254 (proxy ARP answers
// for the containers' gateway only with a route to it).
func Link(t *testing.T, a, b *Host, devA, devB string) {
	if out, err := exec.Command("ip", "link", "add", devA, "netns", a.NS.Path(), "type", "veth", "peer", "name", devB, "netns", b.NS.Path()).CombinedOutput(); err != nil {
		t.Fatalf("uplink: %v: %s", err, out)
	}
	a.uplink(t, devA)
	b.uplink(t, devB)
}

func (h *Host) uplink(t *testing.T, dev string) {
	gw := h.IP.As4()
	gw[3] = 254
	for _, args := range [][]string{
		{"addr", "add", h.IP.String() + "/24", "dev", dev},
		{"link", "set", dev, "up"},
		{"route", "add", "default", "via", netip.AddrFrom4(gw).String()},
	} {
		if out, err := testns.Run(h.NS, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
}

// Attach makes a container namespace with one endpoint of the given MTU,
// as Docker would (peer moved in, renamed cali0, /32, routes via the
// gateway).
func (h *Host) Attach(t *testing.T, name, ip string, mtu int) Ctr {
	c := Ctr{NS: testns.New(t), IP: netip.MustParseAddr(ip), Iface: "cali" + h.tag + name}
	ep := dataplane.Endpoint{ID: name, HostIface: c.Iface, TempIface: "tmp" + h.tag + name,
		Addrs: []netip.Prefix{netip.PrefixFrom(c.IP, 32)}, MTU: mtu}
	testns.Do(t, h.NS, func() {
		if err := h.DP.SetupEndpoint(ep); err != nil {
			t.Fatal(err)
		}
		l, err := netlinksafe.LinkByName(ep.TempIface)
		if err == nil {
			err = netlink.LinkSetNsFd(l, int(c.NS.Fd()))
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	for _, args := range [][]string{
		{"link", "set", ep.TempIface, "name", "cali0"},
		{"addr", "add", ip + "/32", "dev", "cali0"},
		{"link", "set", "cali0", "up"},
		{"route", "add", dataplane.GatewayIPv4, "dev", "cali0", "scope", "link"},
		{"route", "add", "default", "via", dataplane.GatewayIPv4, "dev", "cali0"},
	} {
		if out, err := testns.Run(c.NS, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	h.Ctrs[name] = c
	return c
}

// Routes routes the peer's first block through VXLAN and its second
// directly, as the routing agent would.
func (h *Host) Routes(t *testing.T, peer netip.Addr, vxlanBlock, directBlock string) {
	want := []carrier.BlockRoute{
		{Dst: netip.MustParsePrefix(vxlanBlock), Via: peer, Mode: carrier.ModeVXLAN},
		{Dst: netip.MustParsePrefix(directBlock), Via: peer, Mode: carrier.ModeDirect},
	}
	testns.Do(t, h.NS, func() {
		br := h.DP.NewBlockRoutes(h.DP.NewVXLANCarrier(h.IP, 0))
		if res, err := br.Apply(want); err != nil || len(res.Skipped) > 0 {
			t.Fatalf("block routes: %+v, %v", res, err)
		}
	})
}
