package routing

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
)

func state() *State {
	st := newState()
	st.Nodes["h1"] = api.Node{Name: "h1", IPv4Address: netip.MustParsePrefix("10.0.1.1/24"), IPv6Address: netip.MustParsePrefix("fd00:1::1/64")}
	st.Nodes["h2"] = api.Node{Name: "h2", IPv4Address: netip.MustParsePrefix("10.0.1.2/24"), IPv6Address: netip.MustParsePrefix("fd00:1::2/64")}
	st.Nodes["h3"] = api.Node{Name: "h3", IPv4Address: netip.MustParsePrefix("10.0.2.3/24")}
	return st
}

func TestDesired(t *testing.T) {
	tests := []struct {
		name  string
		pools []api.IPPool
		setup func(*State)
		want  []string
	}{
		{
			name:  "own block blackholed, remote blocks direct",
			pools: []api.IPPool{{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: api.EncapNever, IPIPMode: api.EncapNever}},
			setup: func(st *State) {
				st.Blocks[netip.MustParsePrefix("192.168.0.0/26")] = "h1"
				st.Blocks[netip.MustParsePrefix("192.168.0.64/26")] = "h2"
				st.Blocks[netip.MustParsePrefix("192.168.0.128/26")] = "h3"
			},
			want: []string{"blackhole 192.168.0.0/26", "192.168.0.128/26 via 10.0.2.3 (direct)", "192.168.0.64/26 via 10.0.1.2 (direct)"},
		},
		{
			name:  "cross-subnet VXLAN only for the other subnet",
			pools: []api.IPPool{{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: api.EncapCrossSubnet, IPIPMode: api.EncapNever}},
			setup: func(st *State) {
				st.Blocks[netip.MustParsePrefix("192.168.0.64/26")] = "h2"
				st.Blocks[netip.MustParsePrefix("192.168.0.128/26")] = "h3"
			},
			want: []string{"192.168.0.128/26 via 10.0.2.3 (vxlan)", "192.168.0.64/26 via 10.0.1.2 (direct)"},
		},
		{
			name:  "VXLAN always",
			pools: []api.IPPool{{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: api.EncapAlways, IPIPMode: api.EncapNever}},
			setup: func(st *State) { st.Blocks[netip.MustParsePrefix("192.168.0.64/26")] = "h2" },
			want:  []string{"192.168.0.64/26 via 10.0.1.2 (vxlan)"},
		},
		{
			name:  "IPIP cross-subnet, both kernels with ipip",
			pools: []api.IPPool{{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: api.EncapNever, IPIPMode: api.EncapCrossSubnet}},
			setup: func(st *State) {
				withEncaps(st, "h1", "vxlan", "ipip")
				withEncaps(st, "h3", "vxlan", "ipip")
				st.Blocks[netip.MustParsePrefix("192.168.0.128/26")] = "h3"
			},
			want: []string{"192.168.0.128/26 via 10.0.2.3 (ipip)"},
		},
		{
			name:  "borrowed address routed to its holder on every other host",
			pools: []api.IPPool{{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: api.EncapNever, IPIPMode: api.EncapNever}},
			setup: func(st *State) {
				st.Blocks[netip.MustParsePrefix("192.168.0.0/26")] = "h1"
				st.Blocks[netip.MustParsePrefix("192.168.0.64/26")] = "h2"
				// h3 borrowed .70 from h2's block; h2 borrowed .5 from ours.
				st.Endpoints[api.EndpointKey("h3", "e1")] = api.Endpoint{ID: "e1", Host: "h3", IPv4: netip.MustParsePrefix("192.168.0.70/32")}
				st.Endpoints[api.EndpointKey("h2", "e2")] = api.Endpoint{ID: "e2", Host: "h2", IPv4: netip.MustParsePrefix("192.168.0.5/32")}
				// Our own endpoint needs nothing here (the veth route covers it).
				st.Endpoints[api.EndpointKey("h1", "e3")] = api.Endpoint{ID: "e3", Host: "h1", IPv4: netip.MustParsePrefix("192.168.0.66/32")}
			},
			want: []string{"blackhole 192.168.0.0/26", "192.168.0.5/32 via 10.0.1.2 (direct)", "192.168.0.64/26 via 10.0.1.2 (direct)", "192.168.0.70/32 via 10.0.2.3 (direct)"},
		},
		{
			name:  "IPv6 block via the node's IPv6 address; none for a node without one",
			pools: []api.IPPool{{Name: "p6", CIDR: "fd99::/48", BlockSize: 122, VXLANMode: api.EncapNever, IPIPMode: api.EncapNever}},
			setup: func(st *State) {
				st.Blocks[netip.MustParsePrefix("fd99::40/122")] = "h2"
				st.Blocks[netip.MustParsePrefix("fd99::80/122")] = "h3"
			},
			want: []string{"fd99::40/122 via fd00:1::2 (direct)"},
		},
		{
			name:  "a block of a host that has no node record gets no route",
			pools: []api.IPPool{{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26}},
			setup: func(st *State) { st.Blocks[netip.MustParsePrefix("192.168.1.0/26")] = "gone" },
			want:  nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := state()
			for _, p := range tc.pools {
				st.Pools[p.Name] = p
			}
			tc.setup(st)
			var got []string
			for _, r := range st.Desired("h1") {
				got = append(got, r.String())
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Desired:\n got  %v\n want %v", got, tc.want)
			}
		})
	}
}

