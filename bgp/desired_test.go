package bgp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cluster is three nodes on 10.0.0.0/24 (and fd00::/64), each with a
// block, and BGP on with the given mesh setting.
func cluster(t *testing.T, mesh bool, rr ...string) *State {
	st := NewState()
	st.Put(api.BGPConfigKey, mustJSON(t, api.BGPConfig{NodeToNodeMeshEnabled: &mesh}))
	for i, name := range []string{"h1", "h2", "h3"} {
		n := api.Node{Name: name,
			IPv4Address: netip.MustParsePrefix(fmt.Sprintf("10.0.0.%d/24", i+1)),
			IPv6Address: netip.MustParsePrefix(fmt.Sprintf("fd00::%d/64", i+1))}
		for _, r := range rr {
			if r == name {
				n.RouteReflectorClusterID = "224.0.0.1"
			}
		}
		st.Put(api.NodeKey(name), mustJSON(t, n))
		b := netip.MustParsePrefix(fmt.Sprintf("192.168.%d.0/26", i+1))
		st.Put(api.BlockKey(b), mustJSON(t, api.Block{CIDR: b, Affinity: name}))
	}
	return st
}

func peerList(p Plan) string {
	var s []string
	for _, ps := range p.Peers {
		s = append(s, fmt.Sprintf("%s %s %s %d", ps.Addr, ps.Name, ps.Type, ps.ASN))
	}
	return strings.Join(s, "; ")
}

func TestDesiredPeers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state func(t *testing.T) *State
		host  string
		want  string
	}{
		{"mesh, both families", func(t *testing.T) *State { return cluster(t, true) }, "h1",
			"10.0.0.2 h2 node-to-node mesh 64512; 10.0.0.3 h3 node-to-node mesh 64512; fd00::2 h2 node-to-node mesh 64512; fd00::3 h3 node-to-node mesh 64512"},
		{"mesh off, no reflector: no cluster sessions", func(t *testing.T) *State { return cluster(t, false) }, "h1", ""},
		{"mesh off, h1 reflects: it peers with every client", func(t *testing.T) *State { return cluster(t, false, "h1") }, "h1",
			"10.0.0.2 h2 route reflector client 64512; 10.0.0.3 h3 route reflector client 64512; fd00::2 h2 route reflector client 64512; fd00::3 h3 route reflector client 64512"},
		{"mesh off, a client peers with the reflector only", func(t *testing.T) *State { return cluster(t, false, "h1") }, "h2",
			"10.0.0.1 h1 route reflector 64512; fd00::1 h1 route reflector 64512"},
		{"global peer, node AS", func(t *testing.T) *State {
			st := cluster(t, false)
			n := st.Nodes["h2"]
			n.ASNumber = 65002
			st.Put(api.NodeKey("h2"), mustJSON(t, n))
			st.Put(api.BGPPeerKey("tor"), mustJSON(t, api.BGPPeer{PeerIP: "10.0.0.254", ASNumber: 65000}))
			return st
		}, "h2", "10.0.0.254 tor global 65000"},
		{"node-specific and selected peers", func(t *testing.T) *State {
			st := cluster(t, false)
			n := st.Nodes["h3"]
			n.Labels = map[string]string{"rack": "b"}
			st.Put(api.NodeKey("h3"), mustJSON(t, n))
			st.Put(api.BGPPeerKey("only-h1"), mustJSON(t, api.BGPPeer{Node: "h1", PeerIP: "10.0.0.201", ASNumber: 65000}))
			st.Put(api.BGPPeerKey("rack-b"), mustJSON(t, api.BGPPeer{NodeSelector: "rack == 'b'", PeerIP: "10.0.0.202", ASNumber: 65000}))
			return st
		}, "h3", "10.0.0.202 rack-b node specific 65000"},
		{"an explicit peer replaces the mesh session to its address", func(t *testing.T) *State {
			st := cluster(t, true)
			st.Put(api.BGPPeerKey("h2-ebgp"), mustJSON(t, api.BGPPeer{PeerIP: "10.0.0.2", ASNumber: 65002}))
			return st
		}, "h1", "10.0.0.2 h2-ebgp global 65002; 10.0.0.3 h3 node-to-node mesh 64512; fd00::2 h2 node-to-node mesh 64512; fd00::3 h3 node-to-node mesh 64512"},
		{"a global peer that is this node is skipped", func(t *testing.T) *State {
			st := cluster(t, false, "h1")
			st.Put(api.BGPPeerKey("rr"), mustJSON(t, api.BGPPeer{PeerIP: "10.0.0.1", ASNumber: 64512}))
			return st
		}, "h1", "10.0.0.2 h2 route reflector client 64512; 10.0.0.3 h3 route reflector client 64512; fd00::2 h2 route reflector client 64512; fd00::3 h3 route reflector client 64512"},
		{"an invalid stored peer is left out", func(t *testing.T) *State {
			st := cluster(t, false)
			st.Put(api.BGPPeerKey("bad"), []byte(`{"peerIP":"nowhere","asNumber":1}`))
			return st
		}, "h1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.state(t).Desired(tc.host, "/data")
			if !p.Enabled {
				t.Fatalf("off: %s", p.Off)
			}
			if got := peerList(p); got != tc.want {
				t.Errorf("peers\n got: %s\nwant: %s", got, tc.want)
			}
		})
	}
}

