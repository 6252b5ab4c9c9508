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

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/bpfredirect"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testhost"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// host is one host namespace with the path loaded.
type host struct {
	*testhost.Host
	path *bpfredirect.Path
}

// stand-in for the policy table: drops what conntrack finds invalid (as
// the endpoint chains do), marks the connections it lets through and
// counts every packet that reaches the forward hook.
const markTable = `table inet bpftest {
	counter hooked { }
	chain forward {
		type filter hook forward priority filter; policy accept;
		counter name hooked
		ct state invalid drop
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
	a := &host{Host: testhost.New(t, "10.98.0.1", "bpf-a", "bpf")}
	b := &host{Host: testhost.New(t, "10.98.0.2", "bpf-b", "bpf")}
	testhost.Link(t, a.Host, b.Host, "upl-a", "upl-b")
	a.Attach(t, "a1", "10.72.1.1", 1500)
	a.Attach(t, "a2", "10.72.1.2", 1500)
	a.Attach(t, "av", "10.72.11.1", 1500)
	b.Attach(t, "b1", "10.72.2.1", 1500)
	b.Attach(t, "bv", "10.72.12.1", 1500)
	a.Routes(t, b.IP, "10.72.12.0/26", "10.72.2.0/26")
	b.Routes(t, a.IP, "10.72.11.0/26", "10.72.1.0/26")
	for _, h := range []*host{a, b} {
		h.open(t)
	}
	// An endpoint made from then on gets the path at once; one removed
	// loses it.
	a.Attach(t, "a3", "10.72.1.3", 1500)
	if e, _ := a.path.Attached(); e != 4 {
		t.Errorf("after a new endpoint: on %d endpoints, want 4", e)
	}
	testns.Do(t, a.NS, func() {
		if err := a.DP.TeardownEndpoint(a.Ctrs["a3"].Iface, nil); err != nil {
			t.Fatal(err)
		}
		if e, _ := a.path.Attached(); e != 3 {
			t.Errorf("after an endpoint removed: on %d endpoints, want 3", e)
		}
		// A resync finds exactly what is there.
		if err := a.DP.SyncRedirect(a.IP); err != nil {
			t.Fatal(err)
		}
		if e, u := a.path.Attached(); e != 3 || u != 2 {
			t.Errorf("after a resync: on %d endpoints and %d uplinks, want 3 and 2", e, u)
		}
	})

	paths := []struct {
		name     string
		from, to testhost.Ctr
		fh, th   *host
	}{
		{"same host", a.Ctrs["a1"], a.Ctrs["a2"], a, a},
		{"direct a->b", a.Ctrs["a1"], b.Ctrs["b1"], a, b},
		{"direct b->a", b.Ctrs["b1"], a.Ctrs["a2"], b, a},
		{"VXLAN a->b", a.Ctrs["av"], b.Ctrs["bv"], a, b},
		{"VXLAN b->a", b.Ctrs["bv"], a.Ctrs["av"], b, a},
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
		t.Logf("%s: 16 MiB, redirected %d into containers (%d of them out of VXLAN), %d out (%d into VXLAN), %d left to the kernel; forward hook saw %d packets",
			p.name, d.toEndpoint, d.decap, d.out, d.encap, d.passed, fwd)
		if d.redirected() < 100 {
			t.Errorf("%s: %+v: want the connection's packets redirected", p.name, d)
		}
		// Through VXLAN the programs encapsulate and take apart
		// themselves, past vxlan.calico, in both directions of the
		// connection.
		if vx := strings.HasPrefix(p.name, "VXLAN"); vx && (d.encap < d.out*9/10 || d.decap < d.toEndpoint*9/10 || d.decap < 100) {
			t.Errorf("%s: %+v: want nearly all packets encapsulated and taken apart by the programs", p.name, d)
		} else if !vx && d.encap+d.decap != 0 {
			t.Errorf("%s: %+v: nothing to encapsulate on this path", p.name, d)
		}
		if fwd > 40 {
			t.Errorf("%s: the forward hook saw %d packets of one connection, want only its opening and closing", p.name, fwd)
		}
	}
	// What the policy drops never opens: the SYN takes the kernel's path.
	if err := dial(t, a.Ctrs["a1"], b.Ctrs["b1"], 7); err == nil {
		t.Error("a connection to a port the forward chain drops was opened")
	}
	// A container whose packets do not come from the address the map holds
	// for its interface is left to the kernel (and its anti-spoofing).
	testns.Do(t, a.NS, func() {
		if err := a.path.AttachEndpoint(a.Ctrs["a1"].Iface, ifindex(t, a.Ctrs["a1"].Iface), netip.MustParseAddr("10.72.1.99")); err != nil {
			t.Fatal(err)
		}
	})
	before := counts(t, a, b)
	send(t, a.Ctrs["a1"], a.Ctrs["a2"], 1<<20)
	if d := counts(t, a, b).sub(before); d.toEndpoint > d.passed {
		// The replies, a2 -> a1, are still its own: only half can be taken.
		t.Errorf("a1 with a wrong address in the map: %+v, want a1's packets left to the kernel", d)
	}
	vxlanSegmented(t, a, b)
	// Closing detaches everything; the kernel carries on alone. With only
	// b's path closed, b's VXLAN device takes apart what a's programs
	// encapsulate and a's programs what b's device encapsulates: the
	// packets on the wire are the device's.
	for _, h := range []*host{b, a} {
		testns.Do(t, h.NS, func() { _ = h.path.Close() })
		if e, u := h.path.Attached(); e+u != 0 {
			t.Errorf("after Close: %d endpoints, %d uplinks attached", e, u)
		}
		if h == a {
			for _, p := range paths {
				send(t, p.from, p.to, 1<<20)
			}
			continue
		}
		before := counts(t, a)
		for _, p := range paths {
			send(t, p.from, p.to, 4<<20)
		}
		if d := counts(t, a).sub(before); d.encap < 20 || d.decap < 20 {
			t.Errorf("b's path closed: a's programs %+v, want them still encapsulating and taking apart", d)
		}
	}
}

// vxlanSegmented sends through VXLAN with the sending uplink unable to
// segment tunnel packets, as a NIC without VXLAN offload: the kernel cuts
// the programs' encapsulated GSO packets in software, which needs their
// tunnel metadata right.
func vxlanSegmented(t *testing.T, a, b *host) {
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Errorf("ethtool missing (scripts/install-deps.sh installs it): the software segmentation case did not run")
		return
	}
	if out, err := testns.Run(a.NS, "ethtool", "-K", "upl-a", "tx-udp_tnl-segmentation", "off", "tx-udp_tnl-csum-segmentation", "off"); err != nil {
		t.Fatalf("ethtool: %v: %s", err, out)
	}
	defer func() {
		_, _ = testns.Run(a.NS, "ethtool", "-K", "upl-a", "tx-udp_tnl-segmentation", "on", "tx-udp_tnl-csum-segmentation", "on")
	}()
	before := counts(t, a, b)
	send(t, a.Ctrs["av"], b.Ctrs["bv"], 16<<20)
	d := counts(t, a, b).sub(before)
	t.Logf("VXLAN a->b, uplink without tunnel segmentation offload: %+v", d)
	if d.encap < 100 || d.decap < 1000 {
		t.Errorf("uplink without tunnel segmentation offload: %+v, want the packets encapsulated, segmented and taken apart by the programs", d)
	}
}

// open loads the path in the host and has the data plane put it on every
// endpoint, the uplink and the VXLAN device, as the daemon does at start.
func (h *host) open(t *testing.T) {
	testns.Do(t, h.NS, func() {
		p, err := bpfredirect.Open(nftpolicy.DefaultAcceptedCTMark)
		if err != nil {
			t.Fatal(err)
		}
		h.path = p
		t.Cleanup(func() { _ = p.Close() })
		h.DP.UseRedirect(p)
		if err := h.DP.SyncRedirect(h.IP); err != nil {
			t.Fatal(err)
		}
		if e, u := p.Attached(); e != len(h.Ctrs) || u != 2 {
			t.Fatalf("attached to %d endpoints and %d uplinks, want %d and 2", e, u, len(h.Ctrs))
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

type counters struct{ toEndpoint, decap, out, encap, passed uint64 }

func (c counters) redirected() uint64 { return c.toEndpoint + c.out }

func (c counters) sub(o counters) counters {
	return counters{c.toEndpoint - o.toEndpoint, c.decap - o.decap, c.out - o.out, c.encap - o.encap, c.passed - o.passed}
}

// counts sums both hosts' counters.
func counts(t *testing.T, hs ...*host) counters {
	var sum counters
	for _, h := range hs {
		c, err := h.path.Counters()
		if err != nil {
			t.Fatal(err)
		}
		sum = counters{sum.toEndpoint + c.ToEndpoint, sum.decap + c.Decapsulated, sum.out + c.Out, sum.encap + c.Encapsulated, sum.passed + c.Passed}
	}
	return sum
}

func nft(h *host, ruleset string) (string, error) {
	cmd := exec.Command("nsenter", "--net="+h.NS.Path(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var packetsRe = regexp.MustCompile(`packets (\d+)`)

// fwdPackets is the number of packets the host's forward hook has seen.
func fwdPackets(t *testing.T, h *host) uint64 {
	out, err := testns.Run(h.NS, "nft", "list", "counter", "inet", "bpftest", "hooked")
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
func send(t *testing.T, from, to testhost.Ctr, n int) {
	t.Helper()
	var ln net.Listener
	var err error
	testns.Do(t, to.NS, func() { ln, err = net.Listen("tcp4", to.IP.String()+":0") })
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
	testns.Do(t, from.NS, func() { conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second) })
	if err != nil {
		t.Fatalf("%s -> %s: %v", from.IP, to.IP, err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(data); err != nil {
		t.Errorf("%s -> %s: write: %v", from.IP, to.IP, err)
	}
	conn.Close()
	r := <-got
	if r.n != int64(n) || r.sum != sha256.Sum256(data) {
		t.Errorf("%s -> %s: %d of %d bytes arrived (intact: %v)", from.IP, to.IP, r.n, n, r.sum == sha256.Sum256(data))
	}
}

// dial tries to open a connection to port on to.
func dial(t *testing.T, from, to testhost.Ctr, port int) error {
	var err error
	var ln net.Listener
	testns.Do(t, to.NS, func() { ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", to.IP, port)) })
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	var c net.Conn
	testns.Do(t, from.NS, func() { c, err = net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second) })
	if err == nil {
		c.Close()
	}
	return err
}
