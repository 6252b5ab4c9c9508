package ipip

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func TestCarrier(t *testing.T) {
	var c carrier.Carrier = Carrier{}
	if c.Mode() != carrier.ModeIPIP || c.Overhead() != 20 {
		t.Errorf("mode %s overhead %d, want ipip 20", c.Mode(), c.Overhead())
	}
	r := carrier.BlockRoute{Dst: netip.MustParsePrefix("192.168.0.64/26"), Via: netip.MustParseAddr("10.0.2.3"), Mode: carrier.ModeIPIP}
	if _, err := c.Route(r); err == nil || !strings.Contains(err.Error(), "vxlanMode") {
		t.Errorf("Route error = %v, want one pointing at vxlanMode", err)
	}
	if err := c.Prepare([]netip.Addr{r.Via}); err == nil || !strings.Contains(err.Error(), "vxlanMode") {
		t.Errorf("Prepare error = %v, want one pointing at vxlanMode", err)
	}
	if err := c.Remove(); err != nil {
		t.Error(err)
	}
}

// The probe creates a throwaway link, so it runs in a namespace of its own.
func TestAvailableSaysWhy(t *testing.T) {
	n := testns.New(t)
	testns.Do(t, n, func() {
		ok, why := Carrier{}.Available()
		if ok {
			t.Skip("SKIPPED: this kernel has ipip; the missing-support message cannot be shown here")
		}
		if !strings.Contains(why, "ipip") || !strings.Contains(why, "vxlanMode") {
			t.Errorf("reason %q does not say what is missing and what to use", why)
		}
	})
}
