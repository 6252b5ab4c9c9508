package labels

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/engineapi"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testengine"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

var ctx = context.Background()

func endpoint(t *testing.T, s *datastore.Store, host, id, netID string, age time.Duration) {
	t.Helper()
	ep := api.Endpoint{ID: id, NetworkID: netID, Host: host, CreatedAt: time.Now().Add(-age)}
	if err := s.Put(ctx, api.EndpointKey(host, id), ep); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, s *datastore.Store, host, id string) api.Endpoint {
	t.Helper()
	var ep api.Endpoint
	if _, err := s.Get(ctx, api.EndpointKey(host, id), &ep); err != nil {
		t.Fatal(err)
	}
	return ep
}

func newResolver(t *testing.T, v testengine.Version) (*Resolver, *testengine.Engine, *datastore.Store) {
	t.Helper()
	s := testetcd.Start(t)
	e := testengine.Start(t, v)
	dc, err := engineapi.New(e.Host())
	if err != nil {
		t.Fatal(err)
	}
	return New(s, dc, "host-a", slog.New(slog.DiscardHandler)), e, s
}

// Each endpoint gets its container's org.projectcalico.label.* labels,
// prefix stripped, and its container's ID; an endpoint whose container
// Docker does not show yet waits, and one that never shows is given up on
// with no labels.
func TestResolve(t *testing.T) {
	for _, v := range []testengine.Version{testengine.Docker2010, testengine.Docker285} {
		t.Run(string(v), func(t *testing.T) {
			r, e, s := newResolver(t, v)
			net1 := e.AddNetwork(testengine.Network{Name: "net1", Driver: "calico"})
			net2 := e.AddNetwork(testengine.Network{Name: "net2", Driver: "calico"})
			e.AddContainer(testengine.Container{ID: "c-web", Name: "web", Endpoints: map[string]string{net1: "ep-web", net2: "ep-web2"},
				Labels: map[string]string{Prefix + "role": "web", Prefix + "tier": "front", "com.example.other": "x", Prefix: "empty key"}})
			e.AddContainer(testengine.Container{ID: "c-bare", Name: "bare", Endpoints: map[string]string{net1: "ep-bare"}})
			endpoint(t, s, "host-a", "ep-web", net1, 0)
			endpoint(t, s, "host-a", "ep-web2", net2, 0)
			endpoint(t, s, "host-a", "ep-bare", net1, 0)
			endpoint(t, s, "host-a", "ep-young", net1, 0)             // its container is not listed yet
			endpoint(t, s, "host-a", "ep-stale", net1, 5*time.Minute) // never will be
			endpoint(t, s, "host-b", "ep-other", net1, 0)             // another host's: not ours to resolve

			if !r.pass(ctx) {
				t.Fatal("pass reports nothing pending while ep-young waits for its container")
			}
			want := map[string]string{"role": "web", "tier": "front"}
			for _, id := range []string{"ep-web", "ep-web2"} {
				if ep := read(t, s, "host-a", id); !ep.LabelsKnown || !maps.Equal(ep.Labels, want) || ep.ContainerID != "c-web" {
					t.Fatalf("%s: %+v, want labels %v of c-web", id, ep, want)
				}
			}
			if ep := read(t, s, "host-a", "ep-bare"); !ep.LabelsKnown || len(ep.Labels) != 0 || ep.ContainerID != "c-bare" {
				t.Fatalf("ep-bare: %+v", ep)
			}
			if ep := read(t, s, "host-a", "ep-young"); ep.LabelsKnown {
				t.Fatalf("ep-young taken to have no labels before its container showed: %+v", ep)
			}
			if ep := read(t, s, "host-a", "ep-stale"); !ep.LabelsKnown || len(ep.Labels) != 0 {
				t.Fatalf("ep-stale not given up on: %+v", ep)
			}
			if ep := read(t, s, "host-b", "ep-other"); ep.LabelsKnown {
				t.Fatalf("another host's endpoint resolved: %+v", ep)
			}

			// Its container shows: resolved, and nothing waits any more.
			e.AddContainer(testengine.Container{ID: "c-young", Name: "young", Endpoints: map[string]string{net1: "ep-young"},
				Labels: map[string]string{Prefix + "role": "db"}})
			if r.pass(ctx) {
				t.Fatal("still pending with every endpoint resolved")
			}
			if ep := read(t, s, "host-a", "ep-young"); !ep.LabelsKnown || ep.Labels["role"] != "db" || ep.ContainerID != "c-young" {
				t.Fatalf("ep-young: %+v", ep)
			}

			// Known labels are kept: a later change of the container's
			// labels (impossible in Docker) or its removal changes nothing.
			e.RemoveContainer("c-web")
			r.pass(ctx)
			if ep := read(t, s, "host-a", "ep-web"); !maps.Equal(ep.Labels, want) {
				t.Fatalf("ep-web's labels changed to %v", ep.Labels)
			}
		})
	}
}

