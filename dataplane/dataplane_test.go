package dataplane

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return strings.TrimSpace(string(b))
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func ourRoutesOn(t *testing.T, ifname string) []string {
	t.Helper()
	rs, err := OurRoutes()
	if err != nil {
		t.Fatal(err)
	}
	l, err := netlinksafe.LinkByName(ifname)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range rs {
		if r.LinkIndex == l.Attrs().Index {
			out = append(out, r.Dst.String())
		}
	}
	return out
}

func TestSetupEndpointConfiguresHostSide(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "host-a")
	tests := []struct {
		name   string
		ep     Endpoint
		routes []string
		v6     bool
	}{
		{"ipv4", Endpoint{ID: "ep-v4", HostIface: "calitest00001", TempIface: "tmptest00001", Addrs: mustPrefixes("10.65.0.1/32"), MTU: 1400}, []string{"10.65.0.1/32"}, false},
		{"dual-stack", Endpoint{ID: "ep-ds", HostIface: "calitest00002", TempIface: "tmptest00002", Addrs: mustPrefixes("10.65.0.2/32", "fd00:65::2/128"), MTU: 1450}, []string{"10.65.0.2/32", "fd00:65::2/128"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testns.Do(t, host, func() {
				if err := dp.SetupEndpoint(tc.ep); err != nil {
					t.Fatalf("SetupEndpoint: %v", err)
				}
				l, err := netlinksafe.LinkByName(tc.ep.HostIface)
				if err != nil {
					t.Fatalf("host veth missing: %v", err)
				}
				a := l.Attrs()
				if a.HardwareAddr.String() != "ee:ee:ee:ee:ee:ee" || a.MTU != tc.ep.MTU || a.Flags&1 == 0 || a.Alias != dp.alias(tc.ep.ID) {
					t.Errorf("host veth: mac=%s mtu=%d flags=%v alias=%q", a.HardwareAddr, a.MTU, a.Flags, a.Alias)
				}
				if p, err := netlinksafe.LinkByName(tc.ep.TempIface); err != nil || p.Attrs().MTU != tc.ep.MTU {
					t.Errorf("peer %s: %v", tc.ep.TempIface, err)
				}
				if v := readSysctl(t, "/proc/sys/net/ipv4/conf/"+tc.ep.HostIface+"/proxy_arp"); v != "1" {
					t.Errorf("proxy_arp = %s, want 1", v)
				}
				if v := readSysctl(t, "/proc/sys/net/ipv4/neigh/"+tc.ep.HostIface+"/proxy_delay"); v != "0" {
					t.Errorf("proxy_delay = %s, want 0", v)
				}
				if tc.v6 {
					if v := readSysctl(t, "/proc/sys/net/ipv6/conf/"+tc.ep.HostIface+"/proxy_ndp"); v != "1" {
						t.Errorf("proxy_ndp = %s, want 1", v)
					}
				}
				got := ourRoutesOn(t, tc.ep.HostIface)
				if strings.Join(got, ",") != strings.Join(tc.routes, ",") {
					t.Errorf("routes = %v, want %v", got, tc.routes)
				}
			})
		})
	}
}

func TestSetupEndpointReplacesStaleLinks(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "host-a")
	ep := Endpoint{ID: "ep1", HostIface: "calistale0001", TempIface: "tmpstale0001", Addrs: mustPrefixes("10.65.1.1/32"), MTU: 1500}
	testns.Do(t, host, func() {
		// What a crash between creating the veth and answering Docker leaves.
		stale := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.HostIface}, PeerName: ep.TempIface}
		if err := netlink.LinkAdd(stale); err != nil {
			t.Fatal(err)
		}
		if err := dp.SetupEndpoint(ep); err != nil {
			t.Fatalf("SetupEndpoint over a stale veth: %v", err)
		}
		l, err := netlinksafe.LinkByName(ep.HostIface)
		if err != nil || l.Attrs().Alias != dp.alias("ep1") {
			t.Fatalf("veth not replaced: %v", err)
		}
		// Join replayed by Docker: same result, no error.
		if err := dp.SetupEndpoint(ep); err != nil {
			t.Fatalf("second SetupEndpoint: %v", err)
		}
	})
}

