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
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
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

	// The heartbeat renews the lease and leaves the record alone.
	checkHeartbeat(t, s, a2)

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

// checkHeartbeat runs reg's heartbeat fast: the lease is renewed, the Node
// record is never rewritten while it is right, and is put back when
// someone deletes it.
func checkHeartbeat(t *testing.T, s *datastore.Store, reg *Registration) {
	t.Helper()
	ctx := context.Background()
	key := api.NodeKey(reg.Node().Name)
	rev := func() int64 {
		res, err := s.Read(ctx, datastore.Get(key))
		if err != nil {
			t.Fatal(err)
		}
		rec, ok := res.One(0)
		if !ok {
			return 0
		}
		return rec.ModRevision
	}
	before, beat := rev(), reg.LastHeartbeat()
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); reg.Heartbeat(hctx, 20*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	time.Sleep(20 * recordCheckEvery * 3 * time.Millisecond) // three record checks
	if after := rev(); after != before {
		t.Errorf("the heartbeat rewrote an unchanged Node record (revision %d -> %d)", before, after)
	}
	if !reg.LastHeartbeat().After(beat) {
		t.Errorf("LastHeartbeat not advanced: %v", reg.LastHeartbeat())
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rev() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rev() == 0 {
		t.Error("a deleted Node record was not put back by the running daemon")
	}
}

func TestRegisterWritesOnlyWhatChanged(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	key := api.NodeKey("h1")
	revOf := func() int64 {
		res, err := s.Read(ctx, datastore.Get(key))
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := res.One(0)
		return rec.ModRevision
	}
	cfg := Config{Name: "h1", DataDir: dir, IPv4: netip.MustParsePrefix("10.0.1.1/24"), Version: "v1"}
	steps := []struct {
		name    string
		change  func(*Config)
		written bool
	}{
		{"first start writes the record", func(*Config) {}, true},
		{"a restart with the same settings writes nothing", func(*Config) {}, false},
		{"a new address is written", func(c *Config) { c.IPv4 = netip.MustParsePrefix("10.0.1.2/24") }, true},
		{"a new version is written", func(c *Config) { c.Version = "v2" }, true},
	}
	last := int64(0)
	for _, st := range steps {
		st.change(&cfg)
		r, err := Register(ctx, s, cfg, log)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := revOf(); (got != last) != st.written {
			t.Errorf("%s: record revision %d -> %d", st.name, last, got)
		}
		last = revOf()
		r.Release(ctx)
		var n api.Node
		if _, err := s.Get(ctx, key, &n); err != nil || n.LastSeen.IsZero() || time.Since(n.LastSeen) > time.Minute {
			t.Errorf("%s: after Release LastSeen = %v (%v), want when it stopped", st.name, n.LastSeen, err)
		}
		last = revOf() // Release wrote when it stopped
	}
}

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
