package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/direct"
)

// stubCarrier stands for an encapsulation whose kernel side is not under
// test here: the choices BlockRoutes makes around it are.
type stubCarrier struct {
	mode       carrier.Mode
	available  bool
	prepareErr error
	routeErr   error
	prepared   []netip.Addr
}

func (s *stubCarrier) Mode() carrier.Mode { return s.mode }
func (s *stubCarrier) Available() (bool, string) {
	if s.available {
		return true, ""
	}
	return false, string(s.mode) + " missing"
}
func (s *stubCarrier) Prepare(peers []netip.Addr) error { s.prepared = peers; return s.prepareErr }
func (s *stubCarrier) Remove() error                    { return nil }
func (s *stubCarrier) Overhead() int                    { return 0 }
func (s *stubCarrier) Route(r carrier.BlockRoute) (*netlink.Route, error) {
	if s.routeErr != nil {
		return nil, s.routeErr
	}
	return &netlink.Route{Dst: prefixToIPNet(r.Dst), Gw: r.Via.AsSlice(), LinkIndex: 42}, nil
}

func route(dst, via string, m carrier.Mode) carrier.BlockRoute {
	return carrier.BlockRoute{Dst: netip.MustParsePrefix(dst), Via: netip.MustParseAddr(via), Mode: m}
}

func TestPrepareCarriers(t *testing.T) {
	tests := []struct {
		name     string
		stub     stubCarrier
		want     []carrier.BlockRoute
		usable   bool
		skipped  string
		err      string
		prepared string
	}{
		{
			name:     "used and available: prepared once per peer, sorted",
			stub:     stubCarrier{mode: carrier.ModeVXLAN, available: true},
			want:     []carrier.BlockRoute{route("192.168.0.64/26", "10.0.2.3", carrier.ModeVXLAN), route("192.168.0.7/32", "10.0.2.3", carrier.ModeVXLAN), route("192.168.0.128/26", "10.0.2.2", carrier.ModeVXLAN)},
			usable:   true,
			prepared: "[10.0.2.2 10.0.2.3]",
		},
		{
			name:    "used but missing from the kernel: reported, not an error",
			stub:    stubCarrier{mode: carrier.ModeVXLAN},
			want:    []carrier.BlockRoute{route("192.168.0.64/26", "10.0.2.3", carrier.ModeVXLAN)},
			skipped: "vxlan missing",
		},
		{
			name: "preparing fails: an error naming the mode",
			stub: stubCarrier{mode: carrier.ModeVXLAN, available: true, prepareErr: errors.New("no uplink")},
			want: []carrier.BlockRoute{route("192.168.0.64/26", "10.0.2.3", carrier.ModeVXLAN)},
			err:  "prepare vxlan: no uplink",
		},
		{
			name:     "not used: neither probed nor prepared",
			stub:     stubCarrier{mode: carrier.ModeVXLAN},
			want:     []carrier.BlockRoute{route("192.168.0.64/26", "10.0.1.2", carrier.ModeDirect), {Dst: netip.MustParsePrefix("192.168.0.0/26"), Blackhole: true}},
			prepared: "[]",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := tc.stub
			b := &BlockRoutes{carriers: map[carrier.Mode]carrier.Carrier{carrier.ModeDirect: direct.Carrier{}, stub.mode: &stub}}
			usable, skipped, errs := b.prepare(peersByMode(tc.want))
			if !usable[carrier.ModeDirect] || usable[stub.mode] != tc.usable {
				t.Errorf("usable = %v, want direct and %s=%v", usable, stub.mode, tc.usable)
			}
			if got := strings.Join(skipped, "; "); got != tc.skipped {
				t.Errorf("skipped %q, want %q", got, tc.skipped)
			}
			if got := fmt.Sprint(errors.Join(errs...)); (tc.err == "" && len(errs) != 0) || (tc.err != "" && got != tc.err) {
				t.Errorf("errors %q, want %q", got, tc.err)
			}
			if tc.prepared != "" && fmt.Sprint(stub.prepared) != tc.prepared {
				t.Errorf("prepared with %v, want %s", stub.prepared, tc.prepared)
			}
		})
	}
}

func TestRenderRoutes(t *testing.T) {
	vx := &stubCarrier{mode: carrier.ModeVXLAN, available: true}
	ip := &stubCarrier{mode: carrier.ModeIPIP, available: true, routeErr: errors.New("tunl0 missing: IPIP device gone")}
	b := &BlockRoutes{carriers: map[carrier.Mode]carrier.Carrier{carrier.ModeDirect: direct.Carrier{}, carrier.ModeIPIP: ip, carrier.ModeVXLAN: vx}}
	want := []carrier.BlockRoute{
		{Dst: netip.MustParsePrefix("192.168.0.0/26"), Blackhole: true},
		route("192.168.0.64/26", "10.0.2.3", carrier.ModeVXLAN),
		route("192.168.0.128/26", "10.0.2.4", carrier.ModeIPIP),    // usable here, but the carrier cannot render it
		route("192.168.0.192/26", "10.0.2.5", carrier.Mode("gre")), // usable, no carrier
		route("192.168.1.0/26", "10.0.2.6", carrier.ModeVXLAN),
	}
	usable := map[carrier.Mode]bool{carrier.ModeDirect: true, carrier.ModeIPIP: true, "gre": true, carrier.ModeVXLAN: true}
	routes, skipped, errs := b.render(want, usable)
	var got []string
	for _, r := range routes {
		got = append(got, fmt.Sprintf("%s gw=%v link=%d blackhole=%v", r.Dst, r.Gw, r.LinkIndex, r.Type == unix.RTN_BLACKHOLE))
	}
	wantRoutes := "[192.168.0.0/26 gw=<nil> link=0 blackhole=true 192.168.0.64/26 gw=10.0.2.3 link=42 blackhole=false 192.168.1.0/26 gw=10.0.2.6 link=42 blackhole=false]"
	if fmt.Sprint(got) != wantRoutes {
		t.Errorf("routes:\n got  %v\n want %s", got, wantRoutes)
	}
	if fmt.Sprint(skipped) != "[192.168.0.192/26 via 10.0.2.5 (gre): no carrier]" {
		t.Errorf("skipped %v", skipped)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "IPIP") {
		t.Errorf("errors %v, want the IPIP carrier's", errs)
	}

	// A mode that could not be prepared: its routes are skipped, not errors.
	routes, skipped, errs = b.render(want[1:2], map[carrier.Mode]bool{carrier.ModeDirect: true})
	if len(routes) != 0 || fmt.Sprint(skipped) != "[192.168.0.64/26 via 10.0.2.3 (vxlan)]" || len(errs) != 0 {
		t.Errorf("unusable mode: routes %v skipped %v errs %v", routes, skipped, errs)
	}
}
