package vxlan

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func TestVTEPMAC(t *testing.T) {
	tests := []struct{ ip, mac string }{
		{"10.0.1.1", "66:ee:0a:00:01:01"},
		{"192.168.255.254", "66:ee:c0:a8:ff:fe"},
		{"172.16.0.10", "66:ee:ac:10:00:0a"},
	}
	for _, tc := range tests {
		mac := VTEPMAC(netip.MustParseAddr(tc.ip))
		if mac.String() != tc.mac {
			t.Errorf("VTEPMAC(%s) = %s, want %s", tc.ip, mac, tc.mac)
		}
		// Locally administered (bit 1 of the first byte) and unicast (bit 0
		// clear), so it never collides with a vendor's MAC or looks multicast.
		if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
			t.Errorf("VTEPMAC(%s) = %s is not a locally administered unicast MAC", tc.ip, mac)
		}
	}
}

func TestCarrier(t *testing.T) {
	var c carrier.Carrier = New(netip.MustParseAddr("10.0.1.1"), 0, nil)
	// Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
	if c.Mode() != carrier.ModeVXLAN || c.Overhead() != 14+20+8+8 {
		t.Errorf("mode %s overhead %d, want vxlan 50", c.Mode(), c.Overhead())
	}
	if Port != 4789 || VNI != 4096 || Device != "vxlan.calico" {
		t.Errorf("port %d vni %d device %s differ from Calico's", Port, VNI, Device)
	}
}

func TestAvailableNeedsIPv4(t *testing.T) {
	for _, local := range []netip.Addr{{}, netip.MustParseAddr("fd00::1")} {
		ok, why := New(local, 0, nil).Available()
		if ok || !strings.Contains(why, "--ip") {
			t.Errorf("local %v: available=%v why=%q, want unavailable with a hint at --ip", local, ok, why)
		}
	}
}

func ipCmd(t *testing.T, args string) {
	t.Helper()
	if out, err := exec.Command("ip", strings.Fields(args)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", args, err, out)
	}
}

func neighbours(t *testing.T, fam int) []string {
	t.Helper()
	l, err := netlinksafe.LinkByName(Device)
	if err != nil {
		t.Fatalf("no %s: %v", Device, err)
	}
	ns, err := netlink.NeighList(l.Attrs().Index, fam)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range ns {
		if n.IP != nil {
			out = append(out, n.IP.String()+"="+n.HardwareAddr.String())
		}
	}
	sort.Strings(out)
	return out
}

// The device follows the carrier's settings and its peers, in a namespace
// of the test's own.
func TestPrepareFollowsPeers(t *testing.T) {
	t.Run("an older daemon's device with the outer checksum is made again", testOldDeviceReplaced)
	n := testns.New(t)
	testns.Do(t, n, func() {
		ipCmd(t, "link add up0 type veth peer name up0p")
		ipCmd(t, "addr add 10.0.1.1/24 dev up0")
		ipCmd(t, "addr add 10.0.1.5/24 dev up0")
		ipCmd(t, "link set up0 up")
		c := New(netip.MustParseAddr("10.0.1.1"), 1400, nil)
		if ok, why := c.Available(); !ok {
			t.Skipf("SKIPPED: %s", why)
		}
		p2, p3 := netip.MustParseAddr("10.0.2.2"), netip.MustParseAddr("10.0.2.3")
		if err := c.Prepare([]netip.Addr{p2, p3, c.LocalIP}); err != nil {
			t.Fatal(err)
		}
		want := []string{"10.0.2.2=" + VTEPMAC(p2).String(), "10.0.2.3=" + VTEPMAC(p3).String()}
		if got := neighbours(t, unix.AF_INET); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("neighbours %v, want %v (never one for this host)", got, want)
		}
		l, _ := netlinksafe.LinkByName(Device)
		if l.Attrs().MTU != 1400 || l.Attrs().Alias != Alias || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("device mtu %d alias %q flags %v", l.Attrs().MTU, l.Attrs().Alias, l.Attrs().Flags)
		}
		// Someone turns transmit checksum offload off: the next pass turns
		// it back on (off, the device segments everything in software).
		off := false
		if _, err := txChecksum(Device, &off); err != nil {
			t.Fatal(err)
		}
		if on, err := txChecksum(Device, nil); err != nil || on {
			t.Fatalf("tx checksum offload after turning it off: %v %v", on, err)
		}
		if out, _ := exec.Command("ethtool", "-k", Device).Output(); len(out) > 0 && !strings.Contains(string(out), "tx-checksumming: off") {
			t.Errorf("ethtool does not see tx checksumming off:\n%s", out)
		}
		if err := c.Prepare([]netip.Addr{p2, p3}); err != nil {
			t.Fatal(err)
		}
		if on, err := txChecksum(Device, nil); err != nil || !on {
			t.Errorf("tx checksum offload after Prepare: %v %v, want on", on, err)
		}
		if v := l.(*netlink.Vxlan); v.UDPCSum || v.Learning || v.Port != Port || v.VxlanId != VNI {
			t.Errorf("device udpcsum %v learning %v port %d vni %d; want noudpcsum (RFC 7348), nolearning, %d, %d", v.UDPCSum, v.Learning, v.Port, v.VxlanId, Port, VNI)
		}
		first := l.Attrs().Index

		// A host leaves: its entries go; the device is kept.
		if err := c.Prepare([]netip.Addr{p3}); err != nil {
			t.Fatal(err)
		}
		if got := neighbours(t, unix.AF_INET); fmt.Sprint(got) != fmt.Sprint(want[1:]) {
			t.Errorf("neighbours after a host left: %v, want %v", got, want[1:])
		}
		if got := neighbours(t, unix.AF_BRIDGE); fmt.Sprint(got) != fmt.Sprint(want[1:]) {
			t.Errorf("forwarding entries after a host left: %v, want %v", got, want[1:])
		}
		if l, _ := netlinksafe.LinkByName(Device); l.Attrs().Index != first {
			t.Error("device recreated although its settings did not change")
		}

		// The node's address changes: the device is made again with the new
		// source and MAC.
		c2 := New(netip.MustParseAddr("10.0.1.5"), 0, nil)
		if err := c2.Prepare([]netip.Addr{p3}); err != nil {
			t.Fatal(err)
		}
		vx, _ := netlinksafe.LinkByName(Device)
		if v := vx.(*netlink.Vxlan); v.SrcAddr.String() != "10.0.1.5" || v.HardwareAddr.String() != VTEPMAC(c2.LocalIP).String() || v.MTU != 1500-Overhead {
			t.Errorf("device after the address changed: src %s mac %s mtu %d", v.SrcAddr, v.HardwareAddr, v.MTU)
		}
		r, err := c2.Route(carrier.BlockRoute{Dst: netip.MustParsePrefix("192.168.0.64/26"), Via: p3, Mode: carrier.ModeVXLAN})
		if err != nil || r.LinkIndex != vx.Attrs().Index || r.Flags != int(netlink.FLAG_ONLINK) || r.Gw.String() != "10.0.2.3" {
			t.Errorf("route %+v, %v: want onlink via 10.0.2.3 through %s", r, err, Device)
		}
		if err := c2.Remove(); err != nil {
			t.Fatal(err)
		}
		if _, err := netlinksafe.LinkByName(Device); err == nil {
			t.Error("device left after Remove")
		}
		if err := c2.Remove(); err != nil {
			t.Errorf("second Remove: %v", err)
		}
		if _, err := c2.Route(carrier.BlockRoute{Dst: netip.MustParsePrefix("192.168.0.64/26"), Via: p3}); err == nil {
			t.Error("Route without the device gave no error")
		}
	})
}

