package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// kindStore is how calicoctl reads, writes and prints one kind. A new kind
// adds an api.Kind and one of these (a kind kept as one JSON record per
// name can use recordStore, as the policy kinds do).
type kindStore interface {
	get(ctx context.Context, s *datastore.Store, name string) (api.Object, error)
	list(ctx context.Context, s *datastore.Store) ([]api.Object, error)
	// put writes o; it reports whether it created the record.
	put(ctx context.Context, s *datastore.Store, o api.Object, mode ipam.PutMode) (bool, error)
	// del deletes the record o names; the string is a warning for the user.
	del(ctx context.Context, s *datastore.Store, o api.Object, force bool) (string, error)
	header(wide bool) []string
	row(o api.Object, wide bool, now time.Time) []string
}

var kindStores = map[*api.Kind]kindStore{
	api.IPPoolKind:     poolStore{},
	api.NodeKind:       nodeStore{},
	api.IPAMConfigKind: ipamConfigStore,
	// policy.go
	api.ProfileKind:             profileStore,
	api.NetworkPolicyKind:       networkPolicyStore,
	api.GlobalNetworkPolicyKind: globalNetworkPolicyStore,
	// felixconfig.go
	api.FelixConfigKind: felixConfigStore,
	// bgp.go
	api.BGPConfigKind: bgpConfigStore,
	api.BGPPeerKind:   bgpPeerStore,
}

func storeFor(k *api.Kind) kindStore {
	ks, ok := kindStores[k]
	if !ok {
		panic("calicoctl: no store for kind " + k.Name)
	}
	return ks
}

func parseRV(o api.Object) (int64, error) {
	if o.ResourceVersion == "" {
		return 0, nil
	}
	rv, err := strconv.ParseInt(o.ResourceVersion, 10, 64)
	if err != nil || rv <= 0 {
		return 0, fmt.Errorf("metadata.resourceVersion %q: give the number calicoctl get printed, or leave it out", o.ResourceVersion)
	}
	return rv, nil
}

func rvString(rev int64) string {
	if rev == 0 {
		return ""
	}
	return strconv.FormatInt(rev, 10)
}

// ---- IPPool ----

type poolStore struct{}

func (poolStore) get(ctx context.Context, s *datastore.Store, name string) (api.Object, error) {
	p, rev, err := ipam.GetPool(ctx, s, name)
	if err != nil {
		return api.Object{}, err
	}
	return api.Object{Resource: &p, ResourceVersion: rvString(rev)}, nil
}

func (poolStore) list(ctx context.Context, s *datastore.Store) ([]api.Object, error) {
	items, err := ipam.ListPoolItems(ctx, s)
	if err != nil {
		return nil, err
	}
	out := make([]api.Object, 0, len(items))
	for _, it := range items {
		p := it.Value
		out = append(out, api.Object{Resource: &p, ResourceVersion: rvString(it.ModRevision)})
	}
	return out, nil
}

// legacyName resolves a legacy pool that came without a name: an existing
// pool with its CIDR is that pool.
func legacyName(ctx context.Context, s *datastore.Store, o api.Object) (string, error) {
	p := o.Resource.(*api.IPPool)
	if !o.NameFromCIDR {
		return p.Name, nil
	}
	cur, _, err := ipam.GetPool(ctx, s, p.CIDR)
	if errors.Is(err, datastore.ErrNotFound) {
		return p.Name, nil
	}
	if err != nil {
		return "", err
	}
	return cur.Name, nil
}

func (poolStore) put(ctx context.Context, s *datastore.Store, o api.Object, mode ipam.PutMode) (bool, error) {
	p := *o.Resource.(*api.IPPool)
	name, err := legacyName(ctx, s, o)
	if err != nil {
		return false, err
	}
	p.Name = name
	rv, err := parseRV(o)
	if err != nil {
		return false, err
	}
	if mode == ipam.PutCreate {
		rv = 0
	}
	return ipam.PutPool(ctx, s, p, mode, rv)
}

func (poolStore) del(ctx context.Context, s *datastore.Store, o api.Object, force bool) (string, error) {
	p := o.Resource.(*api.IPPool)
	target := p.Name
	if o.NameFromCIDR || p.Name == "" {
		target = p.CIDR
	}
	rv, err := parseRV(o)
	if err != nil {
		return "", err
	}
	d, err := ipam.DeletePool(ctx, s, target, force, rv)
	if err != nil {
		return "", err
	}
	if d.BlocksKept > 0 {
		return fmt.Sprintf("IPPool %q was deleted with %d addresses still in use in %d blocks: their containers keep them until removed; no new address comes from it",
			d.Pool.Name, d.InUse, d.BlocksKept), nil
	}
	return "", nil
}

