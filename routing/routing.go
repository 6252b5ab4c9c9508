// Package routing turns what etcd says about nodes, pools, blocks and
// endpoints into the routes this host needs to reach every other host's
// containers, and hands them to the data plane. It owns no kernel state.
package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Applier is the data plane side: inter-host routes and NAT rules.
type Applier interface {
	ApplyRoutes([]carrier.BlockRoute) (dataplane.ApplyResult, error)
	SetNATOutgoing(natPools, allPools []netip.Prefix) error
}

// State is what the syncer knows, kept from etcd's watch.
type State struct {
	Nodes     map[string]api.Node
	Pools     map[string]api.IPPool
	Blocks    map[netip.Prefix]string // block CIDR -> affinity host
	Endpoints map[string]api.Endpoint // by key
	// Claims are the live daemons' claims, by node name: a node is alive
	// while its daemon holds one (routes do not depend on it).
	Claims map[string]api.NodeClaim
}

func newState() *State {
	return &State{Nodes: map[string]api.Node{}, Pools: map[string]api.IPPool{}, Blocks: map[netip.Prefix]string{}, Endpoints: map[string]api.Endpoint{}, Claims: map[string]api.NodeClaim{}}
}

// Desired computes the inter-host routes host needs: a blackhole per own
// block, a route per remote block via its host, and a /32 (/128) per
// address borrowed from another host's block, via the host holding it.
func (st *State) Desired(host string) []carrier.BlockRoute {
	out, _ := st.DesiredWithNotes(host)
	return out
}

