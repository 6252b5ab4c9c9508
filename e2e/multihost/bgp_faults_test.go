//go:build e2e

package multihost

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// measureConvergence claims fresh blocks on host 1 (a container on a new
// subnet of the pool) and times, from the moment the block record appears
// in etcd, BIRD having the route and host 2's kernel having the etcd route
// sync's route. The figures go to BENCHMARKS.md; they are logged, not
// asserted beyond a sanity bound.
func (s *bgpScenario) measureConvergence(t *testing.T) {
	tb := s.tb
	h1, h2 := tb.Hosts[0], tb.Hosts[1]
	const rounds = 5
	var toBird, toSync []time.Duration
	for i := 0; i < rounds; i++ {
		subnet := netip.MustParsePrefix(fmt.Sprintf("10.220.%d.0/24", 100+i))
		nw := fmt.Sprintf("bgpm%d", i)
		h1.Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--subnet", subnet.String(), nw)
		done := make(chan struct{})
		var claimed, inBird, inKernel time.Time
		var blk netip.Prefix
		go func() {
			defer close(done)
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) && (inBird.IsZero() || inKernel.IsZero()) {
				if claimed.IsZero() {
					for j := 0; j < 4; j++ { // the first /26 blocks of the subnet
						b := netip.PrefixFrom(netip.AddrFrom4([4]byte{subnet.Addr().As4()[0], subnet.Addr().As4()[1], subnet.Addr().As4()[2], byte(64 * j)}), 26)
						var rec api.Block
						ctx, cancel := context.WithTimeout(context.Background(), time.Second)
						_, err := tb.Store.Get(ctx, api.BlockKey(b), &rec)
						cancel()
						if err == nil {
							claimed, blk = time.Now(), b
							break
						}
					}
				}
				if !claimed.IsZero() && inBird.IsZero() {
					if via, _, err := s.bird.route(blk); err == nil && via == h1.IP().String() {
						inBird = time.Now()
					}
				}
				if !claimed.IsZero() && inKernel.IsZero() {
					if out, err := NSExec(context.Background(), h2.NetNS, "ip", "route", "show", blk.String(), "proto", "78"); err == nil && strings.Contains(out, blk.String()) {
						inKernel = time.Now()
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		h1.Run(t, fmt.Sprintf("bgpm%d", i), nw)
		<-done
		if claimed.IsZero() || inBird.IsZero() || inKernel.IsZero() {
			t.Fatalf("round %d: block claimed %v, in BIRD %v, in %s's kernel %v", i, claimed, inBird, h2.Name, inKernel)
		}
		toBird, toSync = append(toBird, inBird.Sub(claimed)), append(toSync, inKernel.Sub(claimed))
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	mb, ms := med(toBird), med(toSync)
	t.Logf("BENCH bgp-convergence: block claimed -> route in BIRD's table: median %s %v; -> etcd route sync's route in %s's kernel: median %s %v; ratio BGP/etcd-sync %.2f (%d rounds, same run)",
		mb.Round(time.Millisecond), roundAll(toBird), h2.Name, ms.Round(time.Millisecond), roundAll(toSync), float64(mb)/float64(ms), rounds)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// statusRow is the first line of `calicoctl node status` on h that starts
// with the table cell addr and contains every one of want ("" none).
func statusRow(out, addr string, want ...string) string {
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "| "+addr+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			return l
		}
	}
	return ""
}

// routeReflector turns the mesh off and makes host 1 a route reflector:
// hosts 2 and 3 then peer only with it, and every host learns every
// other host's block.
func (s *bgpScenario) routeReflector(t *testing.T) {
	tb := s.tb
	h1, h2, h3 := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	tb.applyDoc(t, "bgp-rr", fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false, asNumber: %d}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: %s, labels: {rack: a}}
spec: {bgp: {ipv4Address: %s, routeReflectorClusterID: 224.0.0.1}}
`, api.DefaultASNumber, h1.Name, h1.Addr))
	blockOf := func(c *Container) string { return netip.PrefixFrom(c.IP, 26).Masked().String() }
	want := []struct {
		h      *Host
		peer   *Host
		typ    string
		learns []string
		notTo  *Host
	}{
		{h2, h1, "route reflector", []string{blockOf(s.cs[2])}, h3},
		{h3, h1, "route reflector", []string{blockOf(s.cs[1])}, h2},
		{h1, h2, "route reflector client", []string{blockOf(s.cs[1])}, nil},
		{h1, h3, "route reflector client", []string{blockOf(s.cs[2])}, nil},
	}
	for _, w := range want {
		var out string
		err := Eventually(40*time.Second, 500*time.Millisecond, func() error {
			var err error
			if out, err = w.h.nodeStatus(); err != nil {
				return err
			}
			if statusRow(out, w.peer.IP().String(), w.typ, "| up ") == "" {
				return fmt.Errorf("%s: no session up with %s as %s", w.h.Name, w.peer.Name, w.typ)
			}
			if statusRow(out, w.peer.IP().String(), w.learns...) == "" {
				return fmt.Errorf("%s has not learned %v from %s", w.h.Name, w.learns, w.peer.Name)
			}
			if w.notTo != nil && statusRow(out, w.notTo.IP().String()) != "" {
				return fmt.Errorf("%s still has a session with %s with the mesh off", w.h.Name, w.notTo.Name)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\ncalicoctl node status on %s:\n%s", err, w.h.Name, out)
		}
	}
	out, _ := h3.nodeStatus()
	t.Logf("calicoctl node status on %s (a route reflector client):\n%s", h3.Name, out)
	// A reflector layout carries the blocks too: host 2 keeps host 1's learned route.
	blk1 := blockOf(s.cs[0])
	err := Eventually(20*time.Second, 300*time.Millisecond, func() error {
		out, err := kernelRoutesFor(h2, netip.MustParsePrefix(blk1))
		if err == nil && !strings.Contains(out, "via "+h1.IP().String()+" dev "+HostIfName+" proto 79 "+learnedMetric) {
			err = fmt.Errorf("with route reflectors %s has no learned route for %s:\n%s", h2.Name, blk1, out)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// killRestart kills host 2's daemon with -9: BIRD keeps its block (stale)
// and the outside keeps reaching its container during the restart time;
// the daemon comes back, the session is re-established, the route fresh.
func (s *bgpScenario) killRestart(t *testing.T) {
	tb := s.tb
	h2, c2 := tb.Hosts[1], s.cs[1]
	blk := netip.PrefixFrom(c2.IP, 26).Masked()
	bb := staticBusybox(t)
	if err := h2.StopDaemon(syscall.SIGKILL); err != nil {
		t.Logf("kill -9 %s's daemon: %v", h2.Name, err)
	}
	killed := time.Now()
	sawStale := false
	for time.Since(killed) < 5*time.Second {
		via, stale, err := s.bird.route(blk)
		if err != nil || via != h2.IP().String() {
			t.Fatalf("%s after kill -9 of %s's daemon: BIRD's route is %q (%v): it was withdrawn despite graceful restart", time.Since(killed).Round(time.Millisecond), h2.Name, via, err)
		}
		sawStale = sawStale || stale
		if _, err := NSExec(context.Background(), tb.Outside, bb, "ping", "-c", "1", "-W", "1", c2.IP.String()); err != nil {
			t.Fatalf("%s after kill -9: the outside cannot reach %s: %v", time.Since(killed).Round(time.Millisecond), c2, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !sawStale {
		t.Logf("note: BIRD did not mark %s stale (the session may not have been seen down yet)", blk)
	}
	if err := h2.StartDaemon(); err != nil {
		t.Fatal(err)
	}
	err := Eventually(40*time.Second, 300*time.Millisecond, func() error {
		via, stale, err := s.bird.route(blk)
		switch {
		case err != nil:
			return err
		case !s.bird.established(h2.Name):
			return fmt.Errorf("BIRD's session with %s not re-established", h2.Name)
		case via != h2.IP().String() || stale:
			return fmt.Errorf("BIRD's route for %s: via %q, stale %v", blk, via, stale)
		}
		return nil
	})
	if err != nil {
		out, _ := s.bird.cli("show", "route", "all")
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s's daemon killed and restarted: BIRD kept %s throughout (stale seen: %v) and has it fresh again %s after the kill", h2.Name, blk, sawStale, time.Since(killed).Round(100*time.Millisecond))
}

// stoppedForGood kills host 3's daemon and leaves it down: BIRD keeps the
// block for the graceful restart time, then withdraws it.
func (s *bgpScenario) stoppedForGood(t *testing.T) {
	h3, c3 := s.tb.Hosts[2], s.cs[2]
	blk := netip.PrefixFrom(c3.IP, 26).Masked()
	if err := h3.StopDaemon(syscall.SIGKILL); err != nil {
		t.Logf("kill -9 %s's daemon: %v", h3.Name, err)
	}
	killed := time.Now()
	var gone time.Duration
	err := Eventually(time.Duration(bgpRestart+3*bgpKeepalive+15)*time.Second, 200*time.Millisecond, func() error {
		via, _, err := s.bird.route(blk)
		if err != nil {
			return err
		}
		if via != "" {
			return fmt.Errorf("BIRD still routes %s via %s", blk, via)
		}
		gone = time.Since(killed)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if gone < time.Duration(bgpRestart)*time.Second/2 {
		t.Errorf("BIRD withdrew %s %s after the kill: before the graceful restart time (%ds)", blk, gone.Round(100*time.Millisecond), bgpRestart)
	}
	t.Logf("%s's daemon stopped for good: BIRD withdrew %s %s after the kill (restart time %ds)", h3.Name, blk, gone.Round(100*time.Millisecond), bgpRestart)
}
