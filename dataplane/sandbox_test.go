package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func TestGateways(t *testing.T) {
	tests := []struct {
		index  int
		v4, v6 string
	}{
		{1, "169.254.1.1", "fe80::ecee:eeff:feee:eeee"},
		{2, "169.254.1.2", "fe80::ee:2"},
		{17, "169.254.1.17", "fe80::ee:11"},
		{254, "169.254.1.254", "fe80::ee:fe"},
	}
	for _, tc := range tests {
		v4, v6 := Gateways(tc.index)
		if v4.String() != tc.v4 || v6.String() != tc.v6 {
			t.Errorf("Gateways(%d) = %s, %s; want %s, %s", tc.index, v4, v6, tc.v4, tc.v6)
		}
	}
}

// TestApplySandboxRoutes: routes go into the container's namespace through
// the container side of the named host veth, only once it is there; a
// second apply removes what is no longer wanted and leaves routes of any
// other protocol alone.
func TestApplySandboxRoutes(t *testing.T) {
	host, sb := testns.New(t), testns.New(t)
	dp := New(nil, "sbx")
	gw, _ := Gateways(2)
	want := []SandboxRoute{
		{Dst: netip.MustParsePrefix("10.77.0.5/32"), HostIface: "calisbx00001", Gateway: gw},
		{Dst: netip.MustParsePrefix("10.77.0.9/32"), HostIface: "calisbx00001", Gateway: gw},
	}
	var err error
	testns.Do(t, host, func() {
		la := netlink.NewLinkAttrs()
		la.Name = "calisbx00001"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "tmpsbx00001"}); err != nil {
			t.Fatal(err)
		}
		_, err = dp.ApplySandboxRoutes(sb.Path(), want)
	})
	if !errors.Is(err, ErrInterfaceNotInSandbox) {
		t.Fatalf("apply before the peer moved: %v, want ErrInterfaceNotInSandbox", err)
	}
	testns.Do(t, host, func() {
		p, _ := netlink.LinkByName("tmpsbx00001")
		if err := netlink.LinkSetNsFd(p, int(sb.Fd())); err != nil {
			t.Fatal(err)
		}
		l, _ := netlink.LinkByName("calisbx00001")
		_ = netlink.LinkSetUp(l)
	})
	testns.Do(t, sb, func() {
		l, _ := netlink.LinkByName("tmpsbx00001")
		_ = netlink.LinkSetName(l, "cali1")
		_ = netlink.LinkSetUp(l)
		a, _ := netlink.ParseAddr("10.77.0.2/32")
		_ = netlink.AddrAdd(l, a)
		// Docker's connected route to the gateway, and an unmarked route to
		// a peer that ours replaces.
		_ = netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IP(gw.AsSlice()), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
		_ = netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.ParseIP("10.77.0.9"), Mask: net.CIDRMask(32, 32)}, Gw: net.IP(gw.AsSlice())})
	})
	var res SandboxResult
	testns.Do(t, host, func() { res, err = dp.ApplySandboxRoutes(sb.Path(), want) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Added != 2 || res.Removed != 0 {
		t.Errorf("first apply: %+v, want 2 added", res)
	}
	routes := func() string {
		out, _ := testns.Run(sb, "ip", "-4", "route")
		return out
	}
	for _, r := range []string{"10.77.0.5 via 169.254.1.2 dev cali1 proto 77", "10.77.0.9 via 169.254.1.2 dev cali1 proto 77"} {
		if !strings.Contains(routes(), r) {
			t.Errorf("missing %q in the sandbox:\n%s", r, routes())
		}
	}
	testns.Do(t, host, func() { res, err = dp.ApplySandboxRoutes(sb.Path(), want[:1]) })
	if err != nil || res.Removed != 1 || res.Added != 0 {
		t.Errorf("second apply: %+v, %v; want 1 removed", res, err)
	}
	if got := routes(); strings.Contains(got, "10.77.0.9 via 169.254.1.2 dev cali1 proto 77") || !strings.Contains(got, "169.254.1.2 dev cali1 scope link") {
		t.Errorf("after the second apply:\n%s", got)
	}
	testns.Do(t, host, func() { res, err = dp.ApplySandboxRoutes(sb.Path(), nil) })
	if err != nil || res.Removed != 1 {
		t.Errorf("empty apply: %+v, %v", res, err)
	}
	if got := routes(); strings.Contains(got, "proto 77") {
		t.Errorf("routes of ours left:\n%s", got)
	}
}
