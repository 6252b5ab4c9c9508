package gc

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// engineView is this host's engine as the collector sees it: the endpoint
// IDs it lists (a recorded answer; the e2e suites use real engines).
type engineView struct {
	mu  sync.Mutex
	ids []string
	err error
}

func (e *engineView) CalicoNetworks(context.Context) ([]netdriver.EngineNetwork, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := netdriver.EngineNetwork{ID: "net1", Name: "net1"}
	for _, id := range e.ids {
		n.Endpoints = append(n.Endpoints, netdriver.EngineEndpoint{ID: id})
	}
	return []netdriver.EngineNetwork{n}, e.err
}

// collected records what the collector asked the driver to remove.
type collected struct {
	mu  sync.Mutex
	ids []string
	s   *datastore.Store
}

func (c *collected) FillIn(context.Context, []netdriver.EngineNetwork, []api.Endpoint) (int, error) {
	return 0, nil
}

func (c *collected) Collect(ctx context.Context, ep api.Endpoint, why string) error {
	c.mu.Lock()
	c.ids = append(c.ids, ep.ID)
	c.mu.Unlock()
	return c.s.Delete(ctx, api.EndpointKey(ep.Host, ep.ID))
}

func TestOneLeaderForGoneNodes(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	var cs []*Collector
	for _, host := range []string{"a", "b", "c"} {
		l, err := s.Grant(ctx, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, New(Config{Store: s, Host: host, Grace: time.Minute, Lease: func() datastore.Lease { return l }, Log: quiet()}))
	}
	leaders := 0
	for round := 0; round < 2; round++ {
		leaders = 0
		for _, c := range cs {
			if c.lead(ctx) {
				leaders++
			}
		}
		if leaders != 1 {
			t.Fatalf("round %d: %d leaders, want exactly 1", round, leaders)
		}
	}
}

// An endpoint the engine does not list goes only when it is older than the
// grace period and missing from two passes; an engine that does not answer
// is never taken to mean "gone".
func TestEngineChecksNeedTwoPasses(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	old := time.Now().Add(-time.Hour)
	for _, ep := range []api.Endpoint{
		{ID: "known", Host: "h", IPv4: netip.MustParsePrefix("10.0.0.1/32"), CreatedAt: old},
		{ID: "gone", Host: "h", IPv4: netip.MustParsePrefix("10.0.0.2/32"), CreatedAt: old},
		{ID: "young", Host: "h", IPv4: netip.MustParsePrefix("10.0.0.3/32"), CreatedAt: time.Now()},
		{ID: "other-host", Host: "h2", IPv4: netip.MustParsePrefix("10.0.0.4/32"), CreatedAt: old},
	} {
		if err := s.Put(ctx, api.EndpointKey(ep.Host, ep.ID), ep); err != nil {
			t.Fatal(err)
		}
	}
	eng := &engineView{ids: []string{"known"}}
	drv := &collected{s: s}
	c := New(Config{Store: s, Host: "h", Grace: 10 * time.Minute, Every: 20 * time.Millisecond, Engine: eng, Endpoints: drv, Log: quiet()})
	pass := func() Report {
		t.Helper()
		r, err := c.Pass(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := pass(); !r.EngineChecked || len(drv.ids) != 0 {
		t.Fatalf("first pass removed %v (engine checked %v): a single miss must not count", drv.ids, r.EngineChecked)
	}
	eng.mu.Lock()
	eng.err = context.DeadlineExceeded
	eng.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	if r := pass(); r.EngineChecked || len(drv.ids) != 0 {
		t.Fatalf("a pass with the engine down removed %v", drv.ids)
	}
	eng.mu.Lock()
	eng.err = nil
	eng.mu.Unlock()
	pass()
	if len(drv.ids) != 1 || drv.ids[0] != "gone" {
		t.Fatalf("removed %v, want only [gone] (known is listed, young is within the grace period, other-host is not ours)", drv.ids)
	}
}

// The collector acts on its own host's garbage and leaves other live hosts'
// alone; ipam check (same rules) sees the same.
func TestCollectsOnlyItsOwnGarbage(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	p := api.IPPool{Name: "p", CIDR: "10.9.0.0/24"}
	p.Normalize()
	if err := s.Put(ctx, api.PoolKey(p.Name), p); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-time.Hour)
	var mine, theirs netip.Addr
	for _, host := range []string{"h", "h2"} {
		if err := s.Put(ctx, api.NodeKey(host), api.Node{Name: host, LastSeen: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, api.NodeClaimKey(host), "x"); err != nil {
			t.Fatal(err)
		}
		a := ipam.New(s, host, quiet())
		a.SetClock(func() time.Time { return long })
		ip, err := a.AllocateOnce(ctx, "docker.1", ipam.Selection{Family: 4})
		if err != nil {
			t.Fatal(err)
		}
		if host == "h" {
			mine = ip
		} else {
			theirs = ip
		}
	}
	c := New(Config{Store: s, Host: "h", Grace: time.Minute, Log: quiet()})
	r, err := c.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Collected) != 1 || r.Pending != 1 {
		t.Fatalf("collected %v, %d pending; want this host's one and the other's pending", r.Collected, r.Pending)
	}
	snap, err := ipam.LoadSnapshot(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Lookup(mine).Owner != nil || snap.Lookup(theirs).Owner == nil {
		t.Fatalf("after the pass: mine %v, theirs %v; want mine freed, theirs kept", snap.Lookup(mine).Owner, snap.Lookup(theirs).Owner)
	}
}
