//go:build e2e

package multihost

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// The BGP scenario: the router namespace runs BIRD as the top-of-rack,
// peering with all three hosts' embedded speakers over eBGP; the outside
// namespace has no pool routes of its own and reaches the containers
// through what BIRD learned.
const (
	bgpPoolName = "bgp-pool"
	bgpPoolCIDR = "10.220.0.0/16"
	bgpNetName  = "bgpnet"
	torAS       = 65000
	// Host 3's session with the ToR is signed (TCP MD5) with this password.
	md5Password = "right-password"
	// Short timers: keepalive 2 s (hold 6 s), graceful restart 15 s.
	bgpKeepalive = 2
	bgpRestart   = 15
)

// bird is BIRD running in the router namespace.
type bird struct {
	tb   *Testbed
	sock string
	proc *Proc
}

func birdConfig(tb *Testbed) string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id %s;
log "%s" all;
protocol device { }
# What BIRD learns goes into the router's kernel: that is how the outside reaches the containers.
protocol kernel { ipv4 { import none; export all; }; }
template bgp host {
  local as %d;
  hold time %d; keepalive time %d;
  # Retry soon after a refused session (BIRD waits a minute or more by default).
  error wait time 1, 5; connect retry time 2; connect delay time 1;
  graceful restart on;
  ipv4 { import all; export none; };
}
`, RouterAOnA, filepath.Join(tb.Dir, "bird.log"), torAS, 3*bgpKeepalive, bgpKeepalive)
	for _, h := range tb.Hosts {
		local := RouterAOnA
		if h.Subnet == "B" {
			local = RouterOnB
		}
		password := ""
		if h.Subnet == "B" {
			password = fmt.Sprintf(" password \"%s\";", md5Password)
		}
		fmt.Fprintf(&b, "protocol bgp %s from host { source address %s; neighbor %s as %d;%s }\n", h.Name, local, h.IP(), api.DefaultASNumber, password)
	}
	return b.String()
}

func startBird(t *testing.T, tb *Testbed) *bird {
	t.Helper()
	conf := filepath.Join(tb.Dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConfig(tb)), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &bird{tb: tb, sock: filepath.Join(tb.Dir, "bird.ctl")}
	p, err := startProc("bird (top-of-rack)", filepath.Join(tb.Dir, "bird.out"), nil,
		"nsenter", "--net=/run/netns/"+tb.Router, "--", "bird", "-f", "-c", conf, "-s", b.sock)
	if err != nil {
		t.Fatal(err)
	}
	b.proc = p
	// The whole test's: BIRD outlives the step that starts it.
	tb.T.Cleanup(func() { _ = p.Stop(syscall.SIGTERM, 10*time.Second) })
	if err := Eventually(10*time.Second, 100*time.Millisecond, func() error { _, err := b.cli("show", "status"); return err }); err != nil {
		t.Fatalf("BIRD does not answer: %v\n%s", err, p.Log())
	}
	return b
}

// cli runs birdc against this BIRD.
func (b *bird) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", b.sock}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// route is BIRD's route for prefix: its next hop, and whether it is kept
// only because its sender is restarting (stale); "" when it has none.
func (b *bird) route(prefix netip.Prefix) (via string, stale bool, err error) {
	out, err := b.cli("show", "route", prefix.String(), "all")
	if strings.Contains(out, "Network not found") {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	m := regexp.MustCompile(`via (\S+) on`).FindStringSubmatch(out)
	if m == nil {
		return "", false, nil
	}
	return m[1], strings.Contains(out, "stale"), nil
}

// established reports whether BIRD's session protocol is up.
func (b *bird) established(proto string) bool {
	out, err := b.cli("show", "protocols", proto)
	return err == nil && strings.Contains(out, "Established")
}

func (tb *Testbed) applyDoc(t *testing.T, name, doc string) {
	t.Helper()
	f := filepath.Join(tb.Dir, name+".yaml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := tb.Calicoctl(tb.Hosts[0], "apply", "-f", f)
	if err != nil {
		t.Fatalf("calicoctl apply -f %s:\n%s\n%v", f, doc, err)
	}
	t.Logf("calicoctl apply -f %s.yaml: %s", name, strings.TrimSpace(out))
}

// nodeStatus is `calicoctl node status` on h.
func (h *Host) nodeStatus() (string, error) {
	return h.tb.Calicoctl(h, "node", "status", "--plugin-dir", h.PluginDir, "--nodename", h.Name)
}

const bgpTimers = "keepaliveTime: 2s\n  maxRestartTime: 15s"

// torHost3 is host 3's BGPPeer with the ToR (on subnet B), signed with the
// password in bgp-secrets/bgp/<key>.
func torHost3(h3 *Host, as int, key string) string {
	return fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-host3}
spec:
  node: %s
  peerIP: %s
  asNumber: %d
  password: {secretKeyRef: {name: bgp, key: %s}}
  %s
`, h3.Name, RouterOnB, as, key, bgpTimers)
}

