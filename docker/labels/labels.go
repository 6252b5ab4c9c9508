// Package labels learns the container labels of this host's endpoints from
// the Docker engine and writes them into the endpoint records, where policy
// selectors read them.
package labels

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/engineapi"
)

// Prefix marks the container labels that become endpoint labels.
const Prefix = "org.projectcalico.label."

// Docker is what the label resolver needs from the engine.
type Docker interface {
	ContainersOnNetwork(ctx context.Context, networkID string) ([]engineapi.ContainerSummary, error)
	Container(ctx context.Context, id string) (*engineapi.Container, error)
	NetworkConnects(ctx context.Context, since time.Time, opened func(), fn func(engineapi.Connect)) error
}

// How often the full pass runs: every, or while some endpoint waits soon
// (the engine's events not followed) or fallback (followed: the events
// resolve it, the pass only catches what they missed).
const (
	every    = 10 * time.Second
	soon     = 100 * time.Millisecond
	fallback = 2 * time.Second
)

// Resolver learns each local endpoint's container labels from Docker
// and writes them into the endpoint record. Docker does not tell a driver
// which container an endpoint belongs to, and a handler must never wait on
// Docker, so this runs on its own: it follows the engine's network connect
// events, each naming the container just attached, and inspects that one
// container, so a docker run costs the same with 10 or 1,000 containers on
// the host. A full pass (the host's endpoint records, and the containers of
// each network that has one unresolved) catches what the events missed.
type Resolver struct {
	store  *datastore.Store
	docker Docker
	host   string
	log    *slog.Logger
	kick   agent.Kicker // a Join
	// Driver, when set, is the network driver whose connect events are
	// followed; the others' containers are not inspected.
	Driver string
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
	// giveUp is how long an endpoint may stay without a container before
	// it is taken to have no labels.
	giveUp time.Duration
	// fallback is how soon a full pass follows a Join while the events
	// are followed.
	fallback time.Duration

	attached  agent.Kicker // the engine told of containers attached
	following atomic.Bool  // the engine's event stream is open
	mu        sync.Mutex
	queue     []string // containers attached, not inspected yet
}

// New returns a resolver for host's endpoints.
func New(store *datastore.Store, docker Docker, host string, log *slog.Logger) *Resolver {
	return &Resolver{store: store, docker: docker, host: host, log: log, kick: agent.NewKicker(), attached: agent.NewKicker(), giveUp: 2 * time.Minute,
		fallback: fallback}
}

// Kick tells of a Join; it never blocks.
func (r *Resolver) Kick() { r.kick.Kick() }

// Run resolves until ctx ends: each container the engine's events name, at
// once; a full pass at start, every 10 s, soon after a Join while the
// events are not followed (else within 2 s, for what they missed) and,
// while some endpoint waits (it is held, passing nothing, until its labels
// are known), every 100 ms (2 s while the events are followed).
func (r *Resolver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.follow(ctx) }()
	defer wg.Wait()
	full := time.NewTimer(0)
	defer full.Stop()
	due := time.Now()
	within := func(d time.Duration) { // the full pass runs at the latest in d
		if at := time.Now().Add(d); at.Before(due) {
			due = at
			full.Reset(d)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.attached:
			if r.observe(false, func() bool { return r.resolveAttached(ctx) }) {
				within(r.fallback)
			}
		case <-r.kick:
			within(r.wait())
		case <-full.C:
			next := every
			if r.observe(true, func() bool { return r.pass(ctx) }) {
				next = r.wait()
			}
			due = time.Now().Add(next)
			full.Reset(next)
		}
	}
}

// wait is how soon a full pass should look at an endpoint that waits.
func (r *Resolver) wait() time.Duration {
	if r.following.Load() {
		return r.fallback
	}
	return soon
}

// observe runs one pass and reports it; it returns the pass's answer
// (something waits).
func (r *Resolver) observe(full bool, pass func() bool) bool {
	start := time.Now()
	again := pass()
	if r.Observer != nil {
		r.Observer.Observe(agent.Pass{Agent: "labels", Full: full, At: start, Took: time.Since(start)})
	}
	return again
}

