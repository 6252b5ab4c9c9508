// Package policysync keeps this host's policy enforcement in line with etcd:
// it turns endpoints (of every host), networks, profiles and policies into
// the policy model, computes this host's desired state and hands it to the
// kernel enforcer. It also learns containers' labels from Docker, outside
// any plugin handler.
package policysync

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// NetworkLabel is the label every endpoint of a network carries (through
// its network's profile); the default profile admits what carries it.
const NetworkLabel = "calico/network"

// OpenOption is the network option (-o open=true) that makes a network's
// default profile accept traffic from anywhere.
const OpenOption = "open"

// Enforcer is the kernel side.
type Enforcer interface {
	Apply(*policy.DesiredState) (fmt.Stringer, error)
	Resync(*policy.DesiredState) (fmt.Stringer, error)
}

type state struct {
	endpoints map[string]api.Endpoint // by key
	networks  map[string]api.Network  // by Docker network ID
	// The policy resources in force, by name: the record's when it is
	// valid, else the last good version (see resources.go).
	profiles map[string]api.Profile
	netpols  map[string]api.NetworkPolicy
	gnps     map[string]api.GlobalNetworkPolicy
	res      *resources
}

func newState(res *resources) *state {
	return &state{endpoints: map[string]api.Endpoint{}, networks: map[string]api.Network{}, profiles: map[string]api.Profile{},
		netpols: map[string]api.NetworkPolicy{}, gnps: map[string]api.GlobalNetworkPolicy{}, res: res}
}

var prefixes = []string{api.EndpointsPrefix, api.NetworksPrefix, api.ProfilesPrefix,
	api.NetworkPoliciesPrefix, api.GlobalNetworkPoliciesPrefix}

func (st *state) put(key string, val []byte) {
	switch {
	case strings.HasPrefix(key, api.EndpointsPrefix):
		var e api.Endpoint
		if err := json.Unmarshal(val, &e); err != nil {
			// Its interface then passes nothing: only this endpoint is cut off.
			st.res.noteRecord(key, "endpoint record", err)
			delete(st.endpoints, key)
			return
		}
		st.res.noteRecord(key, "endpoint record", nil)
		st.endpoints[key] = e
	case strings.HasPrefix(key, api.NetworksPrefix):
		id, ok := api.ParseNetworkKey(key)
		if !ok {
			return
		}
		var n api.Network
		if err := json.Unmarshal(val, &n); err != nil {
			st.res.noteRecord(key, "network record", err)
			delete(st.networks, id)
			return
		}
		st.res.noteRecord(key, "network record", nil)
		st.networks[id] = n
	default:
		st.putPolicy(key, val)
	}
}

func (st *state) putPolicy(key string, val []byte) {
	if n, ok := api.ParseProfileKey(key); ok {
		if p, ok := decodeInForce(st.res, key, "Profile", n, val, api.DecodeStoredProfile); ok {
			st.profiles[n] = p
		}
	} else if n, ok := api.ParseNetworkPolicyKey(key); ok {
		if p, ok := decodeInForce(st.res, key, "NetworkPolicy", n, val, api.DecodeStoredNetworkPolicy); ok {
			st.netpols[n] = p
		}
	} else if n, ok := api.ParseGlobalNetworkPolicyKey(key); ok {
		if p, ok := decodeInForce(st.res, key, "GlobalNetworkPolicy", n, val, api.DecodeStoredGlobalNetworkPolicy); ok {
			st.gnps[n] = p
		}
	}
}

func (st *state) del(key string) {
	st.res.forget(key)
	delete(st.endpoints, key)
	if id, ok := api.ParseNetworkKey(key); ok {
		delete(st.networks, id)
	} else if n, ok := api.ParseProfileKey(key); ok {
		delete(st.profiles, n)
	} else if n, ok := api.ParseNetworkPolicyKey(key); ok {
		delete(st.netpols, n)
	} else if n, ok := api.ParseGlobalNetworkPolicyKey(key); ok {
		delete(st.gnps, n)
	}
}

// NetworkName is the name policy knows a network by: its Docker name once
// the daemon has learnt it, else a name derived from its ID.
func NetworkName(n api.Network, id string) string {
	if n.Name != "" {
		return n.Name
	}
	if len(id) > 12 {
		id = id[:12]
	}
	return "docker-network-" + id
}

// Model builds the policy model: every endpoint with its network's profile;
// a stored profile named after a network replaces that network's default.
// With hold, an endpoint whose container labels are not known yet is held
// (passes nothing) when some selector looks at labels other than the
// network's: until then its policy is not known.
func (st *state) Model(hold bool) *policy.Model {
	m := &policy.Model{}
	defaults := map[string]bool{} // network profile name -> open
	keys := make([]string, 0, len(st.endpoints))
	for k := range st.endpoints {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e := st.endpoints[k]
		if e.HostIface == "" || e.ID == "" {
			continue // not a record the driver wrote; one bad record must not stall every update
		}
		nw := st.networks[e.NetworkID]
		prof := NetworkName(nw, e.NetworkID)
		defaults[prof] = defaults[prof] || nw.Options[OpenOption] == "true"
		ips := e.Addrs()
		labels := map[string]string{}
		for lk, lv := range e.Labels {
			if lk != NetworkLabel { // a container cannot claim another network's membership
				labels[lk] = lv
			}
		}
		m.Endpoints = append(m.Endpoints, policy.Endpoint{Name: e.ID, Node: e.Host, Iface: e.HostIface, IPs: ips, Labels: labels,
			Profiles: []string{prof}, Held: !e.LabelsKnown})
	}
	for name, open := range defaults {
		if _, stored := st.profiles[name]; !stored {
			m.Profiles = append(m.Profiles, policy.DefaultProfile(name, NetworkLabel, name, open))
		}
	}
	for _, p := range st.profiles {
		m.Profiles = append(m.Profiles, p)
	}
	for _, p := range st.netpols {
		m.NetworkPolicies = append(m.NetworkPolicies, p)
	}
	for _, p := range st.gnps {
		m.GlobalNetworkPolicies = append(m.GlobalNetworkPolicies, p)
	}
	sort.Slice(m.Profiles, func(i, j int) bool { return m.Profiles[i].Name < m.Profiles[j].Name })
	sort.Slice(m.NetworkPolicies, func(i, j int) bool { return m.NetworkPolicies[i].Name < m.NetworkPolicies[j].Name })
	sort.Slice(m.GlobalNetworkPolicies, func(i, j int) bool { return m.GlobalNetworkPolicies[i].Name < m.GlobalNetworkPolicies[j].Name })
	if !hold || !m.UsesLabelsOtherThan(NetworkLabel) {
		for i := range m.Endpoints {
			m.Endpoints[i].Held = false
		}
	}
	return m
}