type bgpScenario struct {
	tb   *Testbed
	bird *bird
	cs   []*Container // one per host
}

// TestBGP is the BGP scenario against BIRD (see the constants above).
func TestBGP(t *testing.T) {
	begin(t)
	started := time.Now()
	CheckPrereqs(t, [2]string{"bird", "bird2"}, [2]string{"birdc", "bird2"})
	tb := New(t, Options{LogLevel: "info"})
	if tb.ctl == "" {
		t.Fatal("calicoctl did not build: the BGP resources are applied with it")
	}
	s := &bgpScenario{tb: tb}
	st := newSteps(t, started)
	st.run("BIRD and the BGP resources", s.peerWithBird)
	st.run("every block in BIRD, host as next hop", s.blocksInBird)
	st.run("outside reaches every container without NAT", s.outsideReaches)
	st.run("node status shows the sessions", s.nodeStatusShows)
	st.run("learned routes behind the route sync's, carrying traffic without it", s.learnedRoutes)
	st.run("wrong AS and wrong password reported, nothing else breaks", s.misconfiguredPeers)
	st.run("block claimed to route in BIRD, beside the etcd route sync", s.measureConvergence)
	st.run("route reflector with the mesh off", s.routeReflector)
	st.run("kill -9: graceful restart keeps forwarding", s.killRestart)
	st.run("stopped for good: BIRD withdraws after the restart time", s.stoppedForGood)
	st.run("BGP off: the learned routes go, the route sync's stay", s.bgpOff)
}