// follow queues the containers the engine's network connect events name,
// until ctx ends; a broken stream is opened again (replaying from its last
// event) after a second, and a full pass looks for what it missed.
func (r *Resolver) follow(ctx context.Context) {
	var since time.Time // first: from now on (the first full pass covers what came before)
	// The replay point moves only with events: an attempt that fails before
	// its stream opens must not skip what came since the last one seen.
	last := time.Now()
	for {
		err := r.docker.NetworkConnects(ctx, since, func() { r.following.Store(true) }, func(c engineapi.Connect) {
			last = c.Time
			if r.Driver != "" && c.Driver != r.Driver {
				return
			}
			r.mu.Lock()
			r.queue = append(r.queue, c.Container)
			r.mu.Unlock()
			r.attached.Kick()
		})
		was := r.following.Swap(false)
		if ctx.Err() != nil {
			return
		}
		if was {
			r.log.Warn("the Docker engine's event stream broke; labels are learnt by listing containers until it is back", "err", err)
		} else {
			r.log.Debug("cannot follow the Docker engine's events", "err", err)
		}
		r.kick.Kick()
		since = last
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// resolveAttached inspects the containers the events named and learns
// their endpoints' labels; it reports whether one could not be read (a
// full pass then looks again).
func (r *Resolver) resolveAttached(ctx context.Context) bool {
	r.mu.Lock()
	ids := r.queue
	r.queue = nil
	r.mu.Unlock()
	failed := false
	done := map[string]bool{}
	for _, id := range ids {
		if done[id] {
			continue
		}
		done[id] = true
		c, err := r.docker.Container(ctx, id)
		if err != nil {
			failed = failed || !engineapi.IsNotFound(err) // a removed container's endpoints go with it
			continue
		}
		for _, n := range c.NetworkSettings.Networks {
			if n.EndpointID != "" && r.learn(ctx, n.EndpointID, c.ID, c.Config.Labels) != nil {
				failed = true
			}
		}
	}
	return failed
}

// pass resolves what it can and reports whether endpoints still wait.
func (r *Resolver) pass(ctx context.Context) bool {
	// A record that does not decode is the repair pass's to report; the
	// others still get their labels.
	items, _, err := datastore.ListReadable[api.Endpoint](ctx, r.store, api.HostEndpointsPrefix(r.host))
	if err != nil {
		return true
	}
	byNet := map[string][]api.Endpoint{}
	pending := false
	following := r.following.Load()
	for _, it := range items {
		switch ep := it.Value; {
		case ep.LabelsKnown:
		case following && time.Since(ep.CreatedAt) < r.fallback:
			pending = true // its event is on the way: no list of the network's containers for it
		default:
			byNet[ep.NetworkID] = append(byNet[ep.NetworkID], ep)
		}
	}
	for netID, eps := range byNet {
		cs, err := r.docker.ContainersOnNetwork(ctx, netID)
		if err != nil {
			pending = true
			continue
		}
		byEP := map[string]engineapi.ContainerSummary{}
		for _, c := range cs {
			for _, n := range c.NetworkSettings.Networks {
				byEP[n.EndpointID] = c
			}
		}
		for _, ep := range eps {
			c, found := byEP[ep.ID]
			if !found && time.Since(ep.CreatedAt) < r.giveUp {
				pending = true
				continue
			}
			if r.learn(ctx, ep.ID, c.ID, c.Labels) != nil {
				pending = true
			}
		}
	}
	return pending
}

// learn writes an endpoint's labels (from its container's, prefix
// stripped) unless they are known or the endpoint is not this host's.
func (r *Resolver) learn(ctx context.Context, id, containerID string, containerLabels map[string]string) error {
	labels := map[string]string{}
	for k, v := range containerLabels {
		if key, ok := strings.CutPrefix(k, Prefix); ok && key != "" {
			labels[key] = v
		}
	}
	var created time.Time
	changed := false
	err := datastore.Update(ctx, r.store, api.EndpointKey(r.host, id), func(cur *api.Endpoint) (*api.Endpoint, error) {
		if cur == nil || cur.LabelsKnown {
			return nil, datastore.ErrNoChange
		}
		cur.Labels, cur.ContainerID, cur.LabelsKnown = labels, containerID, true
		created, changed = cur.CreatedAt, true
		return cur, nil
	})
	if err == nil && changed {
		r.log.Info("endpoint labels learnt", "endpoint", id, "labels", labels, "sinceCreated", time.Since(created).Round(time.Millisecond))
	}
	return err
}