func (poolStore) header(wide bool) []string {
	if wide {
		return []string{"NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "BLOCKSIZE", "SELECTOR"}
	}
	return []string{"NAME", "CIDR", "SELECTOR"}
}

func (poolStore) row(o api.Object, wide bool, _ time.Time) []string {
	p := o.Resource.(*api.IPPool)
	if wide {
		return []string{p.Name, p.CIDR, strconv.FormatBool(p.NATOutgoing), string(p.IPIPMode), string(p.VXLANMode),
			strconv.FormatBool(p.Disabled), strconv.Itoa(p.BlockSize), p.NodeSelector}
	}
	return []string{p.Name, p.CIDR, p.NodeSelector}
}

// ---- Node ----

type nodeStore struct{}

func (nodeStore) get(ctx context.Context, s *datastore.Store, name string) (api.Object, error) {
	it, err := datastore.GetRaw(ctx, s, api.NodeKey(name))
	if errors.Is(err, datastore.ErrNotFound) {
		return api.Object{}, api.Mark(datastore.ErrNotFound, "Node %q does not exist (calicoctl get nodes lists them)", name)
	}
	if err != nil {
		return api.Object{}, err
	}
	blocks, err := nodeBlocks(ctx, s)
	if err != nil {
		return api.Object{}, err
	}
	live, err := liveNodes(ctx, s)
	if err != nil {
		return api.Object{}, err
	}
	return nodeObject(name, it, blocks, live), nil
}

// nodeObject reads a stored node record; one that cannot be decoded is
// shown by its name, marked invalid.
func nodeObject(name string, it datastore.RawItem, blocks map[string][]string, live map[string]bool) api.Object {
	n := &api.Node{Name: name}
	o := api.Object{Resource: n, ResourceVersion: rvString(it.ModRevision)}
	if err := json.Unmarshal(it.Value, n); err != nil {
		*n, o.Invalid = api.Node{Name: name}, "undecodable: "+err.Error()
	}
	n.Blocks, n.Live = blocks[n.Name], live[n.Name]
	return o
}

// liveNodes are the nodes whose daemon holds its claim (on an etcd lease it
// keeps alive): how liveness is judged.
func liveNodes(ctx context.Context, s *datastore.Store) (map[string]bool, error) {
	keys, err := s.Keys(ctx, api.ClaimsPrefix)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, k := range keys {
		if name, ok := api.ParseNodeClaimKey(k); ok {
			out[name] = true
		}
	}
	return out, nil
}

// nodeBlocks lists each node's blocks from the affinity records.
func nodeBlocks(ctx context.Context, s *datastore.Store) (map[string][]string, error) {
	keys, err := s.Keys(ctx, api.AffinityPrefix)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, k := range keys {
		if host, blk, ok := api.ParseAffinityKey(k); ok {
			out[host] = append(out[host], blk.String())
		}
	}
	return out, nil
}

func (nodeStore) list(ctx context.Context, s *datastore.Store) ([]api.Object, error) {
	items, err := datastore.ListRaw(ctx, s, api.NodesPrefix)
	if err != nil {
		return nil, err
	}
	blocks, err := nodeBlocks(ctx, s)
	if err != nil {
		return nil, err
	}
	live, err := liveNodes(ctx, s)
	if err != nil {
		return nil, err
	}
	out := make([]api.Object, 0, len(items))
	for _, it := range items {
		out = append(out, nodeObject(api.NameUnder(it.Key, api.NodesPrefix), it, blocks, live))
	}
	return out, nil
}

func (nodeStore) put(ctx context.Context, s *datastore.Store, o api.Object, mode ipam.PutMode) (bool, error) {
	n := *o.Resource.(*api.Node)
	rv, err := parseRV(o)
	if err != nil {
		return false, err
	}
	if mode == ipam.PutCreate {
		rv = 0
	}
	return casPut(ctx, s, api.NodeKey(n.Name), "Node", n.Name, mode, rv, func(cur *api.Node) api.Node {
		if cur != nil { // the daemon's part of the record stays
			n.LastSeen, n.Version = cur.LastSeen, cur.Version
		}
		return n
	})
}

func (nodeStore) del(ctx context.Context, s *datastore.Store, o api.Object, force bool) (string, error) {
	name := o.Resource.ResourceName()
	rv, err := parseRV(o)
	if err != nil {
		return "", err
	}
	if err := casDelete(ctx, s, api.NodeKey(name), "Node", name, rv); err != nil {
		return "", err
	}
	f, err := ipam.FreeHostBlocks(ctx, s, name)
	if err != nil {
		return "", fmt.Errorf("node %q deleted, but freeing its blocks failed: %w", name, err)
	}
	if f.Kept > 0 {
		return fmt.Sprintf("Node %q was deleted; its %d blocks with %d addresses in use are kept (calicoctl ipam check lists them; calicoctl ipam release --ip frees an address)",
			name, f.Kept, f.InUse), nil
	}
	return "", nil
}

func (nodeStore) header(wide bool) []string {
	if wide {
		return []string{"NAME", "IPV4", "IPV6", "BLOCKS", "VERSION", "DAEMON", "LASTSEEN"}
	}
	return []string{"NAME"}
}

func (nodeStore) row(o api.Object, wide bool, now time.Time) []string {
	n := o.Resource.(*api.Node)
	if !wide {
		return []string{n.Name}
	}
	seen := ""
	if !n.LastSeen.IsZero() {
		seen = age(now.Sub(n.LastSeen)) + " ago"
	}
	daemon := "down"
	if n.Live {
		daemon = "live"
	}
	return []string{n.Name, api.PrefixText(n.IPv4Address), api.PrefixText(n.IPv6Address), strings.Join(n.Blocks, ","), n.Version, daemon, seen}
}

// age prints a duration as kubectl does: 45s, 3m, 2h5m, 4d.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) % 60; m > 0 {
			return fmt.Sprintf("%dh%dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// ---- IPAMConfiguration ----

var ipamConfigStore = singletonStore[api.IPAMConfig, *api.IPAMConfig]{
	kind: api.IPAMConfigKind, name: api.IPAMConfigName, key: api.IPAMConfigKey,
	what:     "the IPAM configuration is named default",
	defaults: api.DefaultIPAMConfig,
	columns:  []string{"NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"},
	cells: func(c *api.IPAMConfig) []string {
		return []string{strconv.FormatBool(c.StrictAffinity), strconv.FormatBool(c.AutoAllocateBlocks), strconv.Itoa(c.MaxBlocksPerHost)}
	},
}

// ---- compare-and-swap helpers for simple records ----

// casPut writes build(current) at key if nobody changed the key since it was
// read, retrying on conflict. mode and rv (when not 0) say what must be
// there. It reports whether it created the key. A value equal to the
// stored one, byte for byte, is not written (a record the daemons find
// invalid is always rewritten, even when it reads as the new value).
func casPut[T any](ctx context.Context, s *datastore.Store, key, kind, name string, mode ipam.PutMode, rv int64, build func(cur *T) T) (bool, error) {
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		var cur *T
		it, err := datastore.GetRaw(ctx, s, key)
		exists := err == nil
		switch {
		case errors.Is(err, datastore.ErrNotFound):
		case err != nil:
			return false, err
		default:
			var t T
			if json.Unmarshal(it.Value, &t) == nil { // an undecodable record is simply replaced
				cur = &t
			}
		}
		if exists && mode == ipam.PutCreate {
			return false, api.Mark(api.ErrExists, "%s %q already exists: use calicoctl apply or calicoctl replace to change it", kind, name)
		}
		if !exists && mode == ipam.PutReplace {
			return false, api.Mark(datastore.ErrNotFound, "%s %q does not exist: use calicoctl create or calicoctl apply", kind, name)
		}
		if exists && rv != 0 && rv != it.ModRevision {
			return false, api.Mark(api.ErrStale, "%s %q was changed since it was read (metadata.resourceVersion %d, now %d): get it again and reapply, or leave resourceVersion out", kind, name, rv, it.ModRevision)
		}
		b, err := json.Marshal(build(cur))
		if err != nil {
			return false, err
		}
		// A write that changes nothing is skipped: the record keeps its
		// revision (a printed document still applies) and watchers see no
		// event.
		if exists && bytes.Equal(it.Value, b) {
			return false, nil
		}
		resp, err := s.CAS(ctx, []datastore.Cond{datastore.Unchanged(key, it.ModRevision)}, []datastore.Op{datastore.PutRaw(key, string(b))})
		if errors.Is(err, datastore.ErrUncertain) {
			continue // the next read shows whether it went (an equal record is then left alone)
		}
		if err != nil {
			return false, fmt.Errorf("write %s %q: %w", kind, name, err)
		}
		if resp.Succeeded {
			return !exists, nil
		}
	}
	return false, fmt.Errorf("write %s %q: %w", kind, name, datastore.ErrConflict)
}

// casDelete deletes key, which must exist (and be at rv when rv is not 0).
func casDelete(ctx context.Context, s *datastore.Store, key, kind, name string, rv int64) error {
	cond := datastore.Present(key)
	if rv != 0 {
		cond = datastore.Unchanged(key, rv)
	}
	resp, err := s.CAS(ctx, []datastore.Cond{cond}, []datastore.Op{datastore.Delete(key)}, datastore.Get(key))
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, name, err)
	}
	if resp.Succeeded {
		return nil
	}
	if rec, ok := resp.One(0); ok {
		return api.Mark(api.ErrStale, "%s %q was changed since it was read (metadata.resourceVersion %d, now %d): get it again, or leave resourceVersion out", kind, name, rv, rec.ModRevision)
	}
	return api.Mark(datastore.ErrNotFound, "%s %q does not exist", kind, name)
}
