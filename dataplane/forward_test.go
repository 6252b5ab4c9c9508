package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// forwardTopo is a host namespace routing between two "containers", each
// behind a cali veth: a at 10.99.1.2, b at 10.99.2.2 listening on tcp/7.
func forwardTopo(t *testing.T) (host, a ns.NetNS) {
	t.Helper()
	host, a, b := testns.New(t), testns.New(t), testns.New(t)
	for i, c := range []ns.NetNS{a, b} {
		hostName, peer := fmt.Sprintf("califwd%d", i), fmt.Sprintf("tmpfwd%d", i)
		testns.Do(t, host, func() {
			la := netlink.NewLinkAttrs()
			la.Name = hostName
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer}); err != nil {
				t.Fatal(err)
			}
			p, _ := netlink.LinkByName(peer)
			if err := netlink.LinkSetNsFd(p, int(c.Fd())); err != nil {
				t.Fatal(err)
			}
			l, _ := netlink.LinkByName(hostName)
			addr, _ := netlink.ParseAddr(fmt.Sprintf("10.99.%d.1/24", i+1))
			_ = netlink.AddrAdd(l, addr)
			_ = netlink.LinkSetUp(l)
			if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		testns.Do(t, c, func() {
			l, _ := netlink.LinkByName(peer)
			addr, _ := netlink.ParseAddr(fmt.Sprintf("10.99.%d.2/24", i+1))
			_ = netlink.AddrAdd(l, addr)
			_ = netlink.LinkSetUp(l)
			gw := net.ParseIP(fmt.Sprintf("10.99.%d.1", i+1))
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil {
				t.Fatal(err)
			}
		})
	}
	testns.Do(t, b, func() {
		l, err := net.Listen("tcp", "10.99.2.2:7")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	})
	return host, a
}

func reaches(t *testing.T, a ns.NetNS) bool {
	t.Helper()
	ok := false
	testns.Do(t, a, func() {
		c, err := net.DialTimeout("tcp", "10.99.2.2:7", 700*time.Millisecond)
		if err == nil {
			c.Close()
			ok = true
		}
	})
	return ok
}

