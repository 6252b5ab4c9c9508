package bgp

import (
	"fmt"
	"net/netip"
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

// FuzzInstallable: whatever a peer sends and whatever record lands, a
// route h1 installs is inside a pool, via another node's address on h1's
// subnet of the family, and never h1's own block or a prefix covering it.
func FuzzInstallable(f *testing.F) {
	keys := []string{api.PoolKey("direct"), api.PoolKey("x"), api.NodeKey("h2"), api.BlocksPrefix + "192.168.2.0-26", api.EndpointKey("h1", "e"), api.BGPConfigKey}
	f.Add(uint8(0), []byte(`{"name":"direct","cidr":"0.0.0.0/0","blockSize":26}`), "192.168.2.0/26", "10.0.0.2")
	f.Add(uint8(1), []byte(`{"name":"x","cidr":"fd00:1::/48","blockSize":122,"vxlanMode":"Always"}`), "fd00:1::40/122", "fd00::3")
	f.Add(uint8(2), []byte(`{"name":"h2","ipv4Address":"10.0.0.1/24"}`), "192.168.1.0/25", "10.0.0.1")
	f.Add(uint8(3), []byte(`{"cidr":"192.168.2.0/26","affinity":"h1"}`), "192.168.2.0/26", "10.0.0.2")
	f.Add(uint8(4), []byte(`{"id":"e","host":"h1","ipv4":"192.168.2.9/32"}`), "192.168.2.9/32", "10.0.0.2")
	f.Add(uint8(5), []byte(`{"nodeToNodeMeshEnabled":false}`), "192.168.3.0/26", "10.0.0.3")
	f.Fuzz(func(t *testing.T, k uint8, raw []byte, prefix, nextHop string) {
		pfx, err1 := netip.ParsePrefix(prefix)
		nh, err2 := netip.ParseAddr(nextHop)
		if err1 != nil || err2 != nil {
			return
		}
		st := learnedCluster(t, true)
		st.Put(keys[int(k)%len(keys)], raw)
		me := st.Nodes["h1"]
		for _, r := range st.Installable("h1", []Learned{{Prefix: pfx, NextHop: nh}}) {
			if _, ok := st.poolHolding(r.Dst); !ok {
				t.Fatalf("%v: outside every pool", r)
			}
			mine := me.IPv4Address
			if r.Dst.Addr().Is6() {
				mine = me.IPv6Address
			}
			if n, ok := st.nodeAt("h1", r.Via); !ok || n != r.Node || !mine.Masked().Contains(r.Via) || r.Via == mine.Addr() {
				t.Fatalf("%v: not via another node on h1's subnet %s", r, mine)
			}
			for b, owner := range st.Blocks {
				if owner == "h1" && r.Dst.Overlaps(b) && r.Dst.Bits() <= b.Bits() {
					t.Fatalf("%v: covers h1's own block %s", r, b)
				}
			}
		}
	})
}