// DesiredWithNotes is Desired, with a note for every pool and peer whose
// encapsulation is carried by another one (see fallback).
func (st *State) DesiredWithNotes(host string) ([]carrier.BlockRoute, []string) {
	me := st.Nodes[host]
	my4, my6 := me.IPv4Address, me.IPv6Address
	var out []carrier.BlockRoute
	notes := map[string]bool{}
	via := func(dst netip.Prefix, owner string) (carrier.BlockRoute, bool) {
		n, ok := st.Nodes[owner]
		if !ok {
			return carrier.BlockRoute{}, false
		}
		remote, mine := n.IPv4Address, my4
		if dst.Addr().Is6() {
			remote, mine = n.IPv6Address, my6
		}
		if !remote.IsValid() {
			return carrier.BlockRoute{}, false
		}
		same := mine.IsValid() && mine.Contains(remote.Addr())
		mode, note := st.fallback(st.modeFor(dst, same), dst, me, n)
		if note != "" {
			notes[note] = true
		}
		return carrier.BlockRoute{Dst: dst, Via: remote.Addr(), Mode: mode}, true
	}
	for dst, owner := range st.Blocks {
		if owner == "" {
			continue
		}
		if owner == host {
			out = append(out, carrier.BlockRoute{Dst: dst, Blackhole: true})
			continue
		}
		if r, ok := via(dst, owner); ok {
			out = append(out, r)
		}
	}
	for _, ep := range st.Endpoints {
		if ep.Host == host {
			continue
		}
		for _, a := range ep.Addrs() {
			if owner, ok := st.blockOwner(a); ok && owner != ep.Host {
				if r, ok := via(netip.PrefixFrom(a, a.BitLen()), ep.Host); ok {
					out = append(out, r)
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dst.String() < out[j].Dst.String() })
	return out, sortedKeys(notes)
}

func (st *State) poolFor(a netip.Addr) (api.IPPool, bool) {
	for _, p := range st.Pools {
		if pp, err := netip.ParsePrefix(p.CIDR); err == nil && pp.Contains(a) {
			return p, true
		}
	}
	return api.IPPool{}, false
}

func (st *State) blockOwner(a netip.Addr) (string, bool) {
	if p, ok := st.poolFor(a); ok {
		owner, ok := st.Blocks[netip.PrefixFrom(a, p.BlockSize).Masked()]
		return owner, ok
	}
	return "", false
}

// modeFor picks how to reach dst's block: the pool's encapsulation when it
// is Always, or CrossSubnet and the host is on another subnet; else direct.
func (st *State) modeFor(dst netip.Prefix, sameSubnet bool) carrier.Mode {
	p, ok := st.poolFor(dst.Addr())
	if !ok {
		return carrier.ModeDirect
	}
	on := func(m api.EncapMode) bool {
		return m == api.EncapAlways || (m == api.EncapCrossSubnet && !sameSubnet)
	}
	switch {
	case on(p.VXLANMode):
		return carrier.ModeVXLAN
	case on(p.IPIPMode):
		return carrier.ModeIPIP
	}
	return carrier.ModeDirect
}

// NAT returns the natOutgoing pools and all pools (enabled or not: traffic
// to a disabled pool's containers is still pool-to-pool).
func (st *State) NAT() (nat, all []netip.Prefix) {
	for _, p := range st.Pools {
		pp, err := netip.ParsePrefix(p.CIDR)
		if err != nil {
			continue
		}
		all = append(all, pp)
		if p.NATOutgoing { // disabled pools still hold running containers
			nat = append(nat, pp)
		}
	}
	less := func(s []netip.Prefix) { sort.Slice(s, func(i, j int) bool { return s[i].String() < s[j].String() }) }
	less(nat)
	less(all)
	return nat, all
}

// Syncer watches etcd and keeps the data plane's inter-host state current.
type Syncer struct {
	store *datastore.Store
	dp    Applier
	host  string
	log   *slog.Logger

	mu       sync.Mutex
	st       *State
	status   api.RoutingStatus
	resync   time.Duration
	debounce time.Duration
	ready    chan struct{}
	// natApplied is the NAT pools last applied without error (only the
	// apply pass touches it).
	natApplied string
	// dirty: a record the routes depend on changed since the last pass
	// that applied without error. This host's own endpoints never make
	// it so (they add no inter-host route), so a docker run here runs no
	// route pass: each would dump the route table, which grows with the
	// host's containers.
	dirty bool
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
}

// Ready is closed once the first snapshot of etcd has been read.
func (s *Syncer) Ready() <-chan struct{} { return s.ready }

// New returns a syncer for host.
func New(store *datastore.Store, dp Applier, host string, log *slog.Logger) *Syncer {
	return &Syncer{store: store, dp: dp, host: host, log: log, st: newState(), resync: 30 * time.Second, debounce: 20 * time.Millisecond, ready: make(chan struct{})}
}

// UsesVXLAN reports whether any pool may send traffic through VXLAN (an
// IPIP pool too, where some node's kernel lacks ipip), so container MTUs
// must leave room for its header.
func (s *Syncer) UsesVXLAN() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.st.Pools {
		if p.VXLANMode == api.EncapAlways || p.VXLANMode == api.EncapCrossSubnet {
			return true
		}
		if (p.IPIPMode == api.EncapAlways || p.IPIPMode == api.EncapCrossSubnet) && s.st.anyLacksIPIP() {
			return true
		}
	}
	return false
}

// Peers lists the other nodes, by name.
func (s *Syncer) Peers() []api.Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	my4 := s.st.Nodes[s.host].IPv4Address
	var out []api.Peer
	for name, n := range s.st.Nodes {
		if name == s.host {
			continue
		}
		p := api.Peer{Name: name, IPv4: n.IPv4Address, IPv6: n.IPv6Address, LastSeen: n.LastSeen}
		if c, ok := s.st.Claims[name]; ok {
			p.Live, p.DaemonSince = true, c.Since
		}
		if n.IPv4Address.IsValid() && my4.IsValid() {
			p.SameSubnet = my4.Contains(n.IPv4Address.Addr())
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status returns the last apply's outcome.
func (s *Syncer) Status() api.RoutingStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// prefixes are the records routes depend on.
var prefixes = []string{api.NodesPrefix, api.PoolsPrefix, api.BlocksPrefix, api.EndpointsPrefix, api.ClaimsPrefix}

// Run mirrors etcd and applies until ctx ends. While etcd is unreachable it
// keeps the last known routes in place and retries.
func (s *Syncer) Run(ctx context.Context) {
	a := agent.Mirrored{Name: "routing", Store: s.store, Prefixes: prefixes, Model: s, Observer: s.Observer, Log: s.log,
		Options: datastore.MirrorOptions{Debounce: s.debounce, Resync: s.resync, Ready: func() { close(s.ready) }}}
	a.Run(ctx)
}

// Reset, Put, Delete, Apply and Failed make the Syncer an agent.Model.
func (s *Syncer) Reset(kvs []datastore.KV) {
	st := newState()
	for _, kv := range kvs {
		if !s.local(kv.Key) {
			st.put(kv.Key, kv.Value)
		}
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
}

func (s *Syncer) Put(key string, val []byte) {
	if s.local(key) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.put(key, val) {
		s.dirty = true
	}
}

func (s *Syncer) Delete(key string) {
	if s.local(key) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.del(key)
	s.dirty = true
}

// local reports a record of one of this host's own endpoints: the routes
// to other hosts do not depend on them, so they are not kept at all.
func (s *Syncer) local(key string) bool {
	host, _, ok := api.ParseEndpointKey(key)
	return ok && host == s.host
}

// Apply applies. A pass after changes the routes do not depend on (this
// host's endpoints) touches nothing; every other pass also repairs routes
// someone removed by hand, and the full pass of each resync does so
// whatever changed. The NAT rules are read back from iptables only on a
// full pass or when the pools changed, so a pass that changes nothing runs
// no iptables at all.
func (s *Syncer) Apply(full bool) error { return s.apply(full) }

func (s *Syncer) Failed(err error) {
	s.log.Warn("route sync: cannot read etcd; keeping current routes", "err", err)
	s.mu.Lock()
	s.status.LastError = err.Error()
	s.mu.Unlock()
}

// put records the value of key and reports whether the routes can have
// changed: a block record rewritten for an allocation, its affinity the
// same, or an endpoint record rewritten, its host and addresses the same,
// changes none.
func (st *State) put(key string, val []byte) bool {
	switch {
	case strings.HasPrefix(key, api.NodesPrefix):
		var n api.Node
		if json.Unmarshal(val, &n) == nil {
			st.Nodes[n.Name] = n
		}
	case strings.HasPrefix(key, api.PoolsPrefix):
		var p api.IPPool
		if json.Unmarshal(val, &p) == nil {
			st.Pools[key] = p
		}
	case strings.HasPrefix(key, api.BlocksPrefix):
		var b api.Block
		if json.Unmarshal(val, &b) == nil && b.CIDR.IsValid() {
			if old, ok := st.Blocks[b.CIDR]; ok && old == b.Affinity {
				return false
			}
			st.Blocks[b.CIDR] = b.Affinity
		}
	case strings.HasPrefix(key, api.EndpointsPrefix):
		var e api.Endpoint
		if json.Unmarshal(val, &e) == nil {
			// Routes read only an endpoint's host and addresses: a record
			// rewritten with its sandbox or labels changes none.
			old, ok := st.Endpoints[key]
			st.Endpoints[key] = e
			if ok && old.Host == e.Host && old.IPv4 == e.IPv4 && old.IPv6 == e.IPv6 {
				return false
			}
		}
	case strings.HasPrefix(key, api.ClaimsPrefix):
		var c api.NodeClaim
		if name, ok := api.ParseNodeClaimKey(key); ok && json.Unmarshal(val, &c) == nil {
			st.Claims[name] = c
		}
	}
	return true
}

func (st *State) del(key string) {
	switch {
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
	case strings.HasPrefix(key, api.ClaimsPrefix):
		if name, ok := api.ParseNodeClaimKey(key); ok {
			delete(st.Claims, name)
		}
	}
}

func (s *Syncer) apply(full bool) error {
	s.mu.Lock()
	if !full && !s.dirty {
		s.mu.Unlock()
		return nil
	}
	s.dirty = false
	want, notes := s.st.DesiredWithNotes(s.host)
	nat, all := s.st.NAT()
	s.mu.Unlock()
	res, err := s.dp.ApplyRoutes(want)
	var natErr error
	natKey := fmt.Sprint(nat, all)
	if full || natKey != s.natApplied {
		natErr = s.dp.SetNATOutgoing(nat, all)
		s.natApplied = natKey
		if natErr != nil {
			s.natApplied = "" // try again next pass
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	reported := map[string]bool{}
	for _, sk := range append(s.status.Skipped, s.status.Notes...) {
		reported[sk] = true
	}
	s.status = api.RoutingStatus{LastApply: time.Now().UTC(), Routes: len(want), Skipped: res.Skipped, Notes: notes, Synced: err == nil && natErr == nil}
	if !s.status.Synced {
		s.dirty = true // the next pass tries again
	}
	s.logNotes(notes, reported)
	if err != nil {
		s.status.LastError = err.Error()
		s.log.Warn("route sync: some routes failed", "err", err)
	} else if natErr != nil {
		s.status.LastError = natErr.Error()
		s.log.Warn("route sync: NAT rules failed", "err", natErr)
	}
	if res.Added > 0 || res.Removed > 0 {
		s.log.Info("routes to other hosts updated", "added", res.Added, "removed", res.Removed, "wanted", len(want))
	}
	for _, sk := range res.Skipped {
		if !reported[sk] { // once, not at every resync
			s.log.Warn("route not installed", "route", sk)
		}
	}
	return errors.Join(err, natErr)
}
