package policysync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// flaky is a recorder whose next Apply can be made to fail.
type flaky struct {
	recorder
	fail bool
}

func (f *flaky) Apply(ds *policy.DesiredState) (fmt.Stringer, error) {
	if f.fail {
		f.fail = false
		return nil, errors.New("nft: busy")
	}
	return f.recorder.Apply(ds)
}

// A pass runs only when something policy reads changed: a docker run
// rewrites its endpoint's record (sandbox, MAC) without changing its
// policy, and Join's EndpointJoined finds the endpoint already applied
// when the mirror saw its record first. Labels, a new endpoint, a full
// pass and a retry after a failed pass always apply.
func TestPassOnlyOnPolicyChange(t *testing.T) {
	enf := &flaky{}
	ps := New(nil, enf, "h1", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	ps.Reset([]datastore.KV{{Key: api.NetworkKey("n1"), Value: js(api.Network{ID: "n1", Name: "net1"})}})
	ep := api.Endpoint{ID: "a", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.1/32"), HostIface: "calia"}
	key := api.EndpointKey("h1", "a")
	ctx := context.Background()
	steps := []struct {
		name  string
		do    func() error
		fail  bool
		wantN int
	}{
		{"the snapshot (full)", func() error { return ps.Apply(true) }, false, 1},
		{"the endpoint's record", func() error { ps.Put(key, js(ep)); return ps.Apply(false) }, false, 2},
		{"Join of the endpoint already applied", func() error { return ps.EndpointJoined(ctx, ep) }, false, 2},
		{"its sandbox and MAC recorded", func() error {
			ep.SandboxKey, ep.GatewayIndex, ep.MAC = "/var/run/docker/netns/x", 1, "ee:ee:ee:ee:ee:ee"
			ps.Put(key, js(ep))
			return ps.Apply(false)
		}, false, 2},
		{"nothing changed", func() error { return ps.Apply(false) }, false, 2},
		{"its labels learnt", func() error {
			ep.Labels, ep.LabelsKnown, ep.ContainerID = map[string]string{"role": "web"}, true, "c1"
			ps.Put(key, js(ep))
			return ps.Apply(false)
		}, false, 3},
		{"a resync (full)", func() error { return ps.Apply(true) }, false, 4},
		{"Join of an endpoint the mirror has not seen", func() error {
			return ps.EndpointJoined(ctx, api.Endpoint{ID: "b", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.2/32"), HostIface: "calib"})
		}, false, 5},
		{"a deleted endpoint, the pass failing", func() error { ps.Delete(api.EndpointKey("h1", "b")); return ps.Apply(false) }, true, 5},
		{"the next pass tries again", func() error { return ps.Apply(false) }, false, 6},
	}
	for _, st := range steps {
		enf.fail = st.fail
		err := st.do()
		if (err != nil) != st.fail {
			t.Fatalf("%s: err %v, want failure %v", st.name, err, st.fail)
		}
		if _, n := enf.last(); n != st.wantN {
			t.Fatalf("%s: %d passes applied, want %d", st.name, n, st.wantN)
		}
	}
	ds, _ := enf.last()
	if len(ds.Endpoints) != 1 || ds.Endpoints[0].Iface != "calia" {
		t.Fatalf("last applied state %+v, want calia alone", ds.Endpoints)
	}
}
