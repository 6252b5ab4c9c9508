// Package gc owns the garbage collector: it releases addresses and records
// nobody will free, outside the Docker handlers, at start and every minute.
// The rules are ipam's (ipam.Snapshot.Garbage), shared with `calicoctl ipam
// check`; this package adds what only a running daemon knows (its Docker
// engine's endpoints) and coordinates the hosts: each collects its own
// records, and one elected daemon collects those of nodes that are gone.
package gc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// Engine is this host's Docker engine: the calico networks it has and the
// endpoints on them.
type Engine interface {
	CalicoNetworks(ctx context.Context) ([]netdriver.EngineNetwork, error)
}

// Endpoints repairs and removes this host's endpoints (the network driver).
type Endpoints interface {
	FillIn(ctx context.Context, nets []netdriver.EngineNetwork, own []api.Endpoint) (int, error)
	Collect(ctx context.Context, ep api.Endpoint, why string) error
}

// Config wires a collector.
type Config struct {
	Store *datastore.Store
	Host  string
	// Grace is how old an orphan must be before it is released.
	Grace time.Duration
	// NodeTimeout: a node not seen for this long is gone (0: only deleted ones).
	NodeTimeout time.Duration
	Every       time.Duration // default one minute
	Engine      Engine        // nil: no engine checks
	Endpoints   Endpoints
	// Lease is this node's etcd lease: the leadership key lives on it.
	Lease func() datastore.Lease
	Log   *slog.Logger
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
}

// Collector is one daemon's garbage collector.
type Collector struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	seen    map[string]time.Time // findings whose age the records do not tell: first seen
	missing map[string]time.Time // own endpoints the engine did not list: first seen
	last    Report
	total   uint64 // records released since the start (the metrics' counter)
}

// Report is what one pass found and did (api.GCReport, plus the findings).
type Report struct {
	api.GCReport
	Findings []ipam.Finding
}

