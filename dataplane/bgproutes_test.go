package dataplane

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// fibMatch is the route the kernel uses for addr ("ip route get fibmatch").
func fibMatch(t *testing.T, addr string) string {
	t.Helper()
	out, err := exec.Command("ip", "route", "get", "fibmatch", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("ip route get fibmatch %s: %v: %s", addr, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestBGPRoutesApply: learned routes sit behind the route sync's routes to
// the same blocks, carry the traffic when those are deleted, are never
// installed via a next hop behind a router, and go (only they) when
// nothing is wanted.
func TestBGPRoutesApply(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "h1")
	testns.Do(t, host, func() {
		ipCmds(t, "link add uplink type veth peer name uplinkp", "addr add 10.0.1.1/24 dev uplink", "addr add fd00::1/64 dev uplink nodad",
			"link set uplink up", "link set uplinkp up", "link set lo up", "route add 10.0.9.0/24 via 10.0.1.254")
		blk4, blk6 := netip.MustParsePrefix("192.168.0.64/26"), netip.MustParsePrefix("fd00:1::40/122")
		h2, h2v6 := netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("fd00::2")
		sync := []carrier.BlockRoute{{Dst: blk4, Via: h2, Mode: carrier.ModeDirect}, {Dst: blk6, Via: h2v6, Mode: carrier.ModeDirect}}
		if _, err := dp.NewBlockRoutes().Apply(sync); err != nil {
			t.Fatal(err)
		}
		learned := append(sync[:2:2],
			carrier.BlockRoute{Dst: netip.MustParsePrefix("192.168.0.128/26"), Via: netip.MustParseAddr("10.0.9.3"), Mode: carrier.ModeDirect},
			carrier.BlockRoute{Dst: netip.MustParsePrefix("192.168.0.192/26"), Via: netip.MustParseAddr("10.0.2.3"), Mode: carrier.ModeVXLAN})
		res, err := ApplyBGPRoutes(learned)
		if err != nil {
			t.Fatal(err)
		}
		if res.Added != 2 || len(res.Skipped) != 2 {
			t.Errorf("result %+v: want 2 added, the routed next hop and the VXLAN one skipped", res)
		}
		got, _ := BGPRoutesInKernel()
		want := []string{"192.168.0.64/26 via 10.0.1.2 dev uplink metric 2000", "fd00:1::40/122 via fd00::2 dev uplink metric 2000"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("learned routes in the kernel:\n got  %v\n want %v", got, want)
		}
		// Both present: the route sync's wins.
		for _, a := range []string{"192.168.0.65", "fd00:1::41"} {
			if r := fibMatch(t, a); !strings.Contains(r, "proto 78") {
				t.Errorf("the kernel uses %q for %s, want the route sync's (proto 78)", r, a)
			}
		}
		if res, err := ApplyBGPRoutes(learned); err != nil || res.Added != 0 || res.Removed != 0 {
			t.Errorf("second apply = %+v, %v; want no change", res, err)
		}
		// The route sync's routes deleted by hand: the learned ones carry the traffic.
		ipCmds(t, "route del "+blk4.String()+" proto 78", "-6 route del "+blk6.String()+" proto 78")
		for _, a := range []string{"192.168.0.65", "fd00:1::41"} {
			if r := fibMatch(t, a); !strings.Contains(r, "proto 79") || !strings.Contains(r, "metric 2000") {
				t.Errorf("without the route sync's route the kernel uses %q for %s, want the learned one (proto 79 metric 2000)", r, a)
			}
		}
		// Nothing learned any more: only ours go.
		ipCmds(t, "route add "+blk4.String()+" via 10.0.1.2 proto static metric 5")
		if res, err := ApplyBGPRoutes(nil); err != nil || res.Removed != 2 {
			t.Errorf("empty apply = %+v, %v; want 2 removed", res, err)
		}
		if got, _ := BGPRoutesInKernel(); len(got) != 0 {
			t.Errorf("learned routes left: %v", got)
		}
		if r := fibMatch(t, "192.168.0.65"); !strings.Contains(r, "proto static") {
			t.Errorf("someone else's route to the block is gone: the kernel uses %q", r)
		}
	})
}
