package metrics

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
)

// Every metric the Grafana dashboard (deploy/) queries is one the daemon
// exports, so the dashboard does not rot as names change.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	s := m.NewIPAMStats("h1")
	_ = s.Apply(true)
	m.Watch(Sources{
		DatastoreReachable: func() bool { return true }, NodeUp: func() bool { return true }, LastHeartbeat: time.Now,
		Routes: func() int { return 1 }, Peers: func() (int, int) { return 1, 1 }, Veths: func() (int, error) { return 1, nil },
		NFTables: func() (NFTCounts, error) { return NFTCounts{}, nil }, Policy: func() (int, int) { return 1, 1 },
		GCCollected: func() uint64 { return 0 }, Ready: func() bool { return true },
		DataPath: func() DataPathCounts { return DataPathCounts{On: true} },
	})
	// Labelled series appear once touched.
	m.Observe(agent.Pass{Agent: "routing", Mirrored: true, Full: true, Lag: time.Millisecond, Err: errors.New("x")})
	m.Observe(agent.Pass{Agent: "routing", Mirrored: true, Full: true})
	m.ObserveOp("get", "nodes", time.Millisecond, errors.New("x"))
	m.ObserveCAS("blocks", false)
	m.ObserveCall("network", "/NetworkDriver.Join", time.Millisecond, true)
	m.ObserveCall("ipam", "/IpamDriver.RequestAddress", time.Millisecond, false)
	s.inUse.WithLabelValues("p").Set(0)
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	used := regexp.MustCompile(`\b((?:calico_libnetwork|process|go)_[a-z_]+)`).FindAllStringSubmatch(string(b), -1)
	if len(used) < 20 {
		t.Fatalf("the dashboard queries only %d metrics", len(used))
	}
	for _, u := range used {
		name := u[1]
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			name = strings.TrimSuffix(name, suf)
		}
		if !have[name] {
			t.Errorf("the dashboard queries %s, which the daemon does not export", u[1])
		}
	}
}