func TestSetupEndpointFailureLeavesNothing(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "host-a")
	testns.Do(t, host, func() {
		before, _ := netlinksafe.LinkList()
		// A peer name longer than IFNAMSIZ makes the kernel refuse the pair.
		err := dp.SetupEndpoint(Endpoint{ID: "x", HostIface: "califail00001", TempIface: "tmp-name-that-is-far-too-long", Addrs: mustPrefixes("10.65.2.1/32")})
		if err == nil {
			t.Fatal("SetupEndpoint with an impossible peer name succeeded")
		}
		after, _ := netlinksafe.LinkList()
		if len(after) != len(before) {
			t.Fatalf("links before %d, after failed setup %d", len(before), len(after))
		}
		if rs, _ := OurRoutes(); len(rs) != 0 {
			t.Fatalf("routes left after failed setup: %v", rs)
		}
	})
}

func TestTeardownIsIdempotent(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "host-a")
	ep := Endpoint{ID: "ep1", HostIface: "calidown00001", TempIface: "tmpdown00001", Addrs: mustPrefixes("10.65.3.1/32")}
	testns.Do(t, host, func() {
		if err := dp.SetupEndpoint(ep); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if err := dp.TeardownEndpoint(ep.HostIface, ep.Addrs); err != nil {
				t.Fatalf("teardown #%d: %v", i+1, err)
			}
		}
		if LinkExists(ep.HostIface) || LinkExists(ep.TempIface) {
			t.Fatal("veth still exists after teardown")
		}
		if rs, _ := OurRoutes(); len(rs) != 0 {
			t.Fatalf("routes left: %v", rs)
		}
	})
}

func TestGatewayRoutableNeedsARoute(t *testing.T) {
	host := testns.New(t)
	testns.Do(t, host, func() {
		if GatewayRoutable() {
			t.Fatal("GatewayRoutable() = true in a namespace without routes")
		}
	})
}

func TestReconcileTouchesOnlyOurs(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "host-a")
	keep := Endpoint{ID: "keep", HostIface: "calikeep00001", TempIface: "tmpkeep00001", Addrs: mustPrefixes("10.65.4.1/32")}
	leak := Endpoint{ID: "leak", HostIface: "calileak00001", TempIface: "tmpleak00001", Addrs: mustPrefixes("10.65.4.2/32")}
	testns.Do(t, host, func() {
		for _, ep := range []Endpoint{keep, leak} {
			if err := dp.SetupEndpoint(ep); err != nil {
				t.Fatal(err)
			}
		}
		// Someone else's veth and static route must survive.
		foreign := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "califoreign01"}, PeerName: "peerforeign01"}
		if err := netlink.LinkAdd(foreign); err != nil {
			t.Fatal(err)
		}
		fl, _ := netlinksafe.LinkByName("califoreign01")
		_ = netlink.LinkSetUp(fl)
		foreignRoute := &netlink.Route{LinkIndex: fl.Attrs().Index, Dst: prefixToIPNet(netip.MustParsePrefix("10.66.0.1/32")), Scope: netlink.SCOPE_LINK, Protocol: 4}
		if err := netlink.RouteAdd(foreignRoute); err != nil {
			t.Fatal(err)
		}
		// Lose the wanted endpoint's route, as after a crash mid-Join.
		kl, _ := netlinksafe.LinkByName(keep.HostIface)
		if err := netlink.RouteDel(hostRoute(kl.Attrs().Index, keep.Addrs[0])); err != nil {
			t.Fatal(err)
		}
		// A stale route of ours pointing at the kept veth.
		if err := netlink.RouteAdd(hostRoute(kl.Attrs().Index, netip.MustParsePrefix("10.65.4.99/32"))); err != nil {
			t.Fatal(err)
		}

		// Another node's endpoint in the same namespace (several daemons in
		// one namespace, as in tests) is not ours to judge.
		other := New(nil, "host-b")
		otherEp := Endpoint{ID: "other", HostIface: "caliother0001", TempIface: "tmpother0001", Addrs: mustPrefixes("10.65.4.3/32")}
		if err := other.SetupEndpoint(otherEp); err != nil {
			t.Fatal(err)
		}

		res, err := dp.Reconcile(map[string]Endpoint{"keep": keep})
		if err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		if res.RoutesAdded != 1 || res.RoutesRemoved < 1 {
			t.Errorf("result = %+v, want 1 route added, stale routes removed", res)
		}
		// A veth with no wanted endpoint may carry a running container
		// whose record was lost: reconcile never removes it.
		if !LinkExists(leak.HostIface) || len(ourRoutesOn(t, leak.HostIface)) != 1 {
			t.Error("a veth of no wanted endpoint was removed or lost its route")
		}
		if !LinkExists("califoreign01") {
			t.Error("foreign veth removed")
		}
		if !LinkExists(otherEp.HostIface) || len(ourRoutesOn(t, otherEp.HostIface)) != 1 {
			t.Error("another node's veth or route was touched")
		}
		if got := ourRoutesOn(t, keep.HostIface); strings.Join(got, ",") != "10.65.4.1/32" {
			t.Errorf("kept endpoint routes = %v, want [10.65.4.1/32]", got)
		}
		frs, _ := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: fl.Attrs().Index}, netlink.RT_FILTER_OIF)
		found := false
		for _, r := range frs {
			if r.Dst != nil && r.Dst.String() == "10.66.0.1/32" {
				found = true
			}
		}
		if !found {
			t.Error("foreign route removed")
		}
		// A second pass has nothing to do.
		if res, err := dp.Reconcile(map[string]Endpoint{"keep": keep}); err != nil || res != (ReconcileResult{}) {
			t.Errorf("second reconcile = %+v, %v; want no changes", res, err)
		}
	})
}

