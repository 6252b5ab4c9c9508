package bpfredirect_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/bpfredirect"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// host is one host namespace: its uplink, its endpoints, its path.
type host struct {
	ns   ns.NetNS
	ip   netip.Addr
	dp   *dataplane.Dataplane
	path *bpfredirect.Path
	ctrs map[string]ctr
}

type ctr struct {
	ns    ns.NetNS
	ip    netip.Addr
	iface string // host side
}

// stand-in for the policy table: marks the connections it lets through
// and counts every packet that reaches the forward hook.
const markTable = `table inet bpftest {
	counter hooked { }
	chain forward {
		type filter hook forward priority filter; policy accept;
		counter name hooked
		tcp dport 7 drop
		ct state new ct mark set ct mark or 0x%08x
	}
}`

// TestRedirectPath builds two hosts on one subnet, each with containers
// made by the real data plane, one block routed directly and one through
// the real VXLAN carrier, and the programs on every cali veth, both
// uplinks and both VXLAN devices. It checks what an operator would: TCP
// transfers arrive whole on every path (same host, direct, VXLAN) in both
// directions; once the connections are marked as allowed, nearly all
// their packets are redirected (the counters) and the forward hook sees
// only a handful per connection; connections the policy stand-in drops
// never open; unmarked connections and a container whose map address is
// not its own are left to the kernel (counters flat); closing the path
// leaves every connection working on the kernel's path.
func TestRedirectPath(t *testing.T) {
	testns.RequireRoot(t)
	if _, err := bpfredirect.ReadKernel(); err != nil {
		t.Skipf("SKIPPED LOUDLY: the kernel cannot run the eBPF redirect path: %v", err)
	}
	a := newHost(t, "10.98.0.1", "bpf-a")
	b := newHost(t, "10.98.0.2", "bpf-b")
	if out, err := exec.Command("ip", "link", "add", "upl-a", "netns", a.ns.Path(), "type", "veth", "peer", "name", "upl-b", "netns", b.ns.Path()).CombinedOutput(); err != nil {
		t.Fatalf("uplink: %v: %s", err, out)
	}
	a.uplink(t, "upl-a")
	b.uplink(t, "upl-b")
	a.attach(t, "a1", "10.72.1.1")
	a.attach(t, "a2", "10.72.1.2")
	a.attach(t, "av", "10.72.11.1")
	b.attach(t, "b1", "10.72.2.1")
	b.attach(t, "bv", "10.72.12.1")
	a.routes(t, b.ip, "10.72.12.0/26", "10.72.2.0/26")
	b.routes(t, a.ip, "10.72.11.0/26", "10.72.1.0/26")
	for _, h := range []*host{a, b} {
		h.open(t)
	}
	// An endpoint made from then on gets the path at once; one removed
	// loses it.
	a.attach(t, "a3", "10.72.1.3")
	if e, _ := a.path.Attached(); e != 4 {
		t.Errorf("after a new endpoint: on %d endpoints, want 4", e)
	}
	testns.Do(t, a.ns, func() {
		if err := a.dp.TeardownEndpoint(a.ctrs["a3"].iface, nil); err != nil {
			t.Fatal(err)
		}
		if e, _ := a.path.Attached(); e != 3 {
			t.Errorf("after an endpoint removed: on %d endpoints, want 3", e)
		}
		// A resync finds exactly what is there.
		if err := a.dp.SyncRedirect(a.ip); err != nil {
			t.Fatal(err)
		}
		if e, u := a.path.Attached(); e != 3 || u != 2 {
			t.Errorf("after a resync: on %d endpoints and %d uplinks, want 3 and 2", e, u)
		}
	})

	paths := []struct {
		name     string
		from, to ctr
		fh, th   *host
	}{
		{"same host", a.ctrs["a1"], a.ctrs["a2"], a, a},
		{"direct a->b", a.ctrs["a1"], b.ctrs["b1"], a, b},
		{"direct b->a", b.ctrs["b1"], a.ctrs["a2"], b, a},
		{"VXLAN a->b", a.ctrs["av"], b.ctrs["bv"], a, b},
		{"VXLAN b->a", b.ctrs["bv"], a.ctrs["av"], b, a},
	}
	// Unmarked: the policy stand-in is not there yet, nothing is taken.
	for _, p := range paths[:2] {
		before := counts(t, a, b)
		send(t, p.from, p.to, 4<<20)
		if d := counts(t, a, b).sub(before); d.redirected() != 0 || d.passed == 0 {
			t.Errorf("%s, connection not marked: %+v, want nothing redirected", p.name, d)
		}
	}
	for _, h := range []*host{a, b} {
		if out, err := nft(h, fmt.Sprintf(markTable, nftpolicy.DefaultAcceptedCTMark)); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	for _, p := range paths {
		before, fwdBefore := counts(t, a, b), fwdPackets(t, p.fh)+fwdPackets(t, p.th)
		send(t, p.from, p.to, 16<<20)
		d, fwd := counts(t, a, b).sub(before), fwdPackets(t, p.fh)+fwdPackets(t, p.th)-fwdBefore
		t.Logf("%s: 16 MiB, redirected %d into containers, %d out, %d left to the kernel; forward hook saw %d packets",
			p.name, d.toEndpoint, d.out, d.passed, fwd)
		// (Left to the kernel includes the VXLAN packets on the uplinks:
		// the kernel decapsulates them, the program on vxlan.calico takes
		// the inner ones.)
		if d.redirected() < 100 {
			t.Errorf("%s: %+v: want the connection's packets redirected", p.name, d)
		}
		if fwd > 40 {
			t.Errorf("%s: the forward hook saw %d packets of one connection, want only its opening and closing", p.name, fwd)
		}
	}
	// What the policy drops never opens: the SYN takes the kernel's path.
	if err := dial(t, a.ctrs["a1"], b.ctrs["b1"], 7); err == nil {
		t.Error("a connection to a port the forward chain drops was opened")
	}
	// A container whose packets do not come from the address the map holds
	// for its interface is left to the kernel (and its anti-spoofing).
	testns.Do(t, a.ns, func() {
		if err := a.path.AttachEndpoint(a.ctrs["a1"].iface, ifindex(t, a.ctrs["a1"].iface), netip.MustParseAddr("10.72.1.99")); err != nil {
			t.Fatal(err)
		}
	})
	before := counts(t, a, b)
	send(t, a.ctrs["a1"], a.ctrs["a2"], 1<<20)
	if d := counts(t, a, b).sub(before); d.toEndpoint > d.passed {
		// The replies, a2 -> a1, are still its own: only half can be taken.
		t.Errorf("a1 with a wrong address in the map: %+v, want a1's packets left to the kernel", d)
	}
	// Closing detaches everything; the kernel carries on alone.
	for _, h := range []*host{a, b} {
		testns.Do(t, h.ns, func() { _ = h.path.Close() })
		if e, u := h.path.Attached(); e+u != 0 {
			t.Errorf("after Close: %d endpoints, %d uplinks attached", e, u)
		}
	}
	for _, p := range paths {
		send(t, p.from, p.to, 1<<20)
	}
}

func newHost(t *testing.T, ip, name string) *host {
	h := &host{ns: testns.New(t), ip: netip.MustParseAddr(ip), dp: dataplane.New(nil, name), ctrs: map[string]ctr{}}
	testns.Do(t, h.ns, func() {
		if err := h.dp.EnableForwarding(false); err != nil {
			t.Fatal(err)
		}
	})
	return h
}

func (h *host) uplink(t *testing.T, dev string) {
	for _, args := range [][]string{
		{"addr", "add", h.ip.String() + "/24", "dev", dev},
		{"link", "set", dev, "up"},
		{"route", "add", "default", "via", "10.98.0.254"}, // proxy ARP answers for the gateway only with a route to it
	} {
		if out, err := testns.Run(h.ns, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
}

// attach makes a container namespace with one endpoint, as Docker and the
// daemon would.
func (h *host) attach(t *testing.T, name, ip string) {
	c := ctr{ns: testns.New(t), ip: netip.MustParseAddr(ip), iface: "calibpf" + name}
	ep := dataplane.Endpoint{ID: name, HostIface: c.iface, TempIface: "tmpbpf" + name,
		Addrs: []netip.Prefix{netip.PrefixFrom(c.ip, 32)}, MTU: 1500}
	testns.Do(t, h.ns, func() {
		if err := h.dp.SetupEndpoint(ep); err != nil {
			t.Fatal(err)
		}
		l, err := netlinksafe.LinkByName(ep.TempIface)
		if err == nil {
			err = netlink.LinkSetNsFd(l, int(c.ns.Fd()))
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
		if out, err := testns.Run(c.ns, "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	h.ctrs[name] = c
}

// routes routes the peer's first block through VXLAN, its second directly.
func (h *host) routes(t *testing.T, peer netip.Addr, vxlanBlock, directBlock string) {
	want := []carrier.BlockRoute{
		{Dst: netip.MustParsePrefix(vxlanBlock), Via: peer, Mode: carrier.ModeVXLAN},
		{Dst: netip.MustParsePrefix(directBlock), Via: peer, Mode: carrier.ModeDirect},
	}
	testns.Do(t, h.ns, func() {
		br := h.dp.NewBlockRoutes(h.dp.NewVXLANCarrier(h.ip, 0))
		if res, err := br.Apply(want); err != nil || len(res.Skipped) > 0 {
			t.Fatalf("block routes: %+v, %v", res, err)
		}
	})
}

// open loads the path in the host and has the data plane put it on every
// endpoint, the uplink and the VXLAN device, as the daemon does at start.
func (h *host) open(t *testing.T) {
	testns.Do(t, h.ns, func() {
		p, err := bpfredirect.Open(nftpolicy.DefaultAcceptedCTMark)
		if err != nil {
			t.Fatal(err)
		}
		h.path = p
		t.Cleanup(func() { _ = p.Close() })
		h.dp.UseRedirect(p)
		if err := h.dp.SyncRedirect(h.ip); err != nil {
			t.Fatal(err)
		}
		if e, u := p.Attached(); e != len(h.ctrs) || u != 2 {
			t.Fatalf("attached to %d endpoints and %d uplinks, want %d and 2", e, u, len(h.ctrs))
		}
	})
}

func ifindex(t *testing.T, name string) int {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

type counters struct{ toEndpoint, out, passed uint64 }

func (c counters) redirected() uint64 { return c.toEndpoint + c.out }

func (c counters) sub(o counters) counters {
	return counters{c.toEndpoint - o.toEndpoint, c.out - o.out, c.passed - o.passed}
}

// counts sums both hosts' counters.
func counts(t *testing.T, hs ...*host) counters {
	var sum counters
	for _, h := range hs {
		e, o, p, err := h.path.Counters()
		if err != nil {
			t.Fatal(err)
		}
		sum = counters{sum.toEndpoint + e, sum.out + o, sum.passed + p}
	}
	return sum
}

func nft(h *host, ruleset string) (string, error) {
	cmd := exec.Command("nsenter", "--net="+h.ns.Path(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var packetsRe = regexp.MustCompile(`packets (\d+)`)

// fwdPackets is the number of packets the host's forward hook has seen.
func fwdPackets(t *testing.T, h *host) uint64 {
	out, err := testns.Run(h.ns, "nft", "list", "counter", "inet", "bpftest", "hooked")
	if err != nil {
		t.Fatalf("nft list counter: %v: %s", err, out)
	}
	m := packetsRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count in %q", out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// send sends n random bytes over TCP and checks they all arrive unchanged.
func send(t *testing.T, from, to ctr, n int) {
	t.Helper()
	var ln net.Listener
	var err error
	testns.Do(t, to.ns, func() { ln, err = net.Listen("tcp4", to.ip.String()+":0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		sum [32]byte
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{n: -1}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		k, _ := io.Copy(h, c)
		var r result
		r.n = k
		copy(r.sum[:], h.Sum(nil))
		got <- r
	}()
	data := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{byte(n)})
	_, _ = rng.Read(data)
	var conn net.Conn
	testns.Do(t, from.ns, func() { conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second) })
	if err != nil {
		t.Fatalf("%s -> %s: %v", from.ip, to.ip, err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(data); err != nil {
		t.Errorf("%s -> %s: write: %v", from.ip, to.ip, err)
	}
	conn.Close()
	r := <-got
	if r.n != int64(n) || r.sum != sha256.Sum256(data) {
		t.Errorf("%s -> %s: %d of %d bytes arrived (intact: %v)", from.ip, to.ip, r.n, n, r.sum == sha256.Sum256(data))
	}
}

// dial tries to open a connection to port on to.
func dial(t *testing.T, from, to ctr, port int) error {
	var err error
	var ln net.Listener
	testns.Do(t, to.ns, func() { ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", to.ip, port)) })
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	var c net.Conn
	testns.Do(t, from.ns, func() { c, err = net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second) })
	if err == nil {
		c.Close()
	}
	return err
}
