package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
	"github.com/calico-libnetwork/calico-libnetwork/policysync"
	"github.com/calico-libnetwork/calico-libnetwork/routing"
)

// recorder is a watcher's data plane: it notes when each route was first
// handed to it, and counts applies.
type recorder struct {
	mu      sync.Mutex
	first   map[netip.Prefix]time.Time
	routes  int
	applies int
}

func (r *recorder) ApplyRoutes(rs []carrier.BlockRoute) (dataplane.ApplyResult, error) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applies++
	r.routes = len(rs)
	for _, x := range rs {
		if _, ok := r.first[x.Dst]; !ok {
			r.first[x.Dst] = now
		}
	}
	return dataplane.ApplyResult{}, nil
}

func (r *recorder) SetNATOutgoing(_, _ []netip.Prefix) error { return nil }

func (r *recorder) seen(dst netip.Prefix) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.first[dst]
	return t, ok
}

func (r *recorder) count() (routes, applies int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes, r.applies
}

// enforcer is a watcher's policy data plane: it only counts.
type enforcer struct {
	mu        sync.Mutex
	endpoints int
}

type done struct{}

func (done) String() string { return "recorded" }

func (e *enforcer) Apply(ds *policy.DesiredState) (fmt.Stringer, error) {
	e.mu.Lock()
	e.endpoints = len(ds.Endpoints)
	e.mu.Unlock()
	return done{}, nil
}

func (e *enforcer) Resync(ds *policy.DesiredState) (fmt.Stringer, error) { return e.Apply(ds) }

// passes counts each agent's passes and their time (agent.Observer).
type passes struct {
	mu    sync.Mutex
	n     map[string]int
	spent map[string]time.Duration
}

func newPasses() *passes { return &passes{n: map[string]int{}, spent: map[string]time.Duration{}} }

func (p *passes) Observe(x agent.Pass) {
	p.mu.Lock()
	p.n[x.Agent]++
	p.spent[x.Agent] += x.Took
	p.mu.Unlock()
}

func (p *passes) snapshot() (map[string]int, map[string]time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, s := map[string]int{}, map[string]time.Duration{}
	for k, v := range p.n {
		n[k] = v
	}
	for k, v := range p.spent {
		s[k] = v
	}
	return n, s
}

// watcher is one real host: registered like a daemon, with the real
// route-sync and policy agents.
type watcher struct {
	name   string
	routes *recorder
	policy *enforcer
}

// addWatcher registers a real host and runs its agents in the cluster's
// group, reporting to obs.
func (c *cluster) addWatcher(i int, obs agent.Observer) (*watcher, error) {
	w := &watcher{name: fmt.Sprintf("watcher-%d", i), routes: &recorder{first: map[netip.Prefix]time.Time{}}, policy: &enforcer{}}
	if err := c.addHost(w.name, i+1); err != nil {
		return nil, err
	}
	rs := routing.New(c.store, w.routes, w.name, c.log)
	rs.Observer = obs
	ps := policysync.New(c.store, w.policy, w.name, c.log, policysync.Options{})
	ps.Observer = obs
	c.group.Go(func() error { rs.Run(c.ctx); return nil })
	c.group.Go(func() error { ps.Run(c.ctx, 30*time.Second); return nil })
	return w, nil
}

// waitRoutes waits until every watcher was handed at least n routes.
func waitRoutes(ctx context.Context, ws []*watcher, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ok := true
		for _, w := range ws {
			if r, _ := w.routes.count(); r < n {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("watchers not handed %d routes within %s", n, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