func TestDesiredReflectorAndPassword(t *testing.T) {
	st := cluster(t, false, "h1")
	st.Put(api.BGPPeerKey("tor"), mustJSON(t, api.BGPPeer{PeerIP: "10.0.0.254:1179", ASNumber: 65000, KeepaliveTime: "1s", MaxRestartTime: "10s",
		Password: &api.BGPPassword{SecretKeyRef: &api.SecretKeyRef{Name: "s", Key: "k"}}}))
	p := st.Desired("h1", "/data")
	for _, ps := range p.Peers {
		switch {
		case ps.Name == "tor":
			if ps.Port != 1179 || ps.PasswordFile != "/data/bgp-secrets/s/k" || ps.Keepalive.Seconds() != 1 || ps.RestartTime.Seconds() != 10 {
				t.Errorf("tor %+v", ps)
			}
		case !ps.RRClient || ps.ClusterID != "224.0.0.1" || ps.Port != 179:
			t.Errorf("client %+v", ps)
		}
	}
}

func TestDesiredAnnouncements(t *testing.T) {
	st := cluster(t, true)
	b6 := netip.MustParsePrefix("fd80:1::/122")
	st.Put(api.BlockKey(b6), mustJSON(t, api.Block{CIDR: b6, Affinity: "h1"}))
	// h1 runs a container whose address was borrowed from h2's block, and
	// one in its own block (no extra route).
	st.Put(api.EndpointKey("h1", "e1"), mustJSON(t, api.Endpoint{ID: "e1", Host: "h1", IPv4: netip.MustParsePrefix("192.168.2.7/32")}))
	st.Put(api.EndpointKey("h1", "e2"), mustJSON(t, api.Endpoint{ID: "e2", Host: "h1", IPv4: netip.MustParsePrefix("192.168.1.5/32")}))
	st.Put(api.EndpointKey("h2", "e3"), mustJSON(t, api.Endpoint{ID: "e3", Host: "h2", IPv4: netip.MustParsePrefix("192.168.1.9/32")}))
	got := fmt.Sprint(st.Desired("h1", "").Announce)
	want := "[{192.168.1.0/26 10.0.0.1} {192.168.2.7/32 10.0.0.1} {fd80:1::/122 fd00::1}]"
	if got != want {
		t.Errorf("announce\n got %s\nwant %s", got, want)
	}
	// The block goes: so does its announcement.
	st.Delete(api.BlockKey(netip.MustParsePrefix("192.168.1.0/26")))
	st.Delete(api.BlockKey(b6))
	if got := fmt.Sprint(st.Desired("h1", "").Announce); got != "[{192.168.2.7/32 10.0.0.1}]" {
		t.Errorf("after the blocks went: %s", got)
	}
	// h2's announcement of its own block, and not of 192.168.1.9 (h1's block, h1 no longer holds it: no owner at all).
	if got := fmt.Sprint(st.Desired("h2", "").Announce); got != "[{192.168.2.0/26 10.0.0.2}]" {
		t.Errorf("h2: %s", got)
	}
}

func TestDesiredOff(t *testing.T) {
	st := NewState()
	if p := st.Desired("h1", ""); p.Enabled || !strings.Contains(p.Off, "no BGPConfiguration named default") {
		t.Errorf("no config: %+v", p)
	}
	st.Put(api.BGPConfigKey, []byte(`{"listenPort":99999}`))
	if p := st.Desired("h1", ""); p.Enabled || !strings.Contains(p.Off, "not valid: spec.listenPort 99999") {
		t.Errorf("bad config: %+v", p)
	}
	st.Put(api.BGPConfigKey, []byte(`{}`))
	st.Put(api.NodeKey("h1"), mustJSON(t, api.Node{Name: "h1", IPv6Address: netip.MustParsePrefix("fd00::1/64")}))
	if p := st.Desired("h1", ""); p.Enabled || !strings.Contains(p.Off, "no IPv4 address") {
		t.Errorf("v6 only: %+v", p)
	}
	st.Delete(api.BGPConfigKey)
	if p := st.Desired("h1", ""); p.Enabled {
		t.Errorf("deleted config: %+v", p)
	}
}
