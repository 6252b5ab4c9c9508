package plugin

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// TestDefaultPoolAvoidsTheHostsNetworks: on a host (namespace) whose LAN
// is inside 192.168.0.0/16 the default IPv4 pool is the next free
// candidate, also when the clash is only an address or a route in another
// table; the log says why.
func TestDefaultPoolAvoidsTheHostsNetworks(t *testing.T) {
	tests := []struct {
		name  string
		setup [][]string
		want  string
		why   []string
	}{
		{"free host", nil, "192.168.0.0/16", []string{"clear of every address and route"}},
		{"LAN inside 192.168.0.0/16", [][]string{{"ip", "addr", "add", "192.168.1.5/24", "dev", "lan0"}},
			"172.16.0.0/16", []string{"192.168.0.0/16 overlaps 192.168.1.0/24"}},
		{"an address with no prefix route, a route in another table", [][]string{
			{"ip", "addr", "add", "192.168.7.7/32", "dev", "lan0"},
			{"ip", "route", "add", "172.16.40.0/24", "dev", "lan0", "table", "100"},
		}, "10.168.0.0/16", []string{"192.168.0.0/16 overlaps 192.168.7.7/32", "172.16.0.0/16 overlaps 172.16.40.0/24"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := testns.New(t)
			cmds := append([][]string{{"ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"}, {"ip", "link", "set", "lan0", "up"}}, tc.setup...)
			for _, c := range cmds {
				if out, err := testns.Run(n, c[0], c[1:]...); err != nil {
					t.Fatalf("%v: %v %s", c, err, out)
				}
			}
			var avoid []netip.Prefix
			testns.Do(t, n, func() {
				var err error
				if avoid, err = dataplane.HostPrefixes(); err != nil {
					t.Fatal(err)
				}
			})
			s := testetcd.Start(t)
			created, err := ipam.EnsureDefaultPools(context.Background(), s, avoid, nil)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			got := ""
			for _, p := range created {
				if p.Prefix().Addr().Is4() {
					got = p.CIDR
				}
				logDefaultPool(log, p, avoid)
			}
			if got != tc.want {
				t.Errorf("default IPv4 pool %s, want %s (host prefixes %v)", got, tc.want, avoid)
			}
			for _, w := range tc.why {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
		})
	}
	// Nothing free: a clear error.
	var all []netip.Prefix
	for _, c := range ipam.DefaultPoolV4Candidates {
		all = append(all, netip.MustParsePrefix(c))
	}
	if _, _, err := ipam.ChooseDefaultIPv4(all); err == nil || !strings.Contains(err.Error(), "NO_DEFAULT_POOLS=true") {
		t.Errorf("every candidate taken: %v", err)
	}
}
