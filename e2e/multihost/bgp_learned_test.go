//go:build e2e

package multihost

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// learnedMetric is the metric of the routes learned over BGP
// (dataplane.BGPRouteMetric).
const learnedMetric = "metric 2000"

// kernelRoutesFor is `ip route show prefix` on h: one line per route.
func kernelRoutesFor(h *Host, prefix netip.Prefix) (string, error) {
	return NSExec(context.Background(), h.NetNS, "ip", "route", "show", prefix.String())
}

// fibMatch is the route h's kernel uses for a ("ip route get fibmatch").
func fibMatch(h *Host, a netip.Addr) (string, error) {
	out, err := NSExec(context.Background(), h.NetNS, "ip", "route", "get", "fibmatch", a.String())
	return strings.TrimSpace(out), err
}

// learnedRoutes: with the mesh on, host 2's kernel holds host 1's block
// twice, the route sync's (protocol 78) and the one learned over BGP
// (protocol 79, metric 2000), and uses the route sync's; host 3's block
// (host 3 is behind the router) is not learned into the kernel. With the
// route sync's route deleted by hand, host 2's container still reaches
// host 1's directly, over the learned route.
func (s *bgpScenario) learnedRoutes(t *testing.T) {
	tb := s.tb
	h1, h2 := tb.Hosts[0], tb.Hosts[1]
	c1, c2 := s.cs[0], s.cs[1]
	blk1, blk3 := netip.PrefixFrom(c1.IP, 26).Masked(), netip.PrefixFrom(s.cs[2].IP, 26).Masked()
	var out string
	err := Eventually(20*time.Second, 200*time.Millisecond, func() error {
		var err error
		if out, err = kernelRoutesFor(h2, blk1); err != nil {
			return err
		}
		for _, want := range []string{"via " + h1.IP().String() + " dev " + HostIfName + " proto 78", "via " + h1.IP().String() + " dev " + HostIfName + " proto 79 " + learnedMetric} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("%s's routes for %s lack %q", h2.Name, blk1, want)
			}
		}
		return nil
	})
	t.Logf("ip route show %s on %s:\n%s", blk1, h2.Name, out)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := fibMatch(h2, c1.IP); err != nil || !strings.Contains(r, "proto 78") {
		t.Errorf("%s uses %q (%v) for %s: want the route sync's (proto 78) while it is there", h2.Name, r, err, c1)
	}
	if rs, _ := h2.RoutesWithProto(BGPRouteProto); strings.Contains(fmt.Sprint(rs), blk3.String()) {
		t.Errorf("%s installed %s (host 3's, via a router) from BGP: %v", h2.Name, blk3, rs)
	}
	if st, err := h2.nodeStatus(); err != nil || !strings.Contains(st, "learned routes in the kernel") || !strings.Contains(st, blk1.String()+" via "+h1.IP().String()) {
		t.Errorf("node status on %s does not list the learned route for %s (%v):\n%s", h2.Name, blk1, err, st)
	}
	// The route sync's route deleted by hand: the learned one carries the traffic.
	if _, err := NSExec(context.Background(), h2.NetNS, "ip", "route", "del", blk1.String(), "proto", "78"); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	r, err := fibMatch(h2, c1.IP)
	if err != nil || !strings.Contains(r, "proto 79") {
		t.Fatalf("with the route sync's route gone %s uses %q (%v) for %s: want the learned one (proto 79)", h2.Name, r, err, c1)
	}
	if rt, err := h2.RouteTo(c1.IP); err != nil || rt.Gw != h1.IP() {
		t.Fatalf("%s routes %s via %v (%v): want %s directly, not the router", h2.Name, c1, rt, err, h1.IP())
	}
	if _, err := c2.ExecErr(10*time.Second, "ping", "-c", "2", "-W", "1", c1.IP.String()); err != nil {
		t.Fatalf("%s cannot reach %s over the learned route: %v", c2, c1, err)
	}
	t.Logf("route sync's route for %s deleted on %s: the kernel uses %q and %s reaches %s (%s after the deletion)", blk1, h2.Name, r, c2, c1, time.Since(deleted).Round(time.Millisecond))
}

// bgpOff deletes the BGPConfiguration: the learned routes leave the
// running hosts' kernels, and host 2 has the route sync's route to host
// 1's block back (put there again after learnedRoutes deleted it).
func (s *bgpScenario) bgpOff(t *testing.T) {
	tb := s.tb
	h1, h2 := tb.Hosts[0], tb.Hosts[1]
	blk1 := netip.PrefixFrom(s.cs[0].IP, 26).Masked()
	if out, err := tb.Calicoctl(h1, "delete", "bgpconfiguration", "default"); err != nil {
		t.Fatalf("calicoctl delete bgpconfiguration default: %v\n%s", err, out)
	}
	for _, h := range []*Host{h1, h2} {
		err := Eventually(20*time.Second, 200*time.Millisecond, func() error {
			rs, err := h.RoutesWithProto(BGPRouteProto)
			if err == nil && len(rs) > 0 {
				err = fmt.Errorf("%s still has learned routes with BGP off: %v", h.Name, rs)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := Eventually(40*time.Second, 500*time.Millisecond, func() error {
		out, err := NSExec(context.Background(), h2.NetNS, "ip", "route", "show", blk1.String(), "proto", "78")
		if err == nil && !strings.Contains(out, blk1.String()) {
			err = fmt.Errorf("%s has no route sync route for %s", h2.Name, blk1)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.cs[1].ExecErr(10*time.Second, "ping", "-c", "1", "-W", "1", s.cs[0].IP.String()); err != nil {
		t.Errorf("with BGP off %s cannot reach %s: %v", s.cs[1], s.cs[0], err)
	}
}
