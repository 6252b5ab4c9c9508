package bgp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// learnedCluster is cluster() with pools (one direct, one VXLAN, one IPIP
// cross-subnet), a fourth node on another subnet and an endpoint of h1's
// borrowed from h3's block.
func learnedCluster(t *testing.T, mesh bool, rr ...string) *State {
	st := cluster(t, mesh, rr...)
	for _, p := range []api.IPPool{
		{Name: "direct", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: api.EncapNever, IPIPMode: api.EncapNever},
		{Name: "direct6", CIDR: "fd00:1::/48", BlockSize: 122},
		{Name: "vxlan", CIDR: "172.16.0.0/16", BlockSize: 26, VXLANMode: api.EncapAlways},
		{Name: "ipip-cross", CIDR: "172.17.0.0/16", BlockSize: 26, IPIPMode: api.EncapCrossSubnet},
	} {
		st.Put(api.PoolKey(p.Name), mustJSON(t, p))
	}
	st.Put(api.NodeKey("h4"), mustJSON(t, api.Node{Name: "h4", IPv4Address: netip.MustParsePrefix("10.0.9.4/24")}))
	for cidr, owner := range map[string]string{"192.168.4.0/26": "h4", "fd00:1::40/122": "h2", "172.16.0.0/26": "h2", "172.17.0.0/26": "h2"} {
		b := netip.MustParsePrefix(cidr)
		st.Put(api.BlockKey(b), mustJSON(t, api.Block{CIDR: b, Affinity: owner}))
	}
	st.Put(api.EndpointsPrefix+"h1/ep1", mustJSON(t, api.Endpoint{Host: "h1", IPv4: netip.MustParsePrefix("192.168.3.7/32")}))
	return st
}

// TestInstallable: which learned routes h1 puts in its kernel, and why
// not the others.
func TestInstallable(t *testing.T) {
	st := learnedCluster(t, true)
	me := st.Nodes["h1"]
	for _, tc := range []struct {
		name     string
		prefix   string
		nextHop  string
		node, no string // the node the route goes to, or why it is not used
	}{
		{"another node's block via it", "192.168.2.0/26", "10.0.0.2", "h2", ""},
		{"IPv6 block via the node's IPv6 address", "fd00:1::40/122", "fd00::2", "h2", ""},
		{"an address h2 borrowed from h3's block", "192.168.3.9/32", "10.0.0.2", "h2", ""},
		{"a block etcd does not know yet", "192.168.9.0/26", "10.0.0.3", "h3", ""},
		{"IPIP cross-subnet pool, same subnet: direct", "172.17.0.0/26", "10.0.0.2", "h2", ""},
		{"outside the pools", "10.99.0.0/24", "10.0.0.2", "", "not in a pool"},
		{"a default route", "0.0.0.0/0", "10.0.0.2", "", "not in a pool"},
		{"this node's own block", "192.168.1.0/26", "10.0.0.2", "", "this node's own block"},
		{"an aggregate over this node's block", "192.168.0.0/16", "10.0.0.2", "", "this node's own block"},
		{"an address of this node's endpoint", "192.168.3.7/32", "10.0.0.3", "", "this node's endpoint"},
		{"next hop a router, not a node", "192.168.2.0/26", "10.0.0.254", "", "no other node's address"},
		{"next hop this node", "192.168.2.0/26", "10.0.0.1", "", "no other node's address"},
		{"next hop a node on another subnet", "192.168.4.0/26", "10.0.9.4", "", "not on this node's subnet"},
		{"VXLAN pool: the route sync's", "172.16.0.0/26", "10.0.0.2", "", "encapsulated"},
		{"etcd says another node holds it", "192.168.3.0/26", "10.0.0.2", "", "is h3's block, not h2's"},
		{"IPv4 block via an IPv6 next hop", "192.168.2.0/26", "fd00::2", "", "not on this node's subnet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := Learned{Prefix: netip.MustParsePrefix(tc.prefix), NextHop: netip.MustParseAddr(tc.nextHop)}
			r, why := st.installable("h1", me, l)
			if tc.no != "" {
				if why == "" || !strings.Contains(why, tc.no) {
					t.Errorf("installable = %v, %q; want refused with %q", r, why, tc.no)
				}
				return
			}
			if why != "" || r.Node != tc.node || r.Via != l.NextHop || r.Dst != l.Prefix {
				t.Errorf("installable = %v, %q; want %s via %s (%s)", r, why, tc.prefix, tc.nextHop, tc.node)
			}
		})
	}
}

// TestInstallableLayouts: learned routes are used only while the cluster's
// own sessions carry them.
func TestInstallableLayouts(t *testing.T) {
	learned := []Learned{
		{netip.MustParsePrefix("192.168.3.0/26"), netip.MustParseAddr("10.0.0.3")},
		{netip.MustParsePrefix("192.168.2.0/26"), netip.MustParseAddr("10.0.0.2")},
		{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParseAddr("10.0.0.254")},
	}
	bgpOff := learnedCluster(t, true)
	bgpOff.Delete(api.BGPConfigKey)
	for _, tc := range []struct {
		name string
		st   *State
		want string
		off  string
	}{
		{"mesh on", learnedCluster(t, true), "192.168.2.0/26 via 10.0.0.2 (h2); 192.168.3.0/26 via 10.0.0.3 (h3)", ""},
		{"mesh off, h2 reflects", learnedCluster(t, false, "h2"), "192.168.2.0/26 via 10.0.0.2 (h2); 192.168.3.0/26 via 10.0.0.3 (h3)", ""},
		{"mesh off, no reflector", learnedCluster(t, false), "", "mesh is off and no node is a route reflector"},
		{"BGP off", bgpOff, "", "BGP is off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range tc.st.Installable("h1", learned) {
				got = append(got, r.String())
			}
			if strings.Join(got, "; ") != tc.want {
				t.Errorf("Installable = %q, want %q", strings.Join(got, "; "), tc.want)
			}
			ok, off := tc.st.UsesLearned("h1")
			if ok != (tc.off == "") || !strings.Contains(off, tc.off) {
				t.Errorf("UsesLearned = %v, %q; want off %q", ok, off, tc.off)
			}
		})
	}
}