func (s *bgpScenario) peerWithBird(t *testing.T) {
	tb := s.tb
	s.bird = startBird(t, tb)
	tb.CreatePool(t, api.IPPool{Name: bgpPoolName, CIDR: bgpPoolCIDR, BlockSize: 26, VXLANMode: api.EncapNever, IPIPMode: api.EncapNever, NATOutgoing: false})
	// Labels pick the ToR session by rack: hosts 1 and 2 are on subnet A.
	var nodes strings.Builder
	for _, h := range tb.Hosts {
		rack := "a"
		if h.Subnet == "B" {
			rack = "b"
		}
		fmt.Fprintf(&nodes, "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: %s, labels: {rack: %s}}\nspec: {ipv4Address: %s}\n", h.Name, rack, h.Addr)
	}
	tb.applyDoc(t, "bgp-nodes", nodes.String())
	h3 := tb.Hosts[2]
	for key, pw := range map[string]string{"tor": md5Password, "wrong": "wrong-password"} {
		secret := filepath.Join(h3.DataDir, api.SecretsDir, "bgp", key)
		if err := os.MkdirAll(filepath.Dir(secret), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(secret, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tb.applyDoc(t, "bgp", fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {logSeverityScreen: Info, asNumber: %d}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor-rack-a}
spec:
  nodeSelector: rack == 'a'
  peerIP: %s
  asNumber: %d
  %s
---
%s`, api.DefaultASNumber, RouterAOnA, torAS, bgpTimers, torHost3(h3, torAS, "tor")))
	err := Eventually(60*time.Second, 500*time.Millisecond, func() error {
		for _, h := range tb.Hosts {
			if !s.bird.established(h.Name) {
				out, _ := s.bird.cli("show", "protocols")
				return fmt.Errorf("BIRD's session with %s is not established:\n%s", h.Name, out)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (s *bgpScenario) blocksInBird(t *testing.T) {
	tb := s.tb
	// Open: reached from anywhere (the default profile admits only the network's own endpoints).
	tb.Hosts[0].Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--subnet", bgpPoolCIDR, "-o", "open=true", bgpNetName)
	for _, h := range tb.Hosts {
		err := Eventually(20*time.Second, 200*time.Millisecond, func() error {
			ok, err := h.HasNetwork(bgpNetName, "calico")
			if err == nil && !ok {
				err = fmt.Errorf("%s has no network %s yet", h.Name, bgpNetName)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		s.cs = append(s.cs, h.Run(t, "bgp-"+h.Short, bgpNetName))
	}
	for _, c := range s.cs {
		blk := netip.PrefixFrom(c.IP, 26).Masked()
		err := Eventually(20*time.Second, 100*time.Millisecond, func() error {
			via, _, err := s.bird.route(blk)
			if err == nil && via != c.Host.IP().String() {
				err = fmt.Errorf("BIRD's route for %s (%s's block) is via %q, want %s", blk, c, via, c.Host.IP())
			}
			return err
		})
		if err != nil {
			out, _ := s.bird.cli("show", "route")
			t.Fatalf("%v\nBIRD's table:\n%s", err, out)
		}
	}
	out, _ := s.bird.cli("show", "route")
	t.Logf("BIRD's table:\n%s", out)
}

func (s *bgpScenario) outsideReaches(t *testing.T) {
	tb := s.tb
	bb := staticBusybox(t)
	for _, c := range s.cs {
		err := Eventually(15*time.Second, 300*time.Millisecond, func() error {
			_, err := NSExec(context.Background(), tb.Outside, bb, "ping", "-c", "1", "-W", "1", c.IP.String())
			return err
		})
		if err != nil {
			out, _ := NSExec(context.Background(), tb.Router, "ip", "route")
			t.Fatalf("outside cannot reach %s: %v\nrouter's routes:\n%s", c, err, out)
		}
		// What the outside sees as the sender is the container's own address.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		dump := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+tb.Outside, "--", "tcpdump", "-n", "-l", "-i", HostIfName, "-c", "1",
			fmt.Sprintf("icmp and src host %s", c.IP))
		var buf strings.Builder
		dump.Stdout, dump.Stderr = &buf, &buf
		if err := dump.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // tcpdump listening
		_, _ = c.ExecErr(10*time.Second, "ping", "-c", "3", "-W", "1", OutsideAddr)
		err = dump.Wait()
		cancel()
		if err != nil || !strings.Contains(buf.String(), c.IP.String()+" > "+OutsideAddr) {
			t.Fatalf("the outside did not see %s's pings come from %s (no NAT): %v\n%s", c, c.IP, err, buf.String())
		}
		t.Logf("outside <-> %s: reached, and it sees the container's own address", c)
	}
}

func (s *bgpScenario) nodeStatusShows(t *testing.T) {
	h1 := s.tb.Hosts[0]
	var out string
	err := Eventually(20*time.Second, 500*time.Millisecond, func() error {
		var err error
		out, err = h1.nodeStatus()
		for _, want := range []string{"IPv4 BGP status", "PEER ADDRESS", "node-to-node mesh", "node specific", "| up ", "Established",
			"IPv4 routes received", s.tb.Hosts[1].IP().String()} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("node status lacks %q (err %v)", want, err)
			}
		}
		return nil
	})
	t.Logf("calicoctl node status on %s:\n%s", h1.Name, out)
	if err != nil {
		t.Fatal(err)
	}
	// The speaker listens on the node's address only.
	ls, err := NSExec(context.Background(), h1.NetNS, "ss", "-Htln", "sport = :179")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(ls), "\n") {
		if !strings.Contains(l, h1.IP().String()+":179") {
			t.Errorf("%s listens for BGP beyond its address: %q", h1.Name, l)
		}
	}
	if strings.TrimSpace(ls) == "" {
		t.Errorf("%s does not listen on :179", h1.Name)
	}
}

// misconfiguredPeers gives host 3's ToR session a wrong AS, then a wrong
// password: each is reported in node status (and the AS in the log), the
// other sessions and the outside's reach are untouched, and putting it
// right brings the session back.
func (s *bgpScenario) misconfiguredPeers(t *testing.T) {
	tb := s.tb
	h3 := tb.Hosts[2]
	for _, c := range []struct {
		name, doc, want string
	}{
		{"wrong AS", torHost3(h3, 65099, "tor"), "bad peer AS"},
		{"wrong password", torHost3(h3, torAS, "wrong"), "password"},
	} {
		tb.applyDoc(t, "bgp-"+strings.ReplaceAll(c.name, " ", "-"), c.doc)
		var out string
		err := Eventually(30*time.Second, 500*time.Millisecond, func() error {
			var err error
			if out, err = h3.nodeStatus(); err != nil {
				return err
			}
			if r := statusRow(out, RouterOnB, "node specific"); strings.Contains(r, "Established") || !strings.Contains(r, c.want) {
				return fmt.Errorf("%s: the ToR's row is %q", c.name, r)
			}
			return nil
		})
		t.Logf("%s: calicoctl node status on %s:\n%s", c.name, h3.Name, out)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range tb.Hosts[:2] {
			if !s.bird.established(h.Name) {
				t.Errorf("%s: BIRD's session with %s went down", c.name, h.Name)
			}
		}
		if _, err := NSExec(context.Background(), tb.Outside, staticBusybox(t), "ping", "-c", "2", "-W", "1", s.cs[0].IP.String()); err != nil {
			t.Errorf("%s: the outside no longer reaches %s: %v", c.name, s.cs[0], err)
		}
	}
	if log := h3.DaemonLog(); !strings.Contains(log, "bad peer AS") {
		t.Errorf("%s's log does not say the AS is wrong", h3.Name)
	}
	tb.applyDoc(t, "bgp-fixed", torHost3(h3, torAS, "tor"))
	blk := netip.PrefixFrom(s.cs[2].IP, 26).Masked()
	err := Eventually(40*time.Second, 300*time.Millisecond, func() error {
		via, _, err := s.bird.route(blk)
		if err == nil && (!s.bird.established(h3.Name) || via != h3.IP().String()) {
			err = fmt.Errorf("after the fix BIRD's session with %s is not up or has no route for %s (via %q)", h3.Name, blk, via)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
