package node

import (
	"context"
	"errors"
	"fmt"
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

// The record says what the kernel can carry; an empty list (neither) is
// kept as such, not read back as a record older than the list.
func TestRegisterRecordsEncapsulations(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name        string
		encaps      []string
		vxlan, ipip bool
	}{
		{"vxlan only", []string{api.EncapsulationVXLAN}, true, false},
		{"both", []string{api.EncapsulationVXLAN, api.EncapsulationIPIP}, true, true},
		{"neither", []string{}, false, false},
		{"not probed (an older daemon's record)", nil, true, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("enc%d", i)
			r, err := Register(ctx, s, Config{Name: name, DataDir: t.TempDir(), Encapsulations: tc.encaps}, log)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Release(ctx)
			var n api.Node
			if _, err := s.Get(ctx, api.NodeKey(name), &n); err != nil {
				t.Fatal(err)
			}
			if n.HasEncapsulation(api.EncapsulationVXLAN) != tc.vxlan || n.HasEncapsulation(api.EncapsulationIPIP) != tc.ipip {
				t.Errorf("record %v: vxlan %v ipip %v, want %v %v", n.Encapsulations, n.HasEncapsulation(api.EncapsulationVXLAN), n.HasEncapsulation(api.EncapsulationIPIP), tc.vxlan, tc.ipip)
			}
		})
	}
}
