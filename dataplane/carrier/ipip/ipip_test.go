package ipip

import (
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func TestCarrier(t *testing.T) {
	var c carrier.Carrier = New(netip.MustParseAddr("10.0.1.1"), 0)
	if c.Mode() != carrier.ModeIPIP || c.Overhead() != 20 || Device != "tunl0" {
		t.Errorf("mode %s overhead %d device %s, want ipip 20 tunl0 (an outer IPv4 header through the kernel's fallback device)", c.Mode(), c.Overhead(), Device)
	}
	r := carrier.BlockRoute{Dst: netip.MustParsePrefix("fd00:9::/122"), Via: netip.MustParseAddr("fd00::2"), Mode: carrier.ModeIPIP}
	if _, err := c.Route(r); err == nil || !strings.Contains(err.Error(), "IPv4 only") {
		t.Errorf("Route of an IPv6 block = %v, want an error saying IPIP carries IPv4 only", err)
	}
	if ok, why := New(netip.MustParseAddr("fd00::1"), 0).Available(); ok || !strings.Contains(why, "--ip") {
		t.Errorf("IPv6 local address: available=%v why=%q, want unavailable with a hint at --ip", ok, why)
	}
}

// The probe creates a throwaway link, so it runs in a namespace of its own.
func TestAvailableSaysWhy(t *testing.T) {
	n := testns.New(t)
	var ok bool
	var why string
	testns.Do(t, n, func() { ok, why = New(netip.MustParseAddr("10.0.1.1"), 0).Available() })
	if ok {
		t.Skip("SKIPPED: this kernel has ipip; the missing-support message cannot be shown here")
	}
	if !strings.Contains(why, "ipip") || !strings.Contains(why, "VXLAN") {
		t.Errorf("reason %q does not say what is missing and what carries IPIP pools instead", why)
	}
}

// side is one host of TestCarriesBetweenHosts: a namespace with an uplink
// address and a "container" address on its loopback.
type side struct {
	ns       ns.NetNS
	uplink   netip.Prefix
	inner    netip.Addr
	carrier  *Carrier
	peerBlk  netip.Prefix
	peerHost netip.Addr
}

// TestCarriesBetweenHosts runs the carrier for real between two namespaces
// joined by a veth: each prepares tunl0 and routes the other's block
// through it; TCP between the inner addresses works and crosses both
// tunl0s. Kernels without ipip (this project's CI machine) skip it, loudly.
func TestCarriesBetweenHosts(t *testing.T) {
	a := &side{ns: testns.New(t), uplink: netip.MustParsePrefix("10.77.0.1/24"), inner: netip.MustParseAddr("192.168.4.1")}
	b := &side{ns: testns.New(t), uplink: netip.MustParsePrefix("10.77.0.2/24"), inner: netip.MustParseAddr("192.168.5.1")}
	a.peerBlk, a.peerHost = netip.MustParsePrefix("192.168.5.0/26"), b.uplink.Addr()
	b.peerBlk, b.peerHost = netip.MustParsePrefix("192.168.4.0/26"), a.uplink.Addr()
	// ns.Do runs its function on a goroutine of its own: skip out here.
	var ok bool
	var why string
	testns.Do(t, a.ns, func() { ok, why = New(a.uplink.Addr(), 0).Available() })
	if !ok {
		t.Skipf("SKIPPED: the IPIP carrier's own test needs a kernel with ipip: %s", why)
	}
	testns.Do(t, a.ns, func() {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up0b", PeerNamespace: netlink.NsFd(int(b.ns.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Errorf("veth between the two hosts: %v", err)
		}
	})
	for _, s := range []*side{a, b} {
		dev := map[*side]string{a: "up0", b: "up0b"}[s]
		testns.Do(t, s.ns, func() { s.setUp(t, dev) })
	}
	if t.Failed() { // t.Fatal inside ns.Do ends only its goroutine
		t.FailNow()
	}
	ln := listen(t, b)
	defer ln.Close()
	testns.Do(t, a.ns, func() { echo(t, a.inner, netip.AddrPortFrom(b.inner, 7777)) })
	for _, s := range []*side{a, b} {
		testns.Do(t, s.ns, func() { s.checkDevice(t) })
	}
	testns.Do(t, a.ns, func() {
		if err := a.carrier.Remove(); err != nil {
			t.Fatal(err)
		}
		l, _ := netlinksafe.LinkByName(Device)
		if l.Attrs().Flags&net.FlagUp != 0 || l.Attrs().Alias != "" {
			t.Errorf("after Remove %s is up=%v alias %q, want down and unmarked", Device, l.Attrs().Flags&net.FlagUp != 0, l.Attrs().Alias)
		}
	})
}

func (s *side) setUp(t *testing.T, dev string) {
	run(t, "ip", "addr", "add", s.uplink.String(), "dev", dev)
	run(t, "ip", "link", "set", dev, "up")
	run(t, "ip", "addr", "add", s.inner.String()+"/32", "dev", "lo")
	s.carrier = New(s.uplink.Addr(), 0)
	if err := s.carrier.Prepare([]netip.Addr{s.peerHost}); err != nil {
		t.Fatal(err)
	}
	r, err := s.carrier.Route(carrier.BlockRoute{Dst: s.peerBlk, Via: s.peerHost, Mode: carrier.ModeIPIP})
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(r); err != nil {
		t.Fatalf("route %s via %s onlink dev %s: %v", s.peerBlk, s.peerHost, Device, err)
	}
}

// checkDevice checks tunl0's MTU (the uplink's minus 20), mark and that
// packets crossed it both ways.
func (s *side) checkDevice(t *testing.T) {
	l, err := netlinksafe.LinkByName(Device)
	if err != nil {
		t.Fatal(err)
	}
	at := l.Attrs()
	t.Logf("%s on %s: mtu %d, tx %d rx %d packets", Device, s.uplink, at.MTU, at.Statistics.TxPackets, at.Statistics.RxPackets)
	if at.MTU != 1500-Overhead || at.Alias != Alias || at.Flags&net.FlagUp == 0 {
		t.Errorf("%s: mtu %d alias %q up %v, want mtu %d, alias %q, up", Device, at.MTU, at.Alias, at.Flags&net.FlagUp != 0, 1500-Overhead, Alias)
	}
	if at.Statistics.TxPackets == 0 || at.Statistics.RxPackets == 0 {
		t.Errorf("%s moved tx %d rx %d packets: the TCP exchange did not go through IPIP", Device, at.Statistics.TxPackets, at.Statistics.RxPackets)
	}
}

// listen serves one echo connection on b's inner address (the socket lives
// in b's namespace).
func listen(t *testing.T, b *side) net.Listener {
	var ln net.Listener
	testns.Do(t, b.ns, func() {
		var err error
		if ln, err = net.Listen("tcp4", netip.AddrPortFrom(b.inner, 7777).String()); err != nil {
			t.Fatal(err)
		}
	})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	return ln
}

func echo(t *testing.T, from netip.Addr, to netip.AddrPort) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), Timeout: 5 * time.Second}
	c, err := d.Dial("tcp4", to.String())
	if err != nil {
		t.Fatalf("TCP %s -> %s through IPIP: %v", from, to, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := strings.Repeat("ipip", 1000) // several segments, some near the MTU
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo through IPIP: %d bytes back, err %v", len(got), err)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