func withEncaps(st *State, node string, encaps ...string) {
	n := st.Nodes[node]
	n.Encapsulations = append([]string{}, encaps...)
	st.Nodes[node] = n
}

// An IPIP pool between two nodes where either kernel lacks ipip is carried
// by VXLAN, with one note per pool and peer; the same subnet stays direct.
func TestIPIPFallback(t *testing.T) {
	tests := []struct {
		name       string
		h1, h3     []string // nil: a record older than the list
		want, note string
	}{
		{"both have ipip", []string{"vxlan", "ipip"}, []string{"vxlan", "ipip"}, "ipip", ""},
		{"the peer lacks ipip", []string{"vxlan", "ipip"}, []string{"vxlan"}, "vxlan",
			"pool walk asks for IPIP to node h3, but h3's kernel has no ipip: carried by VXLAN instead"},
		{"this node lacks ipip", []string{"vxlan"}, []string{"vxlan", "ipip"}, "vxlan",
			"pool walk asks for IPIP to node h3, but this node's kernel has no ipip: carried by VXLAN instead"},
		{"neither has ipip", []string{"vxlan"}, []string{"vxlan"}, "vxlan",
			"pool walk asks for IPIP to node h3, but neither this node's kernel nor h3's has ipip: carried by VXLAN instead"},
		{"a record older than the list: VXLAN, never IPIP", []string{"vxlan", "ipip"}, nil, "vxlan",
			"pool walk asks for IPIP to node h3, but h3's kernel has no ipip: carried by VXLAN instead"},
		{"no VXLAN either: left to IPIP, reported as not installed", []string{}, []string{"vxlan"}, "ipip", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := state()
			st.Pools["walk"] = api.IPPool{Name: "walk", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: api.EncapNever, IPIPMode: api.EncapCrossSubnet}
			withEncaps(st, "h1", tc.h1...)
			withEncaps(st, "h2", "vxlan")
			if tc.h3 != nil {
				withEncaps(st, "h3", tc.h3...)
			}
			st.Blocks[netip.MustParsePrefix("192.168.0.64/26")] = "h2"  // same subnet
			st.Blocks[netip.MustParsePrefix("192.168.0.128/26")] = "h3" // another subnet
			st.Blocks[netip.MustParsePrefix("192.168.0.192/26")] = "h3"
			routes, notes := st.DesiredWithNotes("h1")
			want := fmt.Sprintf("[192.168.0.128/26 via 10.0.2.3 (%s) 192.168.0.192/26 via 10.0.2.3 (%s) 192.168.0.64/26 via 10.0.1.2 (direct)]", tc.want, tc.want)
			if fmt.Sprint(routes) != want {
				t.Errorf("routes\n got  %v\n want %s", routes, want)
			}
			wantNotes := "[]"
			if tc.note != "" {
				wantNotes = "[" + tc.note + "]"
			}
			if fmt.Sprint(notes) != wantNotes {
				t.Errorf("notes\n got  %q\n want %s (one per pool and peer)", notes, wantNotes)
			}
		})
	}
}

