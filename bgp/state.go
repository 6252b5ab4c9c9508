package bgp

import (
	"encoding/json"
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// Prefixes are the records the speaker follows.
var Prefixes = []string{api.BGPConfigKey, api.BGPPeersPrefix, api.NodesPrefix, api.PoolsPrefix, api.BlocksPrefix, api.EndpointsPrefix}

// Put records the value of key. A BGPPeer that does not validate is left
// out (and reported by calicoctl get); a configuration that does not turns
// BGP off, with its reason, rather than guessing.
func (st *State) Put(key string, val []byte) {
	switch {
	case key == api.BGPConfigKey:
		c, err := api.DecodeStoredBGPConfig(val)
		st.Config, st.ConfigErr = &c, ""
		if err != nil {
			st.Config, st.ConfigErr = nil, err.Error()
		}
	case strings.HasPrefix(key, api.BGPPeersPrefix):
		name, _ := api.ParseBGPPeerKey(key)
		var p api.BGPPeer
		if json.Unmarshal(val, &p) != nil {
			delete(st.Peers, name)
			return
		}
		p.Name = name
		p.Normalize()
		if p.Validate() != nil {
			delete(st.Peers, name)
			return
		}
		st.Peers[name] = p
	case strings.HasPrefix(key, api.NodesPrefix):
		var n api.Node
		if json.Unmarshal(val, &n) == nil && n.Name != "" {
			st.Nodes[n.Name] = n
		}
	case strings.HasPrefix(key, api.PoolsPrefix):
		var p api.IPPool
		if json.Unmarshal(val, &p) != nil {
			delete(st.Pools, key)
			return
		}
		st.Pools[key] = p
	case strings.HasPrefix(key, api.BlocksPrefix):
		var b api.Block
		if json.Unmarshal(val, &b) == nil && b.CIDR.IsValid() {
			st.Blocks[b.CIDR] = b.Affinity
		}
	case strings.HasPrefix(key, api.EndpointsPrefix):
		var e api.Endpoint
		if json.Unmarshal(val, &e) == nil {
			st.Endpoints[key] = e
		}
	}
}

// Delete forgets key.
func (st *State) Delete(key string) {
	switch {
	case key == api.BGPConfigKey:
		st.Config, st.ConfigErr = nil, ""
	case strings.HasPrefix(key, api.BGPPeersPrefix):
		name, _ := api.ParseBGPPeerKey(key)
		delete(st.Peers, name)
	case strings.HasPrefix(key, api.NodesPrefix):
		if name, ok := api.ParseNodeKey(key); ok {
			delete(st.Nodes, name)
		}
	case strings.HasPrefix(key, api.PoolsPrefix):
		delete(st.Pools, key)
	case strings.HasPrefix(key, api.BlocksPrefix):
		if cidr, ok := api.ParseBlockKey(key); ok {
			delete(st.Blocks, cidr)
		}
	case strings.HasPrefix(key, api.EndpointsPrefix):
		delete(st.Endpoints, key)
	}
}
