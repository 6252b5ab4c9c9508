package policy

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// ErrFullPass is Tracker.Update's answer to a change it cannot follow on
// its own: compute the whole state again (NewTracker).
var ErrFullPass = errors.New("policy: the change needs a full computation")

// Tracker keeps one node's desired state up to date while only endpoints
// change (they come, go, get addresses or labels) and the resources stay
// those it was made from. An update costs what the changed endpoints
// touch: their selector sets' elements and their own entries, not a
// computation of every endpoint. A change that would add or drop a chain
// (a local endpoint whose chains no other local endpoint has, the last
// local endpoint of its kind gone) is not its to make: then Update answers
// ErrFullPass.
type Tracker struct {
	e      *Evaluator // the compiled resources (no endpoints)
	node   string
	chains []Chain
	fixed  []Set                  // net and port sets: they follow the chains
	sets   map[string]*trackedSet // selector sets by name
	eps    map[string]trackedEP   // every endpoint of the model, by key
	ifaces map[string]string      // local interface -> key
	shapes map[string]int         // local endpoints per chain list of one direction
}

type trackedSet struct {
	Set  // name, type and comment (no addresses)
	sel  api.Selector
	fam  int
	refs map[netip.Addr]int // endpoints holding each address
}

type trackedEP struct {
	ep     *Endpoint
	labels map[string]string // effective
	local  *LocalEndpoint    // nil unless on the node
}

// Delta is what an endpoint change does to a node's desired state.
type Delta struct {
	// Endpoints are the local endpoints that changed: Old is nil for a new
	// one, New is nil for one gone.
	Endpoints []EndpointChange
	// Sets are the selector sets whose addresses changed, by name.
	Sets []SetChange
}

// EndpointChange is one local endpoint before and after.
type EndpointChange struct{ Old, New *LocalEndpoint }

// SetChange is the addresses a selector set gains and loses.
type SetChange struct {
	Name     string
	Type     SetType
	Add, Del []netip.Addr // sorted
}

// Empty reports whether d changes nothing.
func (d *Delta) Empty() bool { return len(d.Endpoints) == 0 && len(d.Sets) == 0 }

func (d *Delta) String() string {
	add, del := 0, 0
	for _, s := range d.Sets {
		add, del = add+len(s.Add), del+len(s.Del)
	}
	return fmt.Sprintf("%d local endpoints changed, %d set elements added, %d removed", len(d.Endpoints), add, del)
}

func keyOf(ep *Endpoint) string {
	if ep.Key != "" {
		return ep.Key
	}
	return ep.Name
}

// NewTracker computes node's desired state under m, as Compute does, and
// returns a tracker of it. The tracker is nil when the model's endpoints
// do not have distinct keys (then every change needs Compute).
func NewTracker(m *Model, node string) (*Tracker, *DesiredState, error) {
	e, err := NewEvaluator(m)
	if err != nil {
		return nil, nil, err
	}
	ds, reg, err := e.compute(node)
	if err != nil {
		return nil, nil, err
	}
	t := &Tracker{e: &Evaluator{policies: e.policies, profiles: e.profiles}, node: node, sets: map[string]*trackedSet{},
		eps: make(map[string]trackedEP, len(e.eps)), ifaces: map[string]string{}, shapes: map[string]int{}}
	for _, c := range ds.Chains {
		t.chains = append(t.chains, c)
	}
	for _, s := range ds.Sets {
		sel, ok := reg.selectors[s.Name]
		if !ok {
			t.fixed = append(t.fixed, s)
			continue
		}
		ts := &trackedSet{Set: Set{Name: s.Name, Type: s.Type, Comment: s.Comment}, sel: sel.sel, fam: sel.fam, refs: map[netip.Addr]int{}}
		t.sets[s.Name] = ts
	}
	for _, info := range e.eps {
		key := keyOf(info.ep)
		if _, dup := t.eps[key]; dup {
			return nil, ds, nil
		}
		c := *info.ep // the caller's model may change later
		info.ep = &c
		te := trackedEP{ep: info.ep, labels: info.labels}
		if info.ep.Node == node {
			le := t.e.localEndpoint(info, nil)
			te.local = &le
			t.ifaces[le.Iface] = key
			for _, sh := range shapesOf(&le) {
				t.shapes[sh]++
			}
		}
		t.eps[key] = te
		t.count(te, 1, nil)
	}
	return t, ds, nil
}

// shapesOf names the chain lists of a local endpoint's two directions: the
// data plane has a chain per distinct one.
func shapesOf(le *LocalEndpoint) [2]string {
	sh := func(dir string, ec EndpointChains) string {
		return dir + "\x01" + strings.Join(ec.Policies, "\x00") + "\x01" + strings.Join(ec.Profiles, "\x00")
	}
	return [2]string{sh("i", le.Ingress), sh("e", le.Egress)}
}

// count adds (by +1 or -1) an endpoint's addresses to the selector sets
// that select it; before, when not nil, keeps each touched address's count
// before the first change.
func (t *Tracker) count(te trackedEP, by int, before map[string]map[netip.Addr]int) {
	if te.ep.Held {
		return
	}
	for name, ts := range t.sets {
		if !ts.sel.Matches(te.labels) {
			continue
		}
		for _, a := range te.ep.IPs {
			a = a.Unmap()
			if family(a) != ts.fam {
				continue
			}
			if before != nil {
				if before[name] == nil {
					before[name] = map[netip.Addr]int{}
				}
				if _, seen := before[name][a]; !seen {
					before[name][a] = ts.refs[a]
				}
			}
			if ts.refs[a] += by; ts.refs[a] <= 0 {
				delete(ts.refs, a)
			}
		}
	}
}

