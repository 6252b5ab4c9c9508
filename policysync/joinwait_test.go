package policysync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// gatedEnforcer records like recorder, but each Apply first waits for the
// gate (when set) and fails while fail is set.
type gatedEnforcer struct {
	recorder
	gate chan struct{}
	mu   sync.Mutex
	fail error
}

func (g *gatedEnforcer) Apply(ds *policy.DesiredState) (fmt.Stringer, error) {
	if g.gate != nil {
		<-g.gate
	}
	g.mu.Lock()
	fail := g.fail
	g.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	return g.recorder.Apply(ds)
}

func (g *gatedEnforcer) Resync(ds *policy.DesiredState) (fmt.Stringer, error) { return g.Apply(ds) }

// TestJoinReturnsOnlyOnceEnforced: EndpointCreated starts the endpoint's
// policy in the background, and EndpointJoined returns only once an applied
// state lists the endpoint (a cali interface no applied state lists passes
// nothing): whether that background pass is done, still running, or
// failed. A record change that leaves the policy as it is (the sandbox
// recorded) costs no further pass.
func TestJoinReturnsOnlyOnceEnforced(t *testing.T) {
	tests := []struct {
		name    string
		gated   bool  // the background pass is still running when Join asks
		fail    error // every pass fails
		wantErr bool
	}{
		{name: "background pass done"},
		{name: "background pass running", gated: true},
		{name: "passes fail", fail: errors.New("nft: no buffer space"), wantErr: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testetcd.Start(t)
			putJSON(t, s, api.NetworkKey("n1"), api.Network{ID: "n1", Name: "net1"})
			enf := &gatedEnforcer{}
			ps := New(s, enf, "h1", slog.New(slog.NewTextHandler(io.Discard, nil)), Options{})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); ps.Run(ctx, time.Hour) }()
			t.Cleanup(func() { cancel(); <-done })
			<-ps.Ready()
			if tc.gated {
				enf.gate = make(chan struct{})
			}
			enf.mu.Lock()
			enf.fail = tc.fail
			enf.mu.Unlock()

			iface := fmt.Sprintf("calij%d", i)
			ep := api.Endpoint{ID: "j", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.9/32"), HostIface: iface, LabelsKnown: true}
			ps.EndpointCreated(ep)
			joined := make(chan error, 1)
			go func() {
				jctx, jcancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer jcancel()
				joined <- ps.EndpointJoined(jctx, ep)
			}()
			if tc.gated {
				close(enf.gate) // both the background pass and Join's may run now
			}
			err := <-joined
			if tc.wantErr {
				if err == nil || !errors.Is(err, tc.fail) {
					t.Fatalf("EndpointJoined = %v, want the enforcer's error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := enf.chainsOf(iface); !ok {
				t.Fatalf("EndpointJoined returned before an applied state listed %s", iface)
			}
			_, n := enf.last()
			again := ep
			again.SandboxKey, again.GatewayIndex = "/var/run/docker/netns/x", 1
			if err := ps.EndpointJoined(ctx, again); err != nil {
				t.Fatal(err)
			}
			if _, n2 := enf.last(); n2 != n {
				t.Errorf("a sandbox-only change applied %d more passes, want none", n2-n)
			}
		})
	}
}
