package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

func TestRegister(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dirA, dirB := t.TempDir(), t.TempDir()

	a, err := Register(ctx, s, Config{Name: "h1", DataDir: dirA, IPv4: netip.MustParsePrefix("10.0.1.1/24"), Version: "v1"}, log)
	if err != nil {
		t.Fatal(err)
	}
	var n api.Node
	if _, err := s.Get(ctx, api.NodeKey("h1"), &n); err != nil || api.PrefixText(n.IPv4Address) != "10.0.1.1/24" || n.LastSeen.IsZero() {
		t.Fatalf("node record = %+v, %v", n, err)
	}

	// Another host (another data dir) claiming the same name is refused.
	_, err = Register(ctx, s, Config{Name: "h1", DataDir: dirB}, log)
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second host with the same name: err = %v, want ErrNameTaken", err)
	}

	// The same host restarted (even after kill -9, claim still live) takes
	// its name back at once.
	a2, err := Register(ctx, s, Config{Name: "h1", DataDir: dirA, IPv4: netip.MustParsePrefix("10.0.1.1/24")}, log)
	if err != nil {
		t.Fatalf("restart on the same host: %v", err)
	}

	// Heartbeat refreshes LastSeen.
	before := n.LastSeen
	hctx, cancel := context.WithCancel(ctx)
	go a2.Heartbeat(hctx, 200*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := s.Get(ctx, api.NodeKey("h1"), &n); err == nil && n.LastSeen.After(before) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if !n.LastSeen.After(before) {
		t.Errorf("LastSeen not refreshed: %v", n.LastSeen)
	}

	// After a clean release another host may take the name.
	a2.Release(ctx)
	_ = a
	if _, err := Register(ctx, s, Config{Name: "h1", DataDir: dirB}, log); err != nil {
		t.Fatalf("name not free after release: %v", err)
	}
	nodes, err := List(ctx, s)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("List = %v, %v", nodes, err)
	}
}

// TestRecordKeepsUserSettings: what a user set on the Node with calicoctl
// (its BGP AS, route reflector cluster ID, labels) survives the daemon's
// start-up write and its heartbeats.
func TestRecordKeepsUserSettings(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	user := api.Node{Name: "h1", ASNumber: 64600, RouteReflectorClusterID: "224.0.0.1", Labels: map[string]string{"rack": "a"}}
	if err := s.Put(ctx, api.NodeKey("h1"), user); err != nil {
		t.Fatal(err)
	}
	r, err := Register(ctx, s, Config{Name: "h1", DataDir: t.TempDir(), IPv4: netip.MustParsePrefix("10.0.1.1/24")}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.writeRecord(ctx); err != nil { // a heartbeat
		t.Fatal(err)
	}
	var n api.Node
	if _, err := s.Get(ctx, api.NodeKey("h1"), &n); err != nil {
		t.Fatal(err)
	}
	if n.ASNumber != 64600 || n.RouteReflectorClusterID != "224.0.0.1" || n.Labels["rack"] != "a" || api.PrefixText(n.IPv4Address) != "10.0.1.1/24" {
		t.Errorf("after the daemon's writes the node is %+v", n)
	}
}