// New returns a collector.
func New(cfg Config) *Collector {
	if cfg.Every <= 0 {
		cfg.Every = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Collector{cfg: cfg, log: cfg.Log, seen: map[string]time.Time{}, missing: map[string]time.Time{}}
}

// Run passes at once and then every cfg.Every until ctx ends.
func (c *Collector) Run(ctx context.Context) {
	a := agent.Periodic{Name: "gc", Every: c.cfg.Every, Observer: c.cfg.Observer, Log: c.log,
		Pass: func(ctx context.Context) (bool, error) {
			_, err := c.Pass(ctx)
			if err != nil && ctx.Err() == nil {
				c.log.Warn("garbage collection pass incomplete", "err", err)
			}
			return false, err
		}}
	a.Run(ctx)
}

// Last is the latest pass's report.
func (c *Collector) Last() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Pass collects once.
func (c *Collector) Pass(ctx context.Context) (Report, error) {
	now := time.Now()
	rep := Report{GCReport: api.GCReport{At: now.UTC()}}
	snap, err := ipam.LoadSnapshot(ctx, c.cfg.Store)
	if err != nil {
		return c.done(rep, err)
	}
	rep.Leader = c.lead(ctx)
	rep.Findings = snap.Garbage(ipam.CollectOptions{Now: now, Grace: c.cfg.Grace, NodeGoneAfter: c.cfg.NodeTimeout, Seen: c.firstSeen})
	c.forgetSeen(rep.Findings, snap)
	var errs []error
	for _, f := range rep.Findings {
		ours := f.Host == c.cfg.Host && !f.Kind.NodeGone() || rep.Leader && f.Kind.NodeGone()
		if f.Due.After(now) || !ours {
			rep.Pending++
			continue
		}
		ok, err := ipam.Apply(ctx, c.cfg.Store, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			c.log.Info("garbage collected", "kind", string(f.Kind), "host", f.Host, "ip", f.IP, "block", f.Block, "record", f.Key, "why", f.Reason)
			rep.Collected = append(rep.Collected, f.String())
		}
	}
	if c.cfg.Engine != nil {
		n, err := c.engineChecks(ctx, snap, now)
		if err != nil {
			c.log.Debug("Docker engine not checked this pass", "err", err)
		} else {
			rep.EngineChecked = true
			rep.Collected = append(rep.Collected, n...)
		}
		c.mu.Lock()
		for id, since := range c.missing {
			rep.Missing = append(rep.Missing, api.GCMissing{Endpoint: id, Since: since.UTC()})
		}
		c.mu.Unlock()
	}
	return c.done(rep, joinErrs(errs))
}

func (c *Collector) done(rep Report, err error) (Report, error) {
	if err != nil {
		rep.Error = err.Error()
	}
	c.mu.Lock()
	c.last = rep
	c.total += uint64(len(rep.Collected))
	c.mu.Unlock()
	return rep, err
}

// Collected counts what this collector released since it started.
func (c *Collector) Collected() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// lead takes or keeps the cluster collector's key, bound to this node's
// lease: only its holder collects the records of gone nodes. Two holders
// at once (a lapsed lease) would do no harm: every release is a CAS on
// what was read.
func (c *Collector) lead(ctx context.Context) bool {
	if c.cfg.Lease == nil {
		return false
	}
	key := api.GCLeaderKey
	res, err := c.cfg.Store.CAS(ctx, []datastore.Cond{datastore.Absent(key)},
		[]datastore.Op{datastore.PutLeased(key, c.cfg.Host, c.cfg.Lease())}, datastore.Get(key))
	if err != nil {
		return false
	}
	if res.Succeeded {
		c.log.Info("this daemon now collects the garbage of gone nodes", "node", c.cfg.Host)
		return true
	}
	rec, ok := res.One(0)
	var holder string
	return ok && rec.Decode(&holder) == nil && holder == c.cfg.Host
}

func (c *Collector) firstSeen(id string, now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.seen[id]; ok {
		return t
	}
	c.seen[id] = now
	return now
}

func (c *Collector) forgetSeen(fs []ipam.Finding, snap *ipam.Snapshot) {
	keep := make(map[string]bool, len(fs))
	for _, f := range fs {
		keep[f.ID()] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.seen {
		host, unclaimed := strings.CutPrefix(id, ipam.UnclaimedID(""))
		if unclaimed && !snap.Claims[host] {
			continue // still no live daemon: keep counting from when it went
		}
		if !keep[id] {
			delete(c.seen, id)
		}
	}
}

// engineChecks completes adopted endpoints from the engine and removes this
// host's endpoints the engine no longer knows: older than the grace period
// and missing from two passes in a row, so that an engine still restoring
// its containers at start is not taken at its word.
func (c *Collector) engineChecks(ctx context.Context, snap *ipam.Snapshot, now time.Time) ([]string, error) {
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nets, err := c.cfg.Engine.CalicoNetworks(ectx)
	if err != nil {
		return nil, err
	}
	var own []api.Endpoint
	for _, it := range snap.Endpoints {
		if it.Value.Host == c.cfg.Host {
			own = append(own, it.Value)
		}
	}
	if _, err := c.cfg.Endpoints.FillIn(ctx, nets, own); err != nil {
		c.log.Warn("completing endpoint records from the Docker engine failed", "err", err)
	}
	known := map[string]bool{}
	for _, n := range nets {
		for _, e := range n.Endpoints {
			known[e.ID] = true
		}
	}
	var out []string
	c.mu.Lock()
	defer c.mu.Unlock()
	mine := map[string]bool{}
	for _, it := range snap.Endpoints {
		ep := it.Value
		if ep.Host != c.cfg.Host {
			continue
		}
		mine[ep.ID] = true
		if known[ep.ID] {
			delete(c.missing, ep.ID)
			continue
		}
		first, ok := c.missing[ep.ID]
		if !ok {
			c.missing[ep.ID] = now
			continue
		}
		if now.Sub(ep.CreatedAt) < c.cfg.Grace || now.Sub(first) < c.cfg.Every/2 {
			continue
		}
		why := fmt.Sprintf("the Docker engine has not known endpoint %s since %s", ep.ID, first.UTC().Format(time.RFC3339))
		if err := c.cfg.Endpoints.Collect(ctx, ep, why); err != nil {
			c.log.Warn("removing an endpoint the engine no longer knows failed", "endpoint", ep.ID, "err", err)
			continue
		}
		delete(c.missing, ep.ID)
		out = append(out, "endpoint "+ep.ID+": "+why)
	}
	for id := range c.missing {
		if !mine[id] {
			delete(c.missing, id)
		}
	}
	return out, nil
}

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d garbage records could not be collected (first: %w)", len(errs), errs[0])
}
