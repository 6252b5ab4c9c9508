package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// The IPv6 session test: BIRD in one namespace, the speaker in another
// (the test binary run again inside it: a GoBGP server listens in the
// namespace of whichever thread opens its socket, so the whole process
// must be in the node's namespace), one veth between them, ULA addresses.
const (
	v6ChildEnv  = "CALICO_BGP_IPV6_CHILD" // set in the re-run test binary: the BIRD control socket
	v6Node      = "fd00:6::1"
	v6Bird      = "fd00:6::2"
	v6OurBlock  = "fd00:10::/122"
	v6BirdBlock = "fd00:20::40/122"
)

// TestIPv6SessionWithBIRD: the speaker and BIRD peer over IPv6 (MP-BGP,
// IPv6 unicast): BIRD learns this node's IPv6 block with the node's IPv6
// address as next hop, the speaker learns BIRD's, the learned route of a
// node's block becomes a kernel route (protocol 79), and a withdrawn block
// leaves BIRD's table.
func TestIPv6SessionWithBIRD(t *testing.T) {
	if sock := os.Getenv(v6ChildEnv); sock != "" {
		ipv6Child(t, sock)
		return
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`protocol static { ipv6; route %s blackhole; }
protocol bgp node {
  local %s as 65000;
  neighbor %s as %d;
  hold time 6; keepalive time 2;
  error wait time 1, 5; connect retry time 1; connect delay time 1;
  ipv6 { import all; export all; };
}
`, v6BirdBlock, v6Bird, v6Node, api.DefaultASNumber)
	runBesideBIRD(t, "TestIPv6SessionWithBIRD", v6ChildEnv, dir, cfg)
}

// runBesideBIRD runs BIRD (with cfg) in a router namespace and the test
// named test again, inside a node namespace, with env set to BIRD's
// control socket; the namespaces share a veth: v0 in the node's
// (10.0.6.1/24, fd00:6::1/64), v1 in the router's (.2, ::2).
func runBesideBIRD(t *testing.T, test, env, dir, cfg string) {
	testns.RequireRoot(t)
	for _, bin := range []string{"bird", "birdc", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CALICO_REQUIRE_ROOT_TESTS") == "1" {
				t.Fatalf("%s is not installed (apt-get install bird2 util-linux)", bin)
			}
			t.Skipf("SKIPPED: %s is not installed (apt-get install bird2)", bin)
		}
	}
	node, router := testns.New(t), testns.New(t)
	testns.Do(t, node, func() {
		run(t, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
		l, err := netlink.LinkByName("v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetNsFd(l, int(router.Fd())); err != nil {
			t.Fatal(err)
		}
		run(t, "ip", "addr", "add", "10.0.6.1/24", "dev", "v0")
		run(t, "ip", "addr", "add", v6Node+"/64", "dev", "v0", "nodad")
		run(t, "ip", "link", "set", "v0", "up")
	})
	testns.Do(t, router, func() {
		run(t, "ip", "addr", "add", "10.0.6.2/24", "dev", "v1")
		run(t, "ip", "addr", "add", v6Bird+"/64", "dev", "v1", "nodad")
		run(t, "ip", "link", "set", "v1", "up")
	})
	sock := startBIRD(t, router.Path(), dir, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, "nsenter", "--net="+node.Path(), os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	child.Env = append(os.Environ(), env+"="+sock)
	out, err := child.CombinedOutput()
	t.Logf("the speaker, in the node's namespace:\n%s", out)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "bird.log"))
		t.Fatalf("the speaker's side failed: %v\nBIRD's log:\n%s", err, log)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// startBIRD runs BIRD with protocols cfg in the namespace at nsPath and
// returns its control socket.
func startBIRD(t *testing.T, nsPath, dir, protocols string) string {
	conf, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	cfg := fmt.Sprintf("router id 10.0.6.2;\nlog \"%s\" all;\nprotocol device { scan time 1; }\n%s", filepath.Join(dir, "bird.log"), protocols)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+nsPath, "bird", "-f", "-c", conf, "-s", sock)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := birdc(sock, "show", "status"); err == nil {
			return sock
		} else if time.Now().After(deadline) {
			t.Fatalf("BIRD does not answer: %v", err)
		}
	}
}

