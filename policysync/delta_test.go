package policysync

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// deltaRecorder is a recorder that also takes endpoint-only deltas.
type deltaRecorder struct {
	recorder
	dmu    sync.Mutex
	deltas int
}

func (d *deltaRecorder) ApplyDelta(*policy.Delta) (fmt.Stringer, error) {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	d.deltas++
	return &policy.Delta{}, nil
}

func (d *deltaRecorder) counts() (full, deltas int) {
	_, full = d.last()
	d.dmu.Lock()
	defer d.dmu.Unlock()
	return full, d.deltas
}

// Passes after only endpoints changed (a Join with chains in use, an
// endpoint gone, another host's endpoint) apply a delta; a policy, an
// endpoint whose chains are new or are the last of their kind, a new
// network's first endpoint and resyncs compute in full. After each, the tracked state is what a full computation gives.
func TestEndpointPassesAreIncremental(t *testing.T) {
	enf := &deltaRecorder{}
	ps := New(nil, enf, "h1", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{HoldUnlabelled: true})
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	ps.Reset([]datastore.KV{{Key: api.NetworkKey("n1"), Value: js(api.Network{ID: "n1", Name: "net1"})},
		{Key: api.NetworkKey("n2"), Value: js(api.Network{ID: "n2", Name: "net2"})}})
	ctx := context.Background()
	web := func(id string, n int) api.Endpoint {
		return api.Endpoint{ID: id, NetworkID: "n1", Host: "h1", IPv4: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(n)}), 32),
			HostIface: "cali" + id, Labels: map[string]string{"role": "web"}, LabelsKnown: true}
	}
	pol := api.NetworkPolicy{Name: "web-from-web", PolicySpec: api.PolicySpec{Selector: "role == 'web'",
		Ingress: []api.Rule{{Action: api.Allow, Source: api.EntityRule{Selector: "role == 'web'"}}}}}
	steps := []struct {
		name              string
		do                func() error
		wantFull, wantInc int
	}{
		{"the snapshot", func() error { return ps.Apply(true) }, 1, 0},
		{"a policy", func() error { ps.Put(api.NetworkPolicyKey(pol.Name), js(pol)); return ps.Apply(false) }, 2, 0},
		{"the first web endpoint (new chains)", func() error { return ps.EndpointJoined(ctx, web("a", 1)) }, 3, 0},
		{"a second web endpoint", func() error { return ps.EndpointJoined(ctx, web("b", 2)) }, 3, 1},
		{"a third, unlabelled yet (held, its chain new)", func() error {
			e := web("c", 3)
			e.Labels, e.LabelsKnown = nil, false
			return ps.EndpointJoined(ctx, e)
		}, 4, 1},
		{"its labels learnt (the last held endpoint: its chain goes)", func() error {
			ps.Put(api.EndpointKey("h1", "c"), js(web("c", 3)))
			return ps.Apply(false)
		}, 5, 1},
		{"another host's endpoint", func() error {
			e := web("r", 9)
			e.Host = "h2"
			ps.Put(api.EndpointKey("h2", "r"), js(e))
			return ps.Apply(false)
		}, 5, 2},
		{"an endpoint gone", func() error { ps.Delete(api.EndpointKey("h1", "b")); return ps.Apply(false) }, 5, 3},
		{"the first endpoint of another network", func() error {
			e := web("d", 4)
			e.NetworkID = "n2"
			return ps.EndpointJoined(ctx, e)
		}, 6, 3},
		{"a resync", func() error { return ps.Apply(true) }, 7, 3},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if full, inc := enf.counts(); full != st.wantFull || inc != st.wantInc {
			t.Fatalf("%s: %d full passes and %d deltas, want %d and %d", st.name, full, inc, st.wantFull, st.wantInc)
		}
		ps.mu.Lock()
		m := ps.st.Model(ps.hold)
		ps.mu.Unlock()
		want, err := policy.Compute(m, "h1")
		if err != nil {
			t.Fatal(err)
		}
		if got := ps.tracker.DesiredState().String(); got != want.String() {
			t.Fatalf("%s: tracked state differs from a full computation\n--- tracked\n%s\n--- computed\n%s", st.name, got, want)
		}
	}
}