// Update applies changes (by key: the endpoint's new version, nil for one
// gone) and returns what changed. It answers ErrFullPass, changing
// nothing, when a change would add or remove a chain or a local endpoint
// has no interface or shares one. The caller vouches that the resources
// (policies, profiles, what is held) are those the tracker was made from.
func (t *Tracker) Update(changes map[string]*Endpoint) (*Delta, error) {
	next, err := t.check(changes)
	if err != nil {
		return nil, err
	}
	d := &Delta{}
	before := map[string]map[netip.Addr]int{}
	for _, key := range slices.Sorted(maps.Keys(changes)) {
		old, had := t.eps[key]
		if had {
			t.count(old, -1, before)
			if old.local != nil {
				delete(t.ifaces, old.local.Iface)
				for _, sh := range shapesOf(old.local) {
					t.shapes[sh]--
				}
			}
			delete(t.eps, key)
		}
		nw, ok := next[key]
		if ok {
			t.eps[key] = nw
			t.count(nw, 1, before)
			if nw.local != nil {
				for _, sh := range shapesOf(nw.local) {
					t.shapes[sh]++
				}
			}
		}
		if had && old.local != nil || ok && nw.local != nil {
			d.Endpoints = append(d.Endpoints, EndpointChange{Old: old.local, New: nw.local})
		}
	}
	for key, nw := range next {
		if nw.local != nil {
			t.ifaces[nw.local.Iface] = key
		}
	}
	for _, name := range slices.Sorted(maps.Keys(before)) {
		ts := t.sets[name]
		sc := SetChange{Name: name, Type: ts.Type}
		for a, n := range before[name] {
			switch after := ts.refs[a]; {
			case n == 0 && after > 0:
				sc.Add = append(sc.Add, a)
			case n > 0 && after == 0:
				sc.Del = append(sc.Del, a)
			}
		}
		if len(sc.Add)+len(sc.Del) > 0 {
			slices.SortFunc(sc.Add, netip.Addr.Compare)
			slices.SortFunc(sc.Del, netip.Addr.Compare)
			d.Sets = append(d.Sets, sc)
		}
	}
	return d, nil
}

// check works out the changed endpoints' new versions and whether the
// tracker can take them: every chain list still used by some local
// endpoint and no new one, each local interface named and claimed once.
func (t *Tracker) check(changes map[string]*Endpoint) (map[string]trackedEP, error) {
	next := make(map[string]trackedEP, len(changes))
	shapes := map[string]int{}
	claimed := map[string]string{}
	for key, ep := range changes {
		if old, ok := t.eps[key]; ok && old.local != nil {
			for _, sh := range shapesOf(old.local) {
				shapes[sh]--
			}
		}
		if ep == nil {
			continue
		}
		c := *ep
		te := trackedEP{ep: &c, labels: t.e.EffectiveLabels(&c)}
		if c.Node == t.node {
			if c.Iface == "" {
				return nil, fmt.Errorf("%w: endpoint %q has no interface name", ErrFullPass, c.Name)
			}
			if other, dup := claimed[c.Iface]; dup {
				return nil, fmt.Errorf("%w: endpoints %q and %q both use interface %s", ErrFullPass, other, key, c.Iface)
			}
			if other, ok := t.ifaces[c.Iface]; ok && other != key {
				if _, changing := changes[other]; !changing {
					return nil, fmt.Errorf("%w: endpoints %q and %q both use interface %s", ErrFullPass, other, key, c.Iface)
				}
			}
			claimed[c.Iface] = key
			le := t.e.localEndpoint(epInfo{ep: &c, labels: te.labels}, nil)
			te.local = &le
			for _, sh := range shapesOf(&le) {
				shapes[sh]++
			}
		}
		next[key] = te
	}
	for sh, by := range shapes {
		if had := t.shapes[sh]; (had > 0) != (had+by > 0) {
			return nil, fmt.Errorf("%w: a chain would be added or removed", ErrFullPass)
		}
	}
	return next, nil
}

// DesiredState is the tracked state in full, as Compute would give it.
func (t *Tracker) DesiredState() *DesiredState {
	ds := &DesiredState{Chains: slices.Clone(t.chains), Sets: slices.Clone(t.fixed)}
	for _, te := range t.eps {
		if te.local != nil {
			ds.Endpoints = append(ds.Endpoints, *te.local)
		}
	}
	sort.Slice(ds.Endpoints, func(i, j int) bool { return ds.Endpoints[i].Iface < ds.Endpoints[j].Iface })
	for _, ts := range t.sets {
		s := ts.Set
		s.Addrs = slices.SortedFunc(maps.Keys(ts.refs), netip.Addr.Compare)
		ds.Sets = append(ds.Sets, s)
	}
	sort.Slice(ds.Sets, func(i, j int) bool { return ds.Sets[i].Name < ds.Sets[j].Name })
	return ds
}
