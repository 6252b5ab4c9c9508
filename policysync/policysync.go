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
	"maps"
	"reflect"
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

// DeltaEnforcer is an Enforcer that also applies an endpoint-only change on
// its own (nftpolicy's does): a pass after only endpoints changed then
// costs what those endpoints touch, not every endpoint. Its errors are
// answered with a full pass.
type DeltaEnforcer interface {
	ApplyDelta(*policy.Delta) (fmt.Stringer, error)
}

type state struct {
	endpoints map[string]api.Endpoint // by key
	netUse    map[string]int          // network ID -> its endpoints in the model
	networks  map[string]api.Network  // by Docker network ID
	// The policy resources in force, by name: the record's when it is
	// valid, else the last good version (see resources.go).
	profiles map[string]api.Profile
	netpols  map[string]api.NetworkPolicy
	gnps     map[string]api.GlobalNetworkPolicy
	res      *resources
}

func newState(res *resources) *state {
	return &state{endpoints: map[string]api.Endpoint{}, netUse: map[string]int{}, networks: map[string]api.Network{}, profiles: map[string]api.Profile{},
		netpols: map[string]api.NetworkPolicy{}, gnps: map[string]api.GlobalNetworkPolicy{}, res: res}
}

var prefixes = []string{api.EndpointsPrefix, api.NetworksPrefix, api.ProfilesPrefix,
	api.NetworkPoliciesPrefix, api.GlobalNetworkPoliciesPrefix}

// put stores a record and says whether the policy model may have changed
// (an endpoint record rewritten with only its sandbox changed does not).
func (st *state) put(key string, val []byte) bool {
	switch {
	case strings.HasPrefix(key, api.EndpointsPrefix):
		var e api.Endpoint
		if err := json.Unmarshal(val, &e); err != nil {
			// Its interface then passes nothing: only this endpoint is cut off.
			st.res.noteRecord(key, "endpoint record", err)
			st.dropEndpoint(key)
			return true
		}
		st.res.noteRecord(key, "endpoint record", nil)
		return st.putEndpoint(key, e)
	case strings.HasPrefix(key, api.NetworksPrefix):
		id, ok := api.ParseNetworkKey(key)
		if !ok {
			return false
		}
		var n api.Network
		if err := json.Unmarshal(val, &n); err != nil {
			st.res.noteRecord(key, "network record", err)
			delete(st.networks, id)
			return true
		}
		st.res.noteRecord(key, "network record", nil)
		st.networks[id] = n
	default:
		st.putPolicy(key, val)
	}
	return true
}

func (st *state) putEndpoint(key string, e api.Endpoint) bool {
	old, had := st.endpoints[key]
	st.dropEndpoint(key)
	st.endpoints[key] = e
	if inModel(e) {
		st.netUse[e.NetworkID]++
	}
	return !had || !samePolicy(old, e)
}

func (st *state) dropEndpoint(key string) {
	if old, had := st.endpoints[key]; had && inModel(old) {
		if st.netUse[old.NetworkID]--; st.netUse[old.NetworkID] <= 0 {
			delete(st.netUse, old.NetworkID)
		}
	}
	delete(st.endpoints, key)
}

// inModel says whether the model takes an endpoint record: one the driver
// wrote; one bad record must not stall every update.
func inModel(e api.Endpoint) bool { return e.HostIface != "" && e.ID != "" }

// samePolicy says whether two versions of an endpoint record make the same
// policy model: everything Model reads of it.
func samePolicy(a, b api.Endpoint) bool {
	return a.NetworkID == b.NetworkID && reflect.DeepEqual(modelEndpoint(a), modelEndpoint(b))
}

// modelEndpoint is the endpoint as the policy model sees it (its profile
// is added by Model, from its network).
func modelEndpoint(e api.Endpoint) policy.Endpoint {
	labels := map[string]string{}
	for lk, lv := range e.Labels {
		if lk != NetworkLabel { // a container cannot claim another network's membership
			labels[lk] = lv
		}
	}
	return policy.Endpoint{Name: e.ID, Node: e.Host, Iface: e.HostIface, IPs: e.Addrs(), Labels: labels, Held: !e.LabelsKnown}
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
	st.dropEndpoint(key)
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
	m, _ := st.model(hold)
	return m
}

