package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// bgpConfigStore is the BGPConfiguration named default, one record at
// api.BGPConfigKey. Unlike FelixConfiguration its absence means something:
// BGP is off until it is created.
var bgpConfigStore = singletonStore[api.BGPConfig, *api.BGPConfig]{
	kind: api.BGPConfigKind, name: api.BGPConfigName, key: api.BGPConfigKey,
	what:    "the cluster's BGP settings are the BGPConfiguration named default",
	absent:  "BGP is off (calicoctl apply a BGPConfiguration named default to turn it on)",
	strict:  api.DecodeStoredBGPConfig,
	deleted: "BGP is now off: every node closes its BGP sessions (routes between the hosts stay, from etcd)",
	columns: []string{"NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER", "LISTENPORT"},
	cells: func(c *api.BGPConfig) []string {
		return []string{c.LogSeverityScreen, strconv.FormatBool(c.MeshEnabled()), strconv.FormatUint(uint64(c.ASNumber), 10), strconv.Itoa(c.ListenPort)}
	},
}

// decodeStoredBGPPeer reads a BGPPeer record as the daemon does.
func decodeStoredBGPPeer(name string, raw []byte) (api.BGPPeer, error) {
	var p api.BGPPeer
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return api.BGPPeer{}, fmt.Errorf("decode BGPPeer %s: %w", name, err)
	}
	p.Name = name
	p.Normalize()
	return p, p.Validate()
}

var bgpPeerStore = recordStore[api.BGPPeer]{
	kind:     api.BGPPeerKind,
	prefix:   api.BGPPeersPrefix,
	keyOf:    api.BGPPeerKey,
	notFound: " (calicoctl get bgppeers lists them)",
	decode:   decodeStoredBGPPeer,
	wrap: func(p api.BGPPeer, name string) api.Resource {
		p.Name = name
		return &p
	},
	unwrap: func(r api.Resource) api.BGPPeer { return *r.(*api.BGPPeer) },
	hdr: func(bool) []string {
		return []string{"NAME", "PEERIP", "NODE", "ASN"}
	},
	cells: func(r api.Resource, _ bool) []string {
		p := r.(*api.BGPPeer)
		node := "(global)"
		switch {
		case p.Node != "":
			node = p.Node
		case p.NodeSelector != "":
			node = p.NodeSelector
		}
		return []string{p.Name, p.PeerIP, node, strconv.FormatUint(uint64(p.ASNumber), 10)}
	},
}