// A Prepare over settled entries changes nothing the kernel reports (`ip
// monitor neigh` sees nothing; since this change it sends no request
// either, which the monitor cannot tell: the kernel is silent about a
// replace with equal contents); an entry someone changed is put right.
func TestPrepareSettledWritesNothing(t *testing.T) {
	n := testns.New(t)
	testns.Do(t, n, func() {
		ipCmd(t, "link add up0 type veth peer name up0p")
		ipCmd(t, "addr add 10.0.1.1/24 dev up0")
		ipCmd(t, "link set up0 up")
		c := New(netip.MustParseAddr("10.0.1.1"), 1400, nil)
		if ok, why := c.Available(); !ok {
			t.Skipf("SKIPPED: %s", why)
		}
		peers := []netip.Addr{netip.MustParseAddr("10.0.2.2"), netip.MustParseAddr("10.0.2.3")}
		if err := c.Prepare(peers); err != nil {
			t.Fatal(err)
		}
		var out lockedBuf
		mon := exec.Command("ip", "monitor", "neigh")
		mon.Stdout, mon.Stderr = &out, &out
		if err := mon.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		for range 3 {
			if err := c.Prepare(peers); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		settled := out.lines()
		// The monitor sees a change: the hand-made one and its repair.
		ipCmd(t, "neigh replace 10.0.2.2 lladdr 02:00:00:00:00:01 nud permanent dev "+Device)
		if err := c.Prepare(peers); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		_ = mon.Process.Kill()
		_ = mon.Wait()
		if len(settled) > 0 {
			t.Errorf("Prepare over settled entries changed the kernel:\n%s", strings.Join(settled, "\n"))
		}
		if all := out.lines(); len(all) < 2 {
			t.Errorf("ip monitor saw %v around a change made by hand and its repair: the monitor does not work here", all)
		}
		want := []string{"10.0.2.2=" + VTEPMAC(peers[0]).String(), "10.0.2.3=" + VTEPMAC(peers[1]).String()}
		if got := neighbours(t, unix.AF_INET); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("neighbours after one was changed by hand: %v, want %v", got, want)
		}
	})
}

// lockedBuf collects a command's output; lines drops ip's complaint about
// the test namespace having no id.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, x := range strings.Split(l.b.String(), "\n") {
		if x = strings.TrimSpace(x); x != "" && !strings.HasPrefix(x, "Error: Peer netns reference is invalid") {
			out = append(out, x)
		}
	}
	return out
}

func testOldDeviceReplaced(t *testing.T) {
	n := testns.New(t)
	testns.Do(t, n, func() {
		ipCmd(t, "link add up0 type veth peer name up0p")
		ipCmd(t, "addr add 10.0.1.1/24 dev up0")
		ipCmd(t, "link set up0 up")
		c := New(netip.MustParseAddr("10.0.1.1"), 0, nil)
		if ok, why := c.Available(); !ok {
			t.Errorf("SKIPPED: %s", why)
			return
		}
		mac := VTEPMAC(c.LocalIP).String()
		ipCmd(t, "link add "+Device+" address "+mac+" type vxlan id 4096 local 10.0.1.1 dstport 4789 nolearning dev up0 udpcsum")
		if err := c.Prepare(nil); err != nil {
			t.Fatal(err)
		}
		l, _ := netlinksafe.LinkByName(Device)
		if v, ok := l.(*netlink.Vxlan); !ok || v.UDPCSum {
			t.Errorf("device after Prepare: %+v; want it made again without udpcsum", l)
		}
	})
}