// model is Model, also saying whether endpoints are held.
func (st *state) model(hold bool) (*policy.Model, bool) {
	m := &policy.Model{}
	keys := make([]string, 0, len(st.endpoints))
	for k := range st.endpoints {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if me := st.endpointAt(k, true); me != nil {
			m.Endpoints = append(m.Endpoints, *me)
		}
	}
	for name, open := range st.defaults() {
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
	holding := hold && m.UsesLabelsOtherThan(NetworkLabel)
	if !holding {
		for i := range m.Endpoints {
			m.Endpoints[i].Held = false
		}
	}
	return m, holding
}

// endpointAt is the endpoint stored at key as the model has it (Held
// only when holding), or nil when the model has no such endpoint.
func (st *state) endpointAt(key string, holding bool) *policy.Endpoint {
	e, ok := st.endpoints[key]
	if !ok || !inModel(e) {
		return nil
	}
	me := modelEndpoint(e)
	me.Key = key
	me.Profiles = []string{NetworkName(st.networks[e.NetworkID], e.NetworkID)}
	me.Held = me.Held && holding
	return &me
}

// defaults are the default profiles the model has, by name: one per network
// with endpoints, open when a network of that name is.
func (st *state) defaults() map[string]bool {
	out := make(map[string]bool, len(st.netUse))
	for id := range st.netUse {
		nw := st.networks[id]
		name := NetworkName(nw, id)
		out[name] = out[name] || nw.Options[OpenOption] == "true"
	}
	return out
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
	// gen counts the changes to the model; epGen is the change that last
	// changed each endpoint's part of it, applied the one the kernel's
	// state was last computed from. An endpoint is enforced once
	// applied >= epGen[its key].
	gen, applied uint64
	epGen        map[string]uint64
	// dirty are the endpoints changed since the last pass computed;
	// structural says something else changed (a resource, a network, the
	// snapshot) or a pass failed: the next pass computes in full.
	dirty      map[string]bool
	structural bool
	// Under applyMu: the state of the last full pass, kept up to date by
	// the endpoint-only passes since (nil: the next pass is full), and
	// what it was computed with.
	tracker  *policy.Tracker
	defaults map[string]bool
	holding  bool
	applyMu  sync.Mutex    // one kernel transaction at a time
	kick     chan struct{} // EndpointCreated -> the applier (Run)
	ready    chan struct{}
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
	return &Syncer{store: store, enf: enf, host: host, log: log, hold: opts.HoldUnlabelled, res: res, st: newState(res),
		epGen: map[string]uint64{}, dirty: map[string]bool{}, structural: true, kick: make(chan struct{}, 1), ready: make(chan struct{})}
}

// Invalid lists the policy records (by key) that are not enforced as
// stored, with why.
func (s *Syncer) Invalid() map[string]string { return s.res.Invalid() }

// Ready is closed after the first full snapshot was applied.
func (s *Syncer) Ready() <-chan struct{} { return s.ready }

// EndpointCreated puts a just-created endpoint into the model and has the
// applier (started by Run) enforce it in the background: by the time Join
// asks, it usually is. It does not block.
func (s *Syncer) EndpointCreated(ep api.Endpoint) {
	s.mu.Lock()
	s.putEndpoint(api.EndpointKey(ep.Host, ep.ID), ep)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // a kick is pending: that pass will include this endpoint
	}
}

// EndpointJoined returns once the endpoint is in the enforced state (a
// cali interface the state does not list passes nothing), before Join
// answers Docker: at once when a pass since the endpoint's record last
// changed was applied, else after applying one.
func (s *Syncer) EndpointJoined(ctx context.Context, ep api.Endpoint) error {
	s.mu.Lock()
	need := s.putEndpoint(api.EndpointKey(ep.Host, ep.ID), ep)
	loaded, done := s.loaded, s.loaded && s.applied >= need
	s.mu.Unlock()
	if done {
		return nil
	}
	if !loaded {
		// Still starting: the first full apply, which includes this
		// endpoint's record, comes before long.
		select {
		case <-s.ready:
		case <-ctx.Done():
			return fmt.Errorf("policy not applied yet: %w", ctx.Err())
		}
	}
	return s.applyUpTo(need)
}

// putEndpoint stores an endpoint's record (s.mu held) and returns the
// change its policy has to be applied at.
func (s *Syncer) putEndpoint(key string, ep api.Endpoint) uint64 {
	g, ok := s.epGen[key]
	if s.st.putEndpoint(key, ep) || !ok {
		s.gen++
		g = s.gen
		s.epGen[key] = g
		s.dirty[key] = true
	}
	return g
}

// applyUpTo applies unless a pass computed at change need or later was
// applied meanwhile (another Join's, or the mirror's).
func (s *Syncer) applyUpTo(need uint64) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	done := s.applied >= need
	s.mu.Unlock()
	if done {
		return nil
	}
	return s.applyLocked(false)
}

