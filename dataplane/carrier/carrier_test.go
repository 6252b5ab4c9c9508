package carrier

import (
	"net/netip"
	"testing"
)

func TestBlockRouteString(t *testing.T) {
	tests := []struct {
		r    BlockRoute
		want string
	}{
		{BlockRoute{Dst: netip.MustParsePrefix("192.168.0.0/26"), Blackhole: true}, "blackhole 192.168.0.0/26"},
		{BlockRoute{Dst: netip.MustParsePrefix("192.168.0.64/26"), Via: netip.MustParseAddr("10.0.1.2"), Mode: ModeDirect}, "192.168.0.64/26 via 10.0.1.2 (direct)"},
		{BlockRoute{Dst: netip.MustParsePrefix("fd00:1::/122"), Via: netip.MustParseAddr("fd00::2"), Mode: ModeVXLAN}, "fd00:1::/122 via fd00::2 (vxlan)"},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestUnknownKindIsNeverAvailable(t *testing.T) {
	// No probe is made for a kind this package does not know, so this
	// needs no root.
	if KernelHasLinkKind("no-such-kind") {
		t.Error("an unknown link kind was reported as supported")
	}
}
