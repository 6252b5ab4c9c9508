package direct

import (
	"net/netip"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
)

func TestRoute(t *testing.T) {
	tests := []struct {
		name     string
		r        carrier.BlockRoute
		dst, via string
	}{
		{"IPv4 block", carrier.BlockRoute{Dst: netip.MustParsePrefix("192.168.0.64/26"), Via: netip.MustParseAddr("10.0.1.2"), Mode: carrier.ModeDirect}, "192.168.0.64/26", "10.0.1.2"},
		{"IPv4 borrowed address", carrier.BlockRoute{Dst: netip.MustParsePrefix("192.168.0.7/32"), Via: netip.MustParseAddr("10.0.1.3")}, "192.168.0.7/32", "10.0.1.3"},
		{"IPv6 block", carrier.BlockRoute{Dst: netip.MustParsePrefix("fd00:1::40/122"), Via: netip.MustParseAddr("fd00::2")}, "fd00:1::40/122", "fd00::2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nr, err := Carrier{}.Route(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if nr.Dst.String() != tc.dst || nr.Gw.String() != tc.via {
				t.Errorf("route = %s via %s, want %s via %s", nr.Dst, nr.Gw, tc.dst, tc.via)
			}
			// The device is left to the kernel's own lookup of the next hop,
			// and nothing is encapsulated or forced onlink.
			if nr.LinkIndex != 0 || nr.Flags != 0 || nr.Type != 0 {
				t.Errorf("route has link %d flags %d type %d, want none", nr.LinkIndex, nr.Flags, nr.Type)
			}
		})
	}
}

func TestCarrier(t *testing.T) {
	var c carrier.Carrier = Carrier{}
	if c.Mode() != carrier.ModeDirect || c.Overhead() != 0 {
		t.Errorf("mode %s overhead %d, want direct 0", c.Mode(), c.Overhead())
	}
	if ok, why := c.Available(); !ok {
		t.Errorf("direct not available: %s", why)
	}
	if err := c.Prepare([]netip.Addr{netip.MustParseAddr("10.0.1.2")}); err != nil {
		t.Error(err)
	}
	if err := c.Remove(); err != nil {
		t.Error(err)
	}
}