// applyKicked applies after each EndpointCreated until ctx ends; a failure
// is left to Join (which applies again and reports it) and the mirror.
func (s *Syncer) applyKicked(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		loaded, gen := s.loaded, s.gen
		s.mu.Unlock()
		if !loaded {
			continue // the first full apply includes it
		}
		if err := s.applyUpTo(gen); err != nil {
			s.log.Debug("policy apply for a new endpoint failed; Join retries", "err", err)
		}
	}
}

// Run mirrors etcd and applies until ctx ends. While etcd is unreachable
// the kernel keeps the last applied policy.
func (s *Syncer) Run(ctx context.Context, resync time.Duration) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.applyKicked(ctx)
	}()
	defer wg.Wait()
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
	s.gen++
	s.structural = true
	s.epGen = map[string]uint64{}
	for k := range st.endpoints {
		s.epGen[k] = s.gen
	}
	s.mu.Unlock()
}

func (s *Syncer) Put(key string, val []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.put(key, val) {
		s.gen++
		s.noteChange(key)
		if _, ok := s.st.endpoints[key]; ok {
			s.epGen[key] = s.gen
		}
	}
}

// noteChange marks what the next pass has to compute after a change of
// the record at key (s.mu held).
func (s *Syncer) noteChange(key string) {
	if strings.HasPrefix(key, api.EndpointsPrefix) {
		s.dirty[key] = true
	} else {
		s.structural = true
	}
}

func (s *Syncer) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.del(key)
	s.gen++
	s.noteChange(key)
	delete(s.epGen, key)
}

// Apply applies; a full apply re-reads the kernel and repairs drift. A
// pass after changes that leave the model as applied (an endpoint's
// sandbox recorded, a record put again) is skipped.
func (s *Syncer) Apply(full bool) error {
	var err error
	if full {
		err = s.apply(true)
	} else {
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		err = s.applyUpTo(gen)
	}
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
	return s.applyLocked(resync)
}

// applyLocked is apply with s.applyMu held: only the endpoints changed
// since the last pass when nothing else changed and the enforcer can,
// else in full.
func (s *Syncer) applyLocked(resync bool) error {
	if !resync && s.applyEndpoints() {
		return nil
	}
	return s.applyFull(resync)
}

// applyEndpoints applies the endpoints changed since the last pass alone
// and reports whether it did; when it did not, the next full pass takes
// their changes.
func (s *Syncer) applyEndpoints() bool {
	de, ok := s.enf.(DeltaEnforcer)
	if !ok || s.tracker == nil {
		return false
	}
	s.mu.Lock()
	if s.structural || !maps.Equal(s.defaults, s.st.defaults()) {
		s.mu.Unlock()
		return false
	}
	gen := s.gen
	changes := make(map[string]*policy.Endpoint, len(s.dirty))
	for k := range s.dirty {
		changes[k] = s.st.endpointAt(k, s.holding)
	}
	s.dirty = map[string]bool{}
	s.mu.Unlock()
	delta, err := s.tracker.Update(changes)
	var stats fmt.Stringer
	if err == nil {
		stats, err = de.ApplyDelta(delta)
	}
	if err != nil {
		// The tracker may be ahead of the kernel now: compute afresh.
		s.tracker = nil
		s.log.Debug("policy: endpoint change applied in full", "why", err)
		return false
	}
	s.mu.Lock()
	s.applied = gen
	s.mu.Unlock()
	s.noteErr(nil)
	s.log.Debug("policy applied for changed endpoints", "endpoints", len(changes), "changes", stats.String())
	return true
}

// applyFull computes the whole desired state and enforces it; a resync
// also re-reads the kernel.
func (s *Syncer) applyFull(resync bool) error {
	_, tracks := s.enf.(DeltaEnforcer)
	s.mu.Lock()
	m, holding := s.st.model(s.hold)
	defaults, gen := s.st.defaults(), s.gen
	s.dirty, s.structural = map[string]bool{}, false
	s.mu.Unlock()
	s.tracker = nil
	var tr *policy.Tracker
	var ds *policy.DesiredState
	var err error
	if tracks {
		tr, ds, err = policy.NewTracker(m, s.host)
	} else {
		ds, err = policy.Compute(m, s.host)
	}
	if err != nil {
		s.failed()
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
		s.failed()
		return err
	}
	s.tracker, s.defaults, s.holding = tr, defaults, holding
	s.mu.Lock()
	s.applied = gen
	s.mu.Unlock()
	s.log.Debug("policy applied", "changes", stats.String(), "endpoints", len(ds.Endpoints))
	return nil
}

// failed leaves the next pass to compute in full.
func (s *Syncer) failed() {
	s.mu.Lock()
	s.structural = true
	s.mu.Unlock()
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