// Syncer watches etcd and applies this host's policy.
type Syncer struct {
	store *datastore.Store
	enf   Enforcer
	host  string
	log   *slog.Logger
	hold  bool
	res   *resources

	mu      sync.Mutex
	st      *state
	loaded  bool
	lastErr string
	applyMu sync.Mutex // one kernel transaction at a time
	ready   chan struct{}
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
}

// Options tune a Syncer.
type Options struct {
	// LastGoodFile keeps the last good versions of invalid policy
	// resources across restarts ("": kept in memory only).
	LastGoodFile string
	// HoldUnlabelled holds endpoints whose labels are not known yet (set
	// when a labels.Resolver runs, which learns them).
	HoldUnlabelled bool
}

// New returns a syncer for host.
func New(store *datastore.Store, enf Enforcer, host string, log *slog.Logger, opts Options) *Syncer {
	res := newResources(log, opts.LastGoodFile)
	return &Syncer{store: store, enf: enf, host: host, log: log, hold: opts.HoldUnlabelled, res: res, st: newState(res), ready: make(chan struct{})}
}

// Invalid lists the policy records (by key) that are not enforced as
// stored, with why.
func (s *Syncer) Invalid() map[string]string { return s.res.Invalid() }

// Ready is closed after the first full snapshot was applied.
func (s *Syncer) Ready() <-chan struct{} { return s.ready }

// EndpointJoined puts a just-joined endpoint into the enforced state at
// once (a cali interface the state does not list passes nothing), before
// Join answers Docker.
func (s *Syncer) EndpointJoined(ctx context.Context, ep api.Endpoint) error {
	s.mu.Lock()
	s.st.endpoints[api.EndpointKey(ep.Host, ep.ID)] = ep
	loaded := s.loaded
	s.mu.Unlock()
	if !loaded {
		// Still starting: the first full apply, which includes this
		// endpoint's record, comes before long.
		select {
		case <-s.ready:
		case <-ctx.Done():
			return fmt.Errorf("policy not applied yet: %w", ctx.Err())
		}
	}
	return s.apply(false)
}

// Run mirrors etcd and applies until ctx ends. While etcd is unreachable
// the kernel keeps the last applied policy.
func (s *Syncer) Run(ctx context.Context, resync time.Duration) {
	a := agent.Mirrored{Name: "policy", Store: s.store, Prefixes: prefixes, Model: s, Observer: s.Observer, Log: s.log,
		Options: datastore.MirrorOptions{Debounce: 10 * time.Millisecond, Resync: resync, Ready: func() { close(s.ready) }}}
	a.Run(ctx)
}

// Reset, Put, Delete, Apply and Failed make the Syncer an agent.Model.
func (s *Syncer) Reset(kvs []datastore.KV) {
	st := newState(s.res)
	present := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		st.put(kv.Key, kv.Value)
		present[kv.Key] = true
	}
	s.res.retain(present)
	s.mu.Lock()
	s.st, s.loaded = st, true
	s.mu.Unlock()
}

func (s *Syncer) Put(key string, val []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.put(key, val)
}

func (s *Syncer) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.del(key)
}

// Apply applies; a full apply re-reads the kernel and repairs drift.
func (s *Syncer) Apply(full bool) error {
	err := s.apply(full)
	if err != nil {
		s.log.Warn("policy apply failed", "full", full, "err", err)
	}
	return err
}

func (s *Syncer) Failed(err error) {
	s.log.Warn("policy sync: cannot read etcd; keeping the current policy", "err", err)
}

// apply computes and enforces; a model error (an invalid resource) keeps
// the last good policy in the kernel.
func (s *Syncer) apply(resync bool) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	m := s.st.Model(s.hold)
	s.mu.Unlock()
	ds, err := policy.Compute(m, s.host)
	if err != nil {
		s.noteErr(err)
		return fmt.Errorf("policy model: %w (the last good policy stays in force)", err)
	}
	var stats fmt.Stringer
	if resync {
		stats, err = s.enf.Resync(ds)
	} else {
		stats, err = s.enf.Apply(ds)
	}
	s.noteErr(err)
	if err != nil {
		return err
	}
	s.log.Debug("policy applied", "changes", stats.String(), "endpoints", len(ds.Endpoints))
	return nil
}

func (s *Syncer) noteErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != "" && msg != s.lastErr {
		s.log.Warn("policy not applied", "err", msg)
	}
	s.lastErr = msg
}
