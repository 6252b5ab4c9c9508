package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func nsRun(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	out, err := testns.Run(n, args[0], args[1:]...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func nsSysctl(t *testing.T, n ns.NetNS, path, val string) {
	t.Helper()
	testns.Do(t, n, func() {
		if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

func nsRead(t *testing.T, n ns.NetNS, path string) string {
	var v string
	testns.Do(t, n, func() { v = readSysctl(t, path) })
	return v
}

// sendRA sends a router advertisement (router lifetime 1800 s) from the
// router's link-local address src on iface in n, to all nodes.
func sendRA(t *testing.T, n ns.NetNS, iface, src string) {
	t.Helper()
	testns.Do(t, n, func() {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		for _, opt := range []int{unix.IPV6_MULTICAST_HOPS, unix.IPV6_UNICAST_HOPS} {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, opt, 255); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: netip.MustParseAddr(src).As16(), ZoneId: uint32(ifi.Index)}); err != nil {
			t.Fatalf("bind %s: %v", src, err)
		}
		// type 134, code, checksum (the kernel's), hop limit 64, flags,
		// router lifetime 1800, reachable time, retrans timer; then the
		// source link-layer address option.
		msg := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}
		msg = append(msg, ifi.HardwareAddr...)
		// Right after the link comes up its multicast route may not be
		// there yet (seen under load: ENETUNREACH): try for a while.
		to := &unix.SockaddrInet6{Addr: netip.MustParseAddr("ff02::1").As16(), ZoneId: uint32(ifi.Index)}
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			err := unix.Sendto(fd, msg, 0, to)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.ENETUNREACH) || time.Now().After(deadline) {
				t.Fatalf("send RA: %v", err)
			}
		}
	})
}

func defaultVia(t *testing.T, n ns.NetNS) string {
	return nsRun(t, n, "ip", "-6", "route", "show", "default")
}

