package bgp

import (
	"fmt"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// FuzzDesired: whatever record lands under one of the speaker's prefixes,
// the plan is computed without panicking, the same twice, never peers with
// the node itself and never announces a route without a next hop.
func FuzzDesired(f *testing.F) {
	keys := []string{api.BGPConfigKey, api.BGPPeerKey("p"), api.NodeKey("h2"), api.BlocksPrefix + "10.9.0.0-26", api.EndpointKey("h1", "e")}
	f.Add(uint8(0), []byte(`{"nodeToNodeMeshEnabled":false}`))
	f.Add(uint8(1), []byte(`{"peerIP":"10.0.0.1","asNumber":1}`))
	f.Add(uint8(1), []byte(`{"peerIP":"10.0.0.254:1179","asNumber":"1.1","nodeSelector":"has(x)"}`))
	f.Add(uint8(2), []byte(`{"name":"h2","ipv4Address":"10.0.0.2/24","routeReflectorClusterID":"1.1.1.1"}`))
	f.Add(uint8(3), []byte(`{"cidr":"10.9.0.0/26","affinity":"h1"}`))
	f.Add(uint8(4), []byte(`{"id":"e","host":"h1","ipv4":"192.168.2.9/32"}`))
	f.Fuzz(func(t *testing.T, k uint8, raw []byte) {
		st := cluster(t, true, "h3")
		st.Put(keys[int(k)%len(keys)], raw)
		a, b := st.Desired("h1", "/d"), st.Desired("h1", "/d")
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("two plans differ:\n%v\n%v", a, b)
		}
		me := st.Nodes["h1"]
		for _, p := range a.Peers {
			if p.Addr == me.IPv4Address.Addr() || p.Addr == me.IPv6Address.Addr() {
				t.Fatalf("peers with itself: %+v", p)
			}
		}
		for _, an := range a.Announce {
			if !an.NextHop.IsValid() || an.NextHop.Is4() != an.Prefix.Addr().Is4() {
				t.Fatalf("announcement %+v", an)
			}
		}
	})
}
