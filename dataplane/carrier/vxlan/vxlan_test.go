package vxlan

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
)

func TestVTEPMAC(t *testing.T) {
	tests := []struct{ ip, mac string }{
		{"10.0.1.1", "66:ee:0a:00:01:01"},
		{"192.168.255.254", "66:ee:c0:a8:ff:fe"},
		{"172.16.0.10", "66:ee:ac:10:00:0a"},
	}
	for _, tc := range tests {
		mac := VTEPMAC(netip.MustParseAddr(tc.ip))
		if mac.String() != tc.mac {
			t.Errorf("VTEPMAC(%s) = %s, want %s", tc.ip, mac, tc.mac)
		}
		// Locally administered (bit 1 of the first byte) and unicast (bit 0
		// clear), so it never collides with a vendor's MAC or looks multicast.
		if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
			t.Errorf("VTEPMAC(%s) = %s is not a locally administered unicast MAC", tc.ip, mac)
		}
	}
}

func TestCarrier(t *testing.T) {
	var c carrier.Carrier = New(netip.MustParseAddr("10.0.1.1"), 0, nil)
	// Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
	if c.Mode() != carrier.ModeVXLAN || c.Overhead() != 14+20+8+8 {
		t.Errorf("mode %s overhead %d, want vxlan 50", c.Mode(), c.Overhead())
	}
	if Port != 4789 || VNI != 4096 || Device != "vxlan.calico" {
		t.Errorf("port %d vni %d device %s differ from Calico's", Port, VNI, Device)
	}
}

func TestAvailableNeedsIPv4(t *testing.T) {
	for _, local := range []netip.Addr{{}, netip.MustParseAddr("fd00::1")} {
		ok, why := New(local, 0, nil).Available()
		if ok || !strings.Contains(why, "--ip") {
			t.Errorf("local %v: available=%v why=%q, want unavailable with a hint at --ip", local, ok, why)
		}
	}
}