func waitDefaultVia(t *testing.T, n ns.NetNS, gw string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(defaultVia(t, n), "via "+gw) {
		if time.Now().After(deadline) {
			t.Fatalf("no RA-learned default route via %s: %q", gw, defaultVia(t, n))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// raHost is a host whose uplink learns its IPv6 default route from a
// router's advertisements, with a container-like namespace to attach.
type raHost struct {
	host, router, ctr ns.NetNS
}

func newRAHost(t *testing.T) *raHost {
	t.Helper()
	h := &raHost{host: testns.New(t), router: testns.New(t), ctr: testns.New(t)}
	for _, n := range []ns.NetNS{h.host, h.router, h.ctr} {
		nsSysctl(t, n, "/proc/sys/net/ipv6/conf/all/accept_dad", "0")
		nsSysctl(t, n, "/proc/sys/net/ipv6/conf/default/accept_dad", "0")
	}
	nsRun(t, h.host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "rt0")
	nsRun(t, h.host, "ip", "link", "set", "rt0", "netns", h.router.Path())
	nsRun(t, h.host, "ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "up0", "nodad")
	nsRun(t, h.host, "ip", "link", "set", "up0", "up")
	for _, a := range []string{"fe80::1/64", "fe80::2/64", "2001:db8:1::1/64"} {
		nsRun(t, h.router, "ip", "-6", "addr", "add", a, "dev", "rt0", "nodad")
	}
	nsRun(t, h.router, "ip", "link", "set", "rt0", "up")
	nsRun(t, h.router, "ip", "-6", "route", "add", "fd00:c::/64", "via", "2001:db8:1::2")
	if got := nsRead(t, h.host, "/proc/sys/net/ipv6/conf/all/forwarding"); got != "0" {
		t.Fatalf("a new namespace forwards IPv6 already (%s)", got)
	}
	sendRA(t, h.router, "rt0", "fe80::1")
	waitDefaultVia(t, h.host, "fe80::1")
	return h
}

// attach makes an IPv6 endpoint the way Join does, after turning on
// forwarding as Join does.
func (h *raHost) attach(t *testing.T, dp *Dataplane) {
	t.Helper()
	testns.Do(t, h.host, func() {
		if err := dp.EnableForwarding(true); err != nil {
			t.Fatalf("EnableForwarding: %v", err)
		}
		ep := Endpoint{ID: "ep6", HostIface: "califwd6test", TempIface: "tmpfwd6test", Addrs: mustPrefixes("fd00:c::2/128")}
		if err := dp.SetupEndpoint(ep); err != nil {
			t.Fatalf("SetupEndpoint: %v", err)
		}
	})
	nsRun(t, h.host, "ip", "link", "set", "tmpfwd6test", "netns", h.ctr.Path())
	nsRun(t, h.ctr, "ip", "link", "set", "tmpfwd6test", "name", "cali0")
	nsRun(t, h.ctr, "ip", "-6", "addr", "add", "fd00:c::2/128", "dev", "cali0", "nodad")
	nsRun(t, h.ctr, "ip", "link", "set", "cali0", "up")
	nsRun(t, h.ctr, "ip", "-6", "route", "add", "default", "via", GatewayIPv6, "dev", "cali0")
}

func (h *raHost) ping(t *testing.T) error {
	t.Helper()
	var err error
	for i := 0; i < 3; i++ { // the first may wait for neighbour discovery
		if _, err = testns.Run(h.ctr, "busybox", "ping", "-c", "1", "-W", "2", "2001:db8:1::1"); err == nil {
			return nil
		}
	}
	return err
}

// TestIPv6ForwardingKeepsRouterAdvertisements: a host that learns its
// IPv6 default route from router advertisements keeps it, and keeps
// hearing RAs, once the first IPv6 endpoint joins; the endpoint's traffic
// is forwarded both ways. Per interface where the kernel can
// (force_forwarding), else with accept_ra=2 before the global switch. The
// control shows what the global switch alone does: the route is gone.
func TestIPv6ForwardingKeepsRouterAdvertisements(t *testing.T) {
	testns.RequireRoot(t)
	if !forceForwardingSupported() {
		t.Log("this kernel has no force_forwarding: only the global-switch path is tested")
	}
	cases := []struct {
		name         string
		perInterface bool
	}{{"per interface (force_forwarding)", true}, {"global switch with accept_ra=2", false}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.perInterface && !forceForwardingSupported() {
				t.Skip("SKIPPED: the kernel has no force_forwarding")
			}
			h := newRAHost(t)
			dp := New(nil, "host-a")
			dp.v6.perInterface = func() bool { return tc.perInterface }
			h.attach(t, dp)
			conf := func(iface, key string) string { return nsRead(t, h.host, procIPv6Conf+iface+"/"+key) }
			if tc.perInterface {
				if conf("all", "forwarding") != "0" || conf("up0", "force_forwarding") != "1" || conf("califwd6test", "force_forwarding") != "1" || conf("up0", "forwarding") != "0" {
					t.Errorf("all.forwarding=%s up0 force_forwarding=%s forwarding=%s cali force_forwarding=%s; want 0 1 0 1",
						conf("all", "forwarding"), conf("up0", "force_forwarding"), conf("up0", "forwarding"), conf("califwd6test", "force_forwarding"))
				}
			} else if conf("all", "forwarding") != "1" || conf("up0", "accept_ra") != "2" {
				t.Errorf("all.forwarding=%s up0 accept_ra=%s; want 1 and 2", conf("all", "forwarding"), conf("up0", "accept_ra"))
			}
			if conf("califwd6test", "accept_ra") != "0" {
				t.Errorf("the endpoint's interface accepts router advertisements from the container (accept_ra=%s)", conf("califwd6test", "accept_ra"))
			}
			if !strings.Contains(defaultVia(t, h.host), "via fe80::1") {
				t.Errorf("the RA-learned default route is gone: %q", defaultVia(t, h.host))
			}
			if err := h.ping(t); err != nil {
				t.Errorf("the endpoint's IPv6 traffic is not forwarded: %v", err)
			}
			sendRA(t, h.router, "rt0", "fe80::2")
			waitDefaultVia(t, h.host, "fe80::2") // RAs are still heard
			// The periodic refresh changes nothing more.
			testns.Do(t, h.host, func() {
				if err := dp.refreshIPv6Forwarding(); err != nil {
					t.Error(err)
				}
			})
		})
	}
	t.Run("control: all.forwarding alone drops the route", func(t *testing.T) {
		h := newRAHost(t)
		nsSysctl(t, h.host, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
		time.Sleep(100 * time.Millisecond)
		if strings.Contains(defaultVia(t, h.host), "via fe80::1") {
			t.Errorf("with all.forwarding=1 and accept_ra=1 the RA route stayed (%q): the test above proves nothing", defaultVia(t, h.host))
		}
	})
}