// While Docker fails or hangs, endpoints stay unresolved (held, not taken
// to have no labels) and the pass says so; they resolve once Docker
// answers.
func TestDockerDown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault testengine.Fault
		stop  bool
	}{
		{name: "500", fault: testengine.Fault{Status: 500, Body: `{"message":"boom"}`}},
		{name: "dead socket", stop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, e, s := newResolver(t, testengine.Docker285)
			net1 := e.AddNetwork(testengine.Network{Name: "net1", Driver: "calico"})
			e.AddContainer(testengine.Container{ID: "c1", Endpoints: map[string]string{net1: "ep1"}, Labels: map[string]string{Prefix + "role": "web"}})
			endpoint(t, s, "host-a", "ep1", net1, 5*time.Minute) // old enough to be given up on, were Docker's silence taken as an answer
			if tc.stop {
				e.Stop()
			} else {
				e.SetFault("GET /containers/json", tc.fault)
			}
			if !r.pass(ctx) {
				t.Fatal("nothing pending while Docker fails")
			}
			if ep := read(t, s, "host-a", "ep1"); ep.LabelsKnown {
				t.Fatalf("resolved while Docker failed: %+v", ep)
			}
			if tc.stop {
				return
			}
			e.SetFault("GET /containers/json", testengine.Fault{})
			if r.pass(ctx) {
				t.Fatal("still pending once Docker answers")
			}
			if ep := read(t, s, "host-a", "ep1"); ep.Labels["role"] != "web" {
				t.Fatalf("ep1: %+v", ep)
			}
		})
	}
}