// TestDataPathThroughProxyARP builds what Docker builds (the peer moved into
// a container namespace, renamed cali0, a /32 and routes via 169.254.1.1)
// and checks two such containers reach each other through the host.
func TestDataPathThroughProxyARP(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "host-a")
	type ctr struct {
		ep   Endpoint
		addr string
	}
	ctrs := []ctr{
		{Endpoint{ID: "a", HostIface: "calipatha0001", TempIface: "tmppatha0001", Addrs: mustPrefixes("10.65.5.1/32"), MTU: 1500}, "10.65.5.1"},
		{Endpoint{ID: "b", HostIface: "calipathb0001", TempIface: "tmppathb0001", Addrs: mustPrefixes("10.65.5.2/32"), MTU: 1500}, "10.65.5.2"},
	}
	// Proxy ARP answers for 169.254.1.1 only when the host has a route to it
	// through another interface: a real host's default route.
	testns.Do(t, host, func() {
		for _, args := range [][]string{
			{"link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"},
			{"addr", "add", "10.99.99.1/24", "dev", "uplink0"},
			{"link", "set", "uplink0", "up"},
			{"link", "set", "uplink1", "up"},
			{"route", "add", "default", "via", "10.99.99.2"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
		if !GatewayRoutable() {
			t.Fatal("GatewayRoutable() = false with a default route")
		}
	})
	var nss []ns.NetNS
	for _, c := range ctrs {
		cns := testns.New(t)
		nss = append(nss, cns)
		testns.Do(t, host, func() {
			if err := dp.EnableForwarding(false); err != nil {
				t.Fatal(err)
			}
			if err := dp.SetupEndpoint(c.ep); err != nil {
				t.Fatal(err)
			}
			l, _ := netlinksafe.LinkByName(c.ep.TempIface)
			if err := netlink.LinkSetNsFd(l, int(cns.Fd())); err != nil {
				t.Fatal(err)
			}
		})
		for _, args := range [][]string{
			{"link", "set", c.ep.TempIface, "name", "cali0"},
			{"addr", "add", c.addr + "/32", "dev", "cali0"},
			{"link", "set", "cali0", "up"},
			{"route", "add", GatewayIPv4, "dev", "cali0", "scope", "link"},
			{"route", "add", "default", "via", GatewayIPv4, "dev", "cali0"},
		} {
			if out, err := testns.Run(cns, "ip", args...); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
	}
	// ping from the first "container" to the second (busybox: what the
	// e2e image uses too).
	out, err := testns.Run(nss[0], "busybox", "ping", "-c", "2", "-W", "2", ctrs[1].addr)
	if err != nil {
		t.Fatalf("ping through the host failed: %v\n%s", err, out)
	}
}