func birdc(sock string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// birdRoute is BIRD's next hop for prefix ("" none).
func birdRoute(sock, prefix string) string {
	out, err := birdc(sock, "show", "route", prefix)
	if err != nil || !strings.Contains(out, prefix) {
		return ""
	}
	if m := regexp.MustCompile(`\svia (\S+)`).FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

func waitFor(t *testing.T, what string, ok func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var good bool
		if good, last = ok(); good {
			return
		}
	}
	t.Fatalf("%s: %s", what, last)
}

// ipv6Child is the speaker's side, run inside the node's namespace.
func ipv6Child(t *testing.T, sock string) {
	s := NewSpeaker(t.TempDir(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t.Cleanup(s.Close)
	plan := Plan{Enabled: true, ASN: uint32(api.DefaultASNumber), RouterID: netip.MustParseAddr("10.0.6.1"),
		Listen: []netip.Addr{netip.MustParseAddr("10.0.6.1"), netip.MustParseAddr(v6Node)}, ListenPort: 179, LogLevel: "Info",
		Peers: []PeerSpec{{Name: "bird", Type: TypeGlobal, Addr: netip.MustParseAddr(v6Bird), Port: 179, ASN: 65000,
			Keepalive: 2 * time.Second, RestartTime: 10 * time.Second}},
		Announce: []Announcement{{Prefix: netip.MustParsePrefix(v6OurBlock), NextHop: netip.MustParseAddr(v6Node)}}}
	ctx := context.Background()
	if err := s.Apply(ctx, plan); err != nil {
		t.Fatal(err)
	}
	got := waitPeerAt(t, s, v6Bird, "the IPv6 session comes up and BIRD's block arrives", func(p api.BGPPeerStatus) bool {
		return p.State == "up" && p.Received == 1
	})
	if fmt.Sprint(got.Prefixes) != "["+v6BirdBlock+"]" || got.Info != "Established" {
		t.Errorf("the session with BIRD: %+v", got)
	}
	waitFor(t, "BIRD learns the node's IPv6 block via the node's IPv6 address", func() (bool, string) {
		via := birdRoute(sock, v6OurBlock)
		table, _ := birdc(sock, "show", "route", "all")
		proto, _ := birdc(sock, "show", "protocols", "all", "node")
		return via == v6Node, fmt.Sprintf("BIRD's route for %s is via %q; its table:\n%s\n%s", v6OurBlock, via, table, proto)
	})
	want := Learned{Prefix: netip.MustParsePrefix(v6BirdBlock), NextHop: netip.MustParseAddr(v6Bird)}
	if l := s.Learned(); fmt.Sprint(l) != fmt.Sprint([]Learned{want}) {
		t.Errorf("Learned = %v, want %v", l, []Learned{want})
	}
	learnedIntoKernel(t, s.Learned())
	// The block goes: BIRD's route goes with it.
	plan.Announce = nil
	if err := s.Apply(ctx, plan); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the withdrawal reaches BIRD", func() (bool, string) {
		via := birdRoute(sock, v6OurBlock)
		return via == "", "BIRD still routes " + v6OurBlock + " via " + via
	})
}

// learnedIntoKernel: were BIRD's address a node's and its block one of a
// pool's, the learned IPv6 route becomes a kernel route here.
func learnedIntoKernel(t *testing.T, learned []Learned) {
	st := NewState()
	st.Put(api.BGPConfigKey, mustJSON(t, api.BGPConfig{}))
	st.Put(api.PoolKey("v6"), mustJSON(t, api.IPPool{Name: "v6", CIDR: "fd00:20::/48", BlockSize: 122}))
	for name, a := range map[string][2]string{"node": {"10.0.6.1/24", v6Node + "/64"}, "other": {"10.0.6.2/24", v6Bird + "/64"}} {
		st.Put(api.NodeKey(name), mustJSON(t, api.Node{Name: name, IPv4Address: netip.MustParsePrefix(a[0]), IPv6Address: netip.MustParsePrefix(a[1])}))
	}
	routes := st.Installable("node", learned)
	if len(routes) != 1 {
		t.Fatalf("Installable(%v) = %v, want BIRD's block via it", learned, routes)
	}
	want := []carrier.BlockRoute{{Dst: routes[0].Dst, Via: routes[0].Via, Mode: carrier.ModeDirect}}
	if _, err := dataplane.ApplyBGPRoutes(want); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = dataplane.ApplyBGPRoutes(nil) })
	in, err := dataplane.BGPRoutesInKernel()
	if err != nil || fmt.Sprint(in) != "["+v6BirdBlock+" via "+v6Bird+" dev v0 metric 2000]" {
		t.Errorf("learned routes in the kernel: %v, %v", in, err)
	}
}