// Run resolves an endpoint soon after a Kick (what Join does), and stops
// when its context ends.
func TestRun(t *testing.T) {
	r, e, s := newResolver(t, testengine.Docker2010)
	net1 := e.AddNetwork(testengine.Network{Name: "net1", Driver: "calico"})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(runCtx) }()
	time.Sleep(50 * time.Millisecond) // Run's first pass finds nothing and waits 10 s
	e.AddContainer(testengine.Container{ID: "c1", Endpoints: map[string]string{net1: "ep1"}, Labels: map[string]string{Prefix + "role": "web"}})
	endpoint(t, s, "host-a", "ep1", net1, 0)
	r.Kick()
	deadline := time.Now().Add(5 * time.Second)
	for read(t, s, "host-a", "ep1").Labels["role"] != "web" {
		if time.Now().After(deadline) {
			t.Fatal("not resolved within 5 s of a Kick")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func startRun(t *testing.T, r *Resolver) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func count(reqs []testengine.Request, method, prefix, suffix string) int {
	n := 0
	for _, q := range reqs {
		if q.Method == method && strings.HasPrefix(q.Path, prefix) && strings.HasSuffix(q.Path, suffix) {
			n++
		}
	}
	return n
}

// While the engine's events are followed, each container attached to one
// of the driver's networks is inspected once and its endpoints resolved:
// no list of the host's containers, whatever their number, and another
// driver's containers are not looked at.
func TestFollowsConnectEvents(t *testing.T) {
	for _, v := range []testengine.Version{testengine.Docker2010, testengine.Docker285} {
		t.Run(string(v), func(t *testing.T) {
			r, e, s := newResolver(t, v)
			r.Driver, r.fallback = "calico", time.Hour // no full pass but the first
			net1 := e.AddNetwork(testengine.Network{Name: "net1", Driver: "calico"})
			bridge := e.AddNetwork(testengine.Network{Name: "br", Driver: "bridge"})
			for i := range 50 { // containers already running: never listed again
				e.AddContainer(testengine.Container{ID: fmt.Sprintf("old%d", i), Endpoints: map[string]string{net1: fmt.Sprintf("ep-old%d", i)}})
			}
			startRun(t, r)
			waitUntil(t, "the event stream open", r.following.Load)
			before := e.Requests()
			for i := range 3 {
				id := fmt.Sprintf("ep%d", i)
				endpoint(t, s, "host-a", id, net1, 0)
				e.AddContainer(testengine.Container{ID: fmt.Sprintf("c%d", i), Endpoints: map[string]string{net1: id},
					Labels: map[string]string{Prefix + "role": fmt.Sprintf("r%d", i)}})
				r.Kick() // as Join does
			}
			e.AddContainer(testengine.Container{ID: "cb", Endpoints: map[string]string{bridge: "ep-b"}})
			for i := range 3 {
				id := fmt.Sprintf("ep%d", i)
				waitUntil(t, id+" resolved", func() bool { return read(t, s, "host-a", id).LabelsKnown })
				if ep := read(t, s, "host-a", id); ep.Labels["role"] != fmt.Sprintf("r%d", i) || ep.ContainerID != fmt.Sprintf("c%d", i) {
					t.Fatalf("%s: %+v", id, ep)
				}
			}
			reqs := e.Requests()[len(before):]
			if n := count(reqs, "GET", "/containers/json", ""); n != 0 {
				t.Errorf("the containers were listed %d times while the events were followed", n)
			}
			if n := count(reqs, "GET", "/containers/c", "/json"); n != 3 {
				t.Errorf("%d inspects of the new containers, want one each (3)", n)
			}
			if n := count(reqs, "GET", "/containers/cb", "/json"); n != 0 {
				t.Errorf("a bridge network's container was inspected %d times", n)
			}
		})
	}
}

// When the engine's event stream cannot be followed, a Join makes a full
// pass run soon (labels are learnt by listing, as before); once the stream
// is back, the events are followed again.
func TestEventsDown(t *testing.T) {
	r, e, s := newResolver(t, testengine.Docker285)
	r.fallback = time.Hour
	net1 := e.AddNetwork(testengine.Network{Name: "net1", Driver: "calico"})
	e.SetFault("GET /events", testengine.Fault{Status: 500, Body: `{"message":"boom"}`})
	startRun(t, r)
	endpoint(t, s, "host-a", "ep1", net1, 0)
	e.AddContainer(testengine.Container{ID: "c1", Endpoints: map[string]string{net1: "ep1"}, Labels: map[string]string{Prefix + "role": "web"}})
	r.Kick()
	waitUntil(t, "ep1 resolved by a full pass", func() bool { return read(t, s, "host-a", "ep1").Labels["role"] == "web" })
	if r.following.Load() {
		t.Fatal("following a stream the engine refused")
	}
	if n := count(e.Requests(), "GET", "/containers/json", ""); n == 0 {
		t.Fatal("resolved without listing the containers while the events were down")
	}
	e.SetFault("GET /events", testengine.Fault{})
	waitUntil(t, "the event stream open again", r.following.Load)
	endpoint(t, s, "host-a", "ep2", net1, 0)
	e.AddContainer(testengine.Container{ID: "c2", Endpoints: map[string]string{net1: "ep2"}, Labels: map[string]string{Prefix + "role": "db"}})
	waitUntil(t, "ep2 resolved from its event", func() bool { return read(t, s, "host-a", "ep2").Labels["role"] == "db" })
}

// While the events are followed, a full pass leaves a young endpoint to
// its event (no list of the network's containers) and lists only for one
// its event did not resolve in time.
func TestFullPassLeavesYoungEndpointsToEvents(t *testing.T) {
	r, e, s := newResolver(t, testengine.Docker2010)
	net1 := e.AddNetwork(testengine.Network{Name: "net1", Driver: "calico"})
	r.following.Store(true)
	endpoint(t, s, "host-a", "ep-new", net1, 0)
	if !r.pass(ctx) {
		t.Fatal("nothing pending with ep-new unresolved")
	}
	if n := count(e.Requests(), "GET", "/containers/json", ""); n != 0 {
		t.Fatalf("listed the containers %d times for an endpoint its event will resolve", n)
	}
	endpoint(t, s, "host-a", "ep-missed", net1, time.Minute)
	e.AddContainer(testengine.Container{ID: "c1", Endpoints: map[string]string{net1: "ep-missed"}, Labels: map[string]string{Prefix + "role": "web"}})
	r.pass(ctx)
	if n := count(e.Requests(), "GET", "/containers/json", ""); n != 1 {
		t.Fatalf("listed the containers %d times for an endpoint whose event was missed, want 1", n)
	}
	if ep := read(t, s, "host-a", "ep-missed"); ep.Labels["role"] != "web" {
		t.Fatalf("ep-missed: %+v", ep)
	}
}