func TestNATPools(t *testing.T) {
	st := newState()
	st.Pools["a"] = api.IPPool{Name: "a", CIDR: "10.10.0.0/16", NATOutgoing: true}
	st.Pools["b"] = api.IPPool{Name: "b", CIDR: "10.20.0.0/16"}
	st.Pools["c"] = api.IPPool{Name: "c", CIDR: "10.30.0.0/16", NATOutgoing: true, Disabled: true}
	nat, all := st.NAT()
	if fmt.Sprint(nat) != "[10.10.0.0/16 10.30.0.0/16]" || fmt.Sprint(all) != "[10.10.0.0/16 10.20.0.0/16 10.30.0.0/16]" {
		t.Fatalf("nat=%v all=%v", nat, all)
	}
}

func TestModeFor(t *testing.T) {
	never, always, cross := api.EncapNever, api.EncapAlways, api.EncapCrossSubnet
	tests := []struct {
		vxlan, ipip api.EncapMode
		same        bool
		want        carrier.Mode
	}{
		{never, never, true, carrier.ModeDirect},
		{never, never, false, carrier.ModeDirect}, // direct even across subnets: Apply reports it cannot
		{always, never, true, carrier.ModeVXLAN},
		{always, never, false, carrier.ModeVXLAN},
		{cross, never, true, carrier.ModeDirect},
		{cross, never, false, carrier.ModeVXLAN},
		{never, always, true, carrier.ModeIPIP},
		{never, cross, true, carrier.ModeDirect},
		{never, cross, false, carrier.ModeIPIP},
		{always, always, true, carrier.ModeVXLAN}, // VXLAN wins when both are on
		{cross, always, true, carrier.ModeIPIP},
		{"", "", false, carrier.ModeDirect},
	}
	for _, tc := range tests {
		st := state()
		st.Pools["p"] = api.IPPool{Name: "p", CIDR: "192.168.0.0/16", BlockSize: 26, VXLANMode: tc.vxlan, IPIPMode: tc.ipip}
		if got := st.modeFor(netip.MustParsePrefix("192.168.0.64/26"), tc.same); got != tc.want {
			t.Errorf("vxlan=%q ipip=%q sameSubnet=%v: %s, want %s", tc.vxlan, tc.ipip, tc.same, got, tc.want)
		}
	}
	// An address in no pool is reached directly.
	if got := state().modeFor(netip.MustParsePrefix("10.9.0.0/26"), false); got != carrier.ModeDirect {
		t.Errorf("no pool: %s, want direct", got)
	}
}

// The veth MTU follows what may carry a pool: an IPIP pool leaves VXLAN's
// room where some node lacks ipip, IPIP's where every node has it.
func TestEncapsulationForMTU(t *testing.T) {
	tests := []struct {
		name        string
		pool        api.IPPool
		h3          []string
		vxlan, ipip bool
	}{
		{"no encapsulation", api.IPPool{VXLANMode: api.EncapNever, IPIPMode: api.EncapNever}, []string{"vxlan", "ipip"}, false, false},
		{"VXLAN pool", api.IPPool{VXLANMode: api.EncapCrossSubnet, IPIPMode: api.EncapNever}, []string{"vxlan", "ipip"}, true, false},
		{"IPIP pool, every kernel with ipip", api.IPPool{VXLANMode: api.EncapNever, IPIPMode: api.EncapCrossSubnet}, []string{"vxlan", "ipip"}, false, true},
		{"IPIP pool, a node without ipip", api.IPPool{VXLANMode: api.EncapNever, IPIPMode: api.EncapAlways}, []string{"vxlan"}, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := state()
			for _, n := range []string{"h1", "h2"} {
				withEncaps(st, n, "vxlan", "ipip")
			}
			withEncaps(st, "h3", tc.h3...)
			tc.pool.Name, tc.pool.CIDR, tc.pool.BlockSize = "p", "192.168.0.0/16", 26
			st.Pools["p"] = tc.pool
			s := &Syncer{st: st}
			if s.UsesVXLAN() != tc.vxlan || s.UsesIPIP() != tc.ipip {
				t.Errorf("UsesVXLAN %v UsesIPIP %v, want %v %v", s.UsesVXLAN(), s.UsesIPIP(), tc.vxlan, tc.ipip)
			}
		})
	}
}