func must(t *testing.T, n ns.NetNS, name string, args ...string) string {
	t.Helper()
	out, err := testns.Run(n, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// TestForwardingBackends: forwarding through a host works whichever
// firewall the host has: FORWARD policy DROP in iptables-nft, in
// iptables-legacy or both (a DROP left in the back end that is not the
// default still drops), or only nftables with Docker 29's kind of table
// and no iptables at all. Only our chain is added, in the back ends that
// need it; removing it (uninstall) leaves the policy and others' rules.
func TestForwardingBackends(t *testing.T) {
	testns.RequireRoot(t)
	for _, bin := range []string{"iptables-nft", "iptables-legacy", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing (packages iptables, nftables)", bin)
		}
	}
	tests := []struct {
		name string
		drop []string // back ends with FORWARD policy DROP
	}{
		{"iptables-nft DROP", []string{"iptables-nft"}},
		{"iptables-legacy DROP", []string{"iptables-legacy"}},
		{"both DROP", []string{"iptables-nft", "iptables-legacy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { forwardingWithDrop(t, tc.drop) })
	}
	t.Run("nftables only, no iptables", forwardingNftablesOnly)
}

// forwardingWithDrop: with FORWARD policy DROP in the back ends drop,
// EnsureForwarding makes forwarding pass with a jump to our chain in each
// (and only there); RemoveForwarding removes only ours.
func forwardingWithDrop(t *testing.T, drop []string) {
	host, a := forwardTopo(t)
	for _, ipt := range drop {
		must(t, host, ipt, "-A", "FORWARD", "-i", "lo", "-j", "ACCEPT") // someone else's rule
		must(t, host, ipt, "-P", "FORWARD", "DROP")
	}
	if reaches(t, a) {
		t.Fatal("forwarded traffic passed before our rules: the DROP policy is not in effect, the test proves nothing")
	}
	dp := New(nil, "fwd")
	var err error
	testns.Do(t, host, func() { err = dp.EnsureForwarding() })
	if err != nil {
		t.Fatal(err)
	}
	if !reaches(t, a) {
		t.Fatalf("no forwarding after EnsureForwarding with FORWARD DROP in %v", drop)
	}
	for _, ipt := range drop {
		if out := must(t, host, ipt, "-S", "FORWARD"); !strings.Contains(out, "-j "+ForwardChain) {
			t.Errorf("%s FORWARD has no jump to %s:\n%s", ipt, ForwardChain, out)
		}
	}
	if len(drop) == 1 && drop[0] == "iptables-nft" {
		if out := must(t, host, "iptables-legacy", "-S"); strings.Contains(out, ForwardChain) {
			t.Errorf("the legacy back end, FORWARD policy ACCEPT, got our chain:\n%s", out)
		}
	}
	testns.Do(t, host, func() { err = dp.RemoveForwarding() })
	if err != nil {
		t.Fatal(err)
	}
	for _, ipt := range drop {
		out := must(t, host, ipt, "-S")
		if strings.Contains(out, ForwardChain) {
			t.Errorf("%s still has %s after RemoveForwarding:\n%s", ipt, ForwardChain, out)
		}
		if !strings.Contains(out, "-P FORWARD DROP") || !strings.Contains(out, "-A FORWARD -i lo -j ACCEPT") {
			t.Errorf("%s: RemoveForwarding changed what is not ours:\n%s", ipt, out)
		}
	}
	if reaches(t, a) {
		t.Error("forwarding still passes after our rules were removed")
	}
}

// forwardingNftablesOnly: on a host with Docker 29's nftables table and no
// iptables, EnsureForwarding says so and forwarding passes; an admin's
// forward chain with policy drop is named by ForeignForwardDrops.
func forwardingNftablesOnly(t *testing.T) {
	host, a := forwardTopo(t)
	// Docker 29's nftables firewall: its own table, a forward chain
	// with policy accept that drops only its bridges' traffic.
	must(t, host, "nft", "add table ip docker-bridges")
	must(t, host, "nft", "add chain ip docker-bridges filter-FORWARD { type filter hook forward priority filter; policy accept; }")
	must(t, host, "nft", `add rule ip docker-bridges filter-FORWARD oifname "docker0" drop`)
	empty := t.TempDir() // PATH without any iptables
	t.Setenv("PATH", empty)
	dp := New(nil, "fwd")
	var err error
	var drops []string
	testns.Do(t, host, func() {
		err = dp.EnsureForwarding()
		drops, _ = ForeignForwardDrops()
	})
	if !errors.Is(err, ErrNoIptables) {
		t.Fatalf("EnsureForwarding without iptables: %v, want ErrNoIptables", err)
	}
	if len(drops) != 0 {
		t.Errorf("ForeignForwardDrops = %v with only an accepting chain", drops)
	}
	if !reaches(t, a) {
		t.Fatal("no forwarding on an nftables-only host")
	}
	// A firewall of the admin's that drops forwarding: named, so the
	// daemon can say what to change.
	if out, err := exec.Command("/usr/sbin/nft", "--version").CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	nsRun := func(args string) {
		if out, err := exec.Command("/usr/bin/nsenter", "--net="+host.Path(), "/usr/sbin/nft", args).CombinedOutput(); err != nil {
			t.Fatalf("nft %s: %v %s", args, err, out)
		}
	}
	nsRun("add table inet hostfw")
	nsRun("add chain inet hostfw forward { type filter hook forward priority 0; policy drop; }")
	testns.Do(t, host, func() { drops, err = ForeignForwardDrops() })
	if err != nil || len(drops) != 1 || drops[0] != "inet hostfw chain forward" {
		t.Errorf("ForeignForwardDrops = %v, %v; want [inet hostfw chain forward]", drops, err)
	}
	if reaches(t, a) {
		t.Error("forwarding passed a forward chain with policy drop")
	}
}

func TestForwardJumpPlan(t *testing.T) {
	ours := "-A FORWARD -m comment --comment calico-libnetwork -j " + ForwardChain
	moved := `-A FORWARD -m comment --comment "calico-libnetwork:moved" -j ` + ForwardChain
	tests := []struct {
		name     string
		lines    []string
		wantOurs []int
		want     int
	}{
		{"empty", []string{"-P FORWARD ACCEPT"}, nil, 1},
		{"no Docker", []string{"-P FORWARD DROP", "-A FORWARD -i lo -j ACCEPT"}, nil, 1},
		{"Docker 20.10 after a bridge network was made", []string{"-P FORWARD DROP", "-A FORWARD -j DOCKER-USER",
			"-A FORWARD -j DOCKER-ISOLATION-STAGE-1", "-A FORWARD -o br-1 -j DOCKER", ours}, []int{4}, 2},
		{"Docker 28", []string{"-P FORWARD DROP", "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD", ours}, []int{3}, 2},
		{"in place", []string{"-P FORWARD DROP", "-A FORWARD -j DOCKER-USER", ours, "-A FORWARD -j DOCKER-FORWARD"}, []int{2}, 2},
		{"first, before DOCKER-USER", []string{"-P FORWARD DROP", ours, "-A FORWARD -j DOCKER-USER"}, []int{1}, 3},
		{"an admin's rule first", []string{"-P FORWARD DROP", "-A FORWARD -i eth9 -j DROP", "-A FORWARD -j DOCKER-USER", ours, ours}, []int{3, 4}, 3},
		{"someone else's jump to our chain is not ours", []string{"-A FORWARD -i x -j " + ForwardChain}, nil, 1},
		{"the moved spelling, as iptables quotes it", []string{"-P FORWARD DROP", "-A FORWARD -j DOCKER-USER", moved, ours}, []int{2, 3}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, _, want := forwardJumpPlan(tc.lines)
			if fmt.Sprint(got) != fmt.Sprint(tc.wantOurs) || want != tc.want {
				t.Errorf("forwardJumpPlan = %v, %d; want %v, %d", got, want, tc.wantOurs, tc.want)
			}
		})
	}
}

// TestForwardJumpAfterDockerUser: in a FORWARD laid out as Docker lays it
// out (its jump to DOCKER-USER first, per-bridge rules inserted at the
// top), our jump goes right after DOCKER-USER and goes back there when
// Docker, making another network, pushes it down; a user's DROP in
// DOCKER-USER still drops cali traffic; nothing of Docker's moves.
func TestForwardJumpAfterDockerUser(t *testing.T) {
	testns.RequireRoot(t)
	host, a := forwardTopo(t)
	ipt := "iptables-nft"
	if _, err := exec.LookPath(ipt); err != nil {
		t.Fatalf("%s is missing (package iptables)", ipt)
	}
	for _, args := range [][]string{
		{"-N", "DOCKER-USER"}, {"-A", "DOCKER-USER", "-j", "RETURN"},
		{"-N", "DOCKER-ISOLATION-STAGE-1"}, {"-A", "DOCKER-ISOLATION-STAGE-1", "-j", "RETURN"},
		{"-A", "FORWARD", "-j", "DOCKER-USER"}, {"-A", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
		{"-A", "FORWARD", "-o", "docker0", "-j", "ACCEPT"},
		{"-P", "FORWARD", "DROP"},
	} {
		must(t, host, ipt, args...)
	}
	dp := New(nil, "fwd")
	ensure := func() {
		t.Helper()
		var err error
		testns.Do(t, host, func() { err = dp.EnsureForwarding() })
		if err != nil {
			t.Fatal(err)
		}
	}
	forward := func() []string {
		t.Helper()
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(must(t, host, ipt, "-S", "FORWARD")), "\n") {
			if strings.HasPrefix(l, "-A ") {
				out = append(out, strings.TrimPrefix(l, "-A FORWARD "))
			}
		}
		return out
	}
	ourJump := "-m comment --comment calico-libnetwork -j " + ForwardChain
	ensure()
	want := []string{"-j DOCKER-USER", ourJump, "-j DOCKER-ISOLATION-STAGE-1", "-o docker0 -j ACCEPT"}
	if got := forward(); !slices.Equal(got, want) {
		t.Fatalf("FORWARD after EnsureForwarding:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !reaches(t, a) {
		t.Fatal("no forwarding with our jump after DOCKER-USER")
	}
	// Docker makes a bridge network: its rules go in at the top, then
	// DOCKER-USER is put first again.
	must(t, host, ipt, "-I", "FORWARD", "-o", "br-x", "-j", "ACCEPT")
	must(t, host, ipt, "-D", "FORWARD", "-j", "DOCKER-USER")
	must(t, host, ipt, "-I", "FORWARD", "-j", "DOCKER-USER")
	if got := forward(); got[1] == ourJump {
		t.Fatalf("the simulated network create left our jump second: the test proves nothing:\n%s", strings.Join(got, "\n"))
	}
	ensure()
	// Moved: the other spelling was put in place before the old was deleted.
	movedJump := `-m comment --comment "calico-libnetwork:moved" -j ` + ForwardChain
	want = []string{"-j DOCKER-USER", movedJump, "-o br-x -j ACCEPT", "-j DOCKER-ISOLATION-STAGE-1", "-o docker0 -j ACCEPT"}
	if got := forward(); !slices.Equal(got, want) {
		t.Fatalf("FORWARD after Docker pushed our jump down and EnsureForwarding:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A user's DROP in DOCKER-USER comes before us and wins.
	must(t, host, ipt, "-I", "DOCKER-USER", "-i", "cali+", "-j", "DROP")
	if reaches(t, a) {
		t.Error("a DROP in DOCKER-USER did not stop cali traffic: our jump ran first")
	}
	must(t, host, ipt, "-D", "DOCKER-USER", "-i", "cali+", "-j", "DROP")
	if !reaches(t, a) {
		t.Error("no forwarding after the user's DROP was removed")
	}
	ensure()
	if got := forward(); !slices.Equal(got, want) {
		t.Errorf("a second EnsureForwarding changed FORWARD:\n%s", strings.Join(got, "\n"))
	}
}
