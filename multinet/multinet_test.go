package multinet

import (
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func TestDesired(t *testing.T) {
	// netA is shared between hosts (ids a1 here, a2 on host-b); netB and
	// netC are local. m is on A and B, s on A only, v6 on C (IPv6 only).
	networks := map[string]api.Network{
		"a1": {ID: "a1", Name: "netA"}, "a2": {ID: "a2", Name: "netA"},
		"b1": {ID: "b1", Name: "netB"}, "c1": {ID: "c1", Name: "netC"},
	}
	ep := func(id, host, net, v4, v6, sb string, idx int) api.Endpoint {
		return api.Endpoint{ID: id, Host: host, NetworkID: net, IPv4: pfx(v4), IPv6: pfx(v6), HostIface: "cali" + id, SandboxKey: sb, GatewayIndex: idx}
	}
	endpoints := map[string]api.Endpoint{}
	for _, e := range []api.Endpoint{
		ep("mA", "host-a", "a1", "10.0.0.1/32", "", "/ns/m", 1),
		ep("mB", "host-a", "b1", "10.0.0.2/32", "fd00::2/128", "/ns/m", 2),
		ep("s", "host-a", "a1", "10.0.0.3/32", "", "/ns/s", 1),
		ep("rA", "host-b", "a2", "10.0.1.1/32", "", "/ns/r", 1), // remote peer on the shared network
		ep("rA2", "host-b", "a2", "10.0.1.2/32", "", "/ns/r2", 1),
		ep("pB", "host-a", "b1", "10.0.0.4/32", "fd00::4/128", "/ns/p", 1),
		ep("x", "host-b", "b9", "10.0.9.9/32", "", "/ns/x", 1), // a network nobody here is on
		ep("q6a", "host-a", "c1", "", "fd00::c1/128", "/ns/q", 1),
		ep("q6b", "host-a", "c1", "", "fd00::c2/128", "/ns/q", 2), // two interfaces of one network (odd, allowed)
		ep("mB2", "host-b", "b1", "10.0.0.8/32", "", "/ns/m", 2),  // another host's /ns/m is another sandbox
	} {
		endpoints[api.EndpointKey(e.Host, e.ID)] = e
	}
	got := Desired(endpoints, networks, "host-a")
	if _, ok := got["/ns/s"]; ok {
		t.Errorf("a container on one network got routes: %v", got["/ns/s"])
	}
	lines := func(key string) string {
		var out []string
		for _, r := range got[key] {
			out = append(out, r.String())
		}
		sort.Strings(out)
		return strings.Join(out, "\n")
	}
	want := strings.Join([]string{
		"10.0.0.3/32 via 169.254.1.1 (calimA)",
		"10.0.0.4/32 via 169.254.1.2 (calimB)",
		"10.0.0.8/32 via 169.254.1.2 (calimB)",
		"10.0.1.1/32 via 169.254.1.1 (calimA)",
		"10.0.1.2/32 via 169.254.1.1 (calimA)",
		"fd00::4/128 via fe80::ee:2 (calimB)",
	}, "\n")
	if g := lines("/ns/m"); g != want {
		t.Errorf("routes of m:\n%s\nwant:\n%s", g, want)
	}
	if g := lines("/ns/q"); g != "" {
		t.Errorf("both interfaces of q are on netC, which has no other endpoint: %s", g)
	}
	if len(got) != 2 {
		t.Errorf("sandboxes with routes: %d, want 2 (m, q)", len(got))
	}
}

func pfx(s string) netip.Prefix {
	p, err := api.ParseHostPrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}
