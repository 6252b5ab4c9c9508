package api

import (
	"net/netip"
	"strings"
	"testing"
)

// TestKeys: every key the layout documents, built and parsed back.
func TestKeys(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/26")
	p6 := netip.MustParsePrefix("fd00:1::/122")
	ip := netip.MustParseAddr("10.0.0.7")
	tests := []struct {
		got, want string
	}{
		{PoolKey("default-ipv4-ippool"), "/calico/libnetwork/v1/pools/default-ipv4-ippool"},
		{BlockKey(p), "/calico/libnetwork/v1/blocks/10.0.0.0-26"},
		{BlockKey(p6), "/calico/libnetwork/v1/blocks/fd00:1::-122"},
		{AffinityKey("h1", p), "/calico/libnetwork/v1/affinities/h1/10.0.0.0-26"},
		{HostAffinitiesPrefix("h1"), "/calico/libnetwork/v1/affinities/h1/"},
		{HandleKey("h1", "docker.ee", ip), "/calico/libnetwork/v1/handles/h1/docker.ee/10.0.0.7"},
		{HandleRef{Handle: "docker.ee", IP: ip}.Key(), "/calico/libnetwork/v1/handles/docker.ee/10.0.0.7"},
		{HostHandlesPrefix("h1"), "/calico/libnetwork/v1/handles/h1/"},
		{NetworkKey("abc"), "/calico/libnetwork/v1/networks/abc"},
		{EndpointKey("h1", "ep"), "/calico/libnetwork/v1/endpoints/h1/ep"},
		{HostEndpointsPrefix("h1"), "/calico/libnetwork/v1/endpoints/h1/"},
		{NodeKey("h1"), "/calico/libnetwork/v1/nodes/h1"},
		{NodeClaimKey("h1"), "/calico/libnetwork/v1/nodeclaims/h1"},
		{SharedNetworkKey("net1"), "/calico/libnetwork/v1/sharednets/net1"},
		{ProfileKey("p"), "/calico/libnetwork/v1/profiles/p"},
		{NetworkPolicyKey("p"), "/calico/libnetwork/v1/networkpolicies/p"},
		{GlobalNetworkPolicyKey("p"), "/calico/libnetwork/v1/globalnetworkpolicies/p"},
		{IPAMConfigKey, "/calico/libnetwork/v1/config/ipam"},
		{FelixConfigKey, "/calico/libnetwork/v1/config/felix"},
		{DefaultsDoneKey, "/calico/libnetwork/v1/config/default-pools-created"},
		{GCLeaderKey, "/calico/libnetwork/v1/gc-leader"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("key %q, want %q", tc.got, tc.want)
		}
	}
	if c, ok := ParseBlockKey(BlockKey(p6)); !ok || c != p6 {
		t.Errorf("ParseBlockKey: %v %v", c, ok)
	}
	if h, c, ok := ParseAffinityKey(AffinityKey("h1", p)); !ok || h != "h1" || c != p {
		t.Errorf("ParseAffinityKey: %q %v %v", h, c, ok)
	}
	if h, id, ok := ParseEndpointKey(EndpointKey("h1", "ep")); !ok || h != "h1" || id != "ep" {
		t.Errorf("ParseEndpointKey: %q %q %v", h, id, ok)
	}
	for _, bad := range []string{EndpointsPrefix + "h1", EndpointsPrefix + "h1/", EndpointsPrefix + "/ep", NodesPrefix + "x"} {
		if _, _, ok := ParseEndpointKey(bad); ok {
			t.Errorf("ParseEndpointKey(%q) accepted", bad)
		}
	}
	if n, ok := ParseNodeKey(NodeKey("h1")); !ok || n != "h1" {
		t.Errorf("ParseNodeKey: %q %v", n, ok)
	}
	if _, ok := ParsePoolKey(NodeKey("h1")); ok {
		t.Error("ParsePoolKey accepted a node key")
	}
	if _, ok := ParseBlockKey(BlocksPrefix + "not-a-cidr"); ok {
		t.Error("ParseBlockKey accepted a key that names no CIDR")
	}
}

// FuzzBlockKey: a block's key segment holds no '/' (it would reach into
// another key) and parses back into the same block; any key parses
// without panicking.
func FuzzBlockKey(f *testing.F) {
	for _, s := range []string{"10.0.0.0/26", "fd00::/122", "fd00:1:2::-64", "::/0", "10.0.0.0-26", "-", "a/b/c", "", "::ffff:10.0.0.0/104"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseBlockKey(BlocksPrefix + s)
		_, _, _ = ParseAffinityKey(AffinityPrefix + s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return
		}
		key := BlockKey(p)
		if seg := strings.TrimPrefix(key, BlocksPrefix); strings.Contains(seg, "/") {
			t.Fatalf("BlockKey(%s) = %q holds a '/'", p, key)
		}
		if back, ok := ParseBlockKey(key); !ok || back != p {
			t.Fatalf("CIDR %s: key %q parses back as %v (%v)", p, key, back, ok)
		}
		if h, back, ok := ParseAffinityKey(AffinityKey("h", p)); !ok || h != "h" || back != p {
			t.Fatalf("CIDR %s: affinity key parses back as %q %v (%v)", p, h, back, ok)
		}
	})
}

// FuzzParseHandleKey: any key either is refused or parses into a reference
// whose own key parses back to it.
func FuzzParseHandleKey(f *testing.F) {
	for _, k := range []string{"h/docker.1/10.0.0.1", "docker.1/fd00::1", "a/b/c/d", "h//10.0.0.1", "h/x/notanip"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		ref, ok := ParseHandleKey(HandlesPrefix + rest)
		if !ok {
			return
		}
		if again, ok := ParseHandleKey(ref.Key()); !ok || again != ref {
			t.Fatalf("ParseHandleKey(%q) = %+v, but its key %q parses as %+v, %v", rest, ref, ref.Key(), again, ok)
		}
	})
}
