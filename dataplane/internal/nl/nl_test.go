package nl

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func TestIPNet(t *testing.T) {
	for _, s := range []string{"192.168.0.64/26", "10.1.0.5/32", "0.0.0.0/0", "fd00:1::40/122", "fd00::5/128"} {
		p := netip.MustParsePrefix(s)
		n := IPNet(p)
		if n.String() != s || len(n.IP) != p.Addr().BitLen()/8 {
			t.Errorf("IPNet(%s) = %s (%d-byte address)", s, n, len(n.IP))
		}
	}
}

func TestIsNotFound(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{unix.ENOENT, true},
		{unix.ESRCH, true},
		{unix.ENODEV, true},
		{fmt.Errorf("remove route: %w", unix.ESRCH), true},
		{netlink.LinkNotFoundError{}, true},
		{unix.EPERM, false},
		{unix.EEXIST, false},
		{errors.New("no such route"), false}, // only the errno counts, never the text
		{nil, false},
	}
	for _, tc := range tests {
		if got := IsNotFound(tc.err); got != tc.want {
			t.Errorf("IsNotFound(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestLinkHolding(t *testing.T) {
	n := testns.New(t)
	testns.Do(t, n, func() {
		for _, c := range []string{"link add up0 type veth peer name up0p", "link set up0 mtu 1400", "addr add 10.0.1.1/24 dev up0", "addr add fd00::1/64 dev up0 nodad"} {
			if out, err := exec.Command("ip", strings.Fields(c)...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", c, err, out)
			}
		}
		l, _ := netlink.LinkByName("up0")
		for _, a := range []string{"10.0.1.1", "fd00::1"} {
			idx, mtu, err := LinkHolding(netip.MustParseAddr(a))
			if err != nil || idx != l.Attrs().Index || mtu != 1400 {
				t.Errorf("LinkHolding(%s) = %d, %d, %v; want up0 (%d), 1400", a, idx, mtu, err, l.Attrs().Index)
			}
		}
		if _, _, err := LinkHolding(netip.MustParseAddr("10.0.1.2")); err == nil || !strings.Contains(err.Error(), "--ip") {
			t.Errorf("address on no interface: %v, want an error pointing at --ip", err)
		}
	})
}
