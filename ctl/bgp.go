package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// bgpConfigStore is the BGPConfiguration named default, one record at
// api.BGPConfigKey. Unlike FelixConfiguration its absence means something:
// BGP is off until it is created.
type bgpConfigStore struct{}

func checkBGPConfigName(name string) error {
	if name != api.BGPConfigName {
		return api.Mark(datastore.ErrNotFound, "BGPConfiguration %q does not exist: the cluster's BGP settings are the BGPConfiguration named default", name)
	}
	return nil
}

func (bgpConfigStore) get(ctx context.Context, s *datastore.Store, name string) (api.Object, error) {
	if err := checkBGPConfigName(name); err != nil {
		return api.Object{}, err
	}
	it, err := datastore.GetRaw(ctx, s, api.BGPConfigKey)
	if errors.Is(err, datastore.ErrNotFound) {
		return api.Object{}, api.Mark(datastore.ErrNotFound, "BGPConfiguration %q does not exist: BGP is off (calicoctl apply a BGPConfiguration named default to turn it on)", name)
	}
	if err != nil {
		return api.Object{}, err
	}
	o := api.Object{ResourceVersion: rvString(it.ModRevision)}
	c, err := api.DecodeStoredBGPConfig(it.Value)
	if err != nil {
		_ = json.Unmarshal(it.Value, &c)
		o.Invalid = err.Error()
	}
	o.Resource = &c
	return o, nil
}

func (st bgpConfigStore) list(ctx context.Context, s *datastore.Store) ([]api.Object, error) {
	o, err := st.get(ctx, s, api.BGPConfigName)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []api.Object{o}, nil
}

func (bgpConfigStore) put(ctx context.Context, s *datastore.Store, o api.Object, mode ipam.PutMode) (bool, error) {
	if err := checkBGPConfigName(o.Resource.ResourceName()); err != nil {
		return false, err
	}
	c := *o.Resource.(*api.BGPConfig)
	rv, err := parseRV(o)
	if err != nil {
		return false, err
	}
	if mode == ipam.PutCreate {
		rv = 0
	}
	return casPut(ctx, s, api.BGPConfigKey, "BGPConfiguration", api.BGPConfigName, mode, rv, func(*api.BGPConfig) api.BGPConfig { return c })
}

func (bgpConfigStore) del(ctx context.Context, s *datastore.Store, o api.Object, _ bool) (string, error) {
	if err := checkBGPConfigName(o.Resource.ResourceName()); err != nil {
		return "", err
	}
	rv, err := parseRV(o)
	if err != nil {
		return "", err
	}
	if err := casDelete(ctx, s, api.BGPConfigKey, "BGPConfiguration", api.BGPConfigName, rv); err != nil {
		return "", err
	}
	return "BGP is now off: every node closes its BGP sessions (routes between the hosts stay, from etcd)", nil
}

func (bgpConfigStore) header(bool) []string {
	return []string{"NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER", "LISTENPORT"}
}

func (bgpConfigStore) row(o api.Object, _ bool, _ time.Time) []string {
	c := o.Resource.(*api.BGPConfig)
	return []string{api.BGPConfigName, c.LogSeverityScreen, strconv.FormatBool(c.MeshEnabled()), strconv.FormatUint(uint64(c.ASNumber), 10), strconv.Itoa(c.ListenPort)}
}

func (bgpConfigStore) nameOnly(name string) api.Object {
	if name != api.BGPConfigName {
		return api.Object{Resource: namedBGPConfig(name)}
	}
	return api.Object{Resource: &api.BGPConfig{}}
}

// namedBGPConfig is a BGPConfiguration with a wrong name, so that the store
// can say there is no such thing.
type namedBGPConfig string

func (n namedBGPConfig) ResourceKind() *api.Kind { return api.BGPConfigKind }
func (n namedBGPConfig) ResourceName() string    { return string(n) }
func (n namedBGPConfig) Normalize()              {}
func (n namedBGPConfig) Validate() error         { return nil }

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
