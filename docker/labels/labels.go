// Package labels learns the container labels of this host's endpoints from
// the Docker engine and writes them into the endpoint records, where policy
// selectors read them.
package labels

import (
	"context"
	"log/slog"
	"strings"
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
}

// Resolver learns each local endpoint's container labels from Docker
// and writes them into the endpoint record. Docker does not tell a driver
// which container an endpoint belongs to, and a handler must never wait on
// Docker, so this runs on its own, polling briefly after each Join.
type Resolver struct {
	store  *datastore.Store
	docker Docker
	host   string
	log    *slog.Logger
	kick   agent.Kicker
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
	// giveUp is how long an endpoint may stay without a container before
	// it is taken to have no labels.
	giveUp time.Duration
}

// New returns a resolver for host's endpoints.
func New(store *datastore.Store, docker Docker, host string, log *slog.Logger) *Resolver {
	return &Resolver{store: store, docker: docker, host: host, log: log, kick: agent.NewKicker(), giveUp: 2 * time.Minute}
}

// Kick asks for a pass now; it never blocks.
func (r *Resolver) Kick() { r.kick.Kick() }

// Run resolves until ctx ends: every 100 ms while some endpoint waits (it
// is held, passing nothing, until its labels are known), else on a kick or
// every 10 s.
func (r *Resolver) Run(ctx context.Context) {
	a := agent.Periodic{Name: "labels", Every: 10 * time.Second, Soon: 100 * time.Millisecond, Timeout: -1, Kick: r.kick, Observer: r.Observer, Log: r.log,
		Pass: func(ctx context.Context) (bool, error) { return r.pass(ctx), nil }}
	a.Run(ctx)
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
	for _, it := range items {
		if !it.Value.LabelsKnown {
			byNet[it.Value.NetworkID] = append(byNet[it.Value.NetworkID], it.Value)
		}
	}
	pending := false
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
			labels := map[string]string{}
			for k, v := range c.Labels {
				if key, ok := strings.CutPrefix(k, Prefix); ok && key != "" {
					labels[key] = v
				}
			}
			err := datastore.Update(ctx, r.store, api.EndpointKey(r.host, ep.ID), func(cur *api.Endpoint) (*api.Endpoint, error) {
				if cur == nil || cur.LabelsKnown {
					return nil, datastore.ErrNoChange
				}
				cur.Labels, cur.ContainerID, cur.LabelsKnown = labels, c.ID, true
				return cur, nil
			})
			if err != nil {
				pending = true
				continue
			}
			r.log.Info("endpoint labels learnt", "endpoint", ep.ID, "labels", labels, "sinceCreated", time.Since(ep.CreatedAt).Round(time.Millisecond))
		}
	}
	return pending
}
