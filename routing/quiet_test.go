package routing

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
)

// countingApplier counts the data plane calls of the syncer.
type countingApplier struct{ routes, nat int }

func (c *countingApplier) ApplyRoutes([]carrier.BlockRoute) (dataplane.ApplyResult, error) {
	c.routes++
	return dataplane.ApplyResult{}, nil
}

func (c *countingApplier) SetNATOutgoing(_, _ []netip.Prefix) error { c.nat++; return nil }

// A pass after a change that leaves the pools alone (a node, block or
// endpoint record) does not run iptables; a full pass and a pool change do.
// A pass after nothing, or after only this host's own endpoints changed,
// touches no route either (each ApplyRoutes dumps the route table, which
// grows with the host's containers); a full pass always does.
func TestNATAppliedOnlyWhenPoolsChangeOrFull(t *testing.T) {
	dp := &countingApplier{}
	s := New(nil, dp, "h1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	pool := func(cidr string) []byte {
		return []byte(`{"name":"p","cidr":"` + cidr + `","blockSize":26,"natOutgoing":true}`)
	}
	steps := []struct {
		name       string
		do         func()
		full       bool
		wantNAT    int
		wantRoutes int
	}{
		{"first pass (full) applies NAT", func() { s.Put("/calico/libnetwork/v1/pools/p", pool("10.10.0.0/16")) }, true, 1, 1},
		{"a node record changed: no iptables", func() {
			s.Put("/calico/libnetwork/v1/nodes/h2", []byte(`{"name":"h2","ipv4Address":"10.0.0.2/24"}`))
		}, false, 1, 2},
		{"a resync (full) checks NAT again", func() {}, true, 2, 3},
		{"the pool changed: NAT applied", func() { s.Put("/calico/libnetwork/v1/pools/p", pool("10.11.0.0/16")) }, false, 3, 4},
		{"nothing changed: no iptables, no routes", func() {}, false, 3, 4},
		{"one of this host's endpoints came and went: nothing", func() {
			s.Put(api.EndpointKey("h1", "ep1"), []byte(`{"id":"ep1","host":"h1","ipv4":"10.11.0.5/32"}`))
			s.Delete(api.EndpointKey("h1", "ep2"))
		}, false, 3, 4},
		{"another host's endpoint changed: routes checked", func() {
			s.Put(api.EndpointKey("h2", "ep3"), []byte(`{"id":"ep3","host":"h2","ipv4":"10.11.0.6/32"}`))
		}, false, 3, 5},
		{"a block claimed: routes checked", func() {
			s.Put(api.BlockKey(netip.MustParsePrefix("10.11.0.0/26")), []byte(`{"cidr":"10.11.0.0/26","affinity":"h1"}`))
		}, false, 3, 6},
		{"an address allocated in it (its affinity the same): nothing", func() {
			s.Put(api.BlockKey(netip.MustParsePrefix("10.11.0.0/26")), []byte(`{"cidr":"10.11.0.0/26","affinity":"h1","allocations":[{"host":"h1","handle":"ee:ee","seq":1}],"unallocated":[],"seq":1}`))
		}, false, 3, 6},
		{"a resync (full) checks both", func() {}, true, 4, 7},
	}
	for _, st := range steps {
		st.do()
		if err := s.Apply(st.full); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if dp.nat != st.wantNAT {
			t.Errorf("%s: NAT applied %d times, want %d", st.name, dp.nat, st.wantNAT)
		}
		if dp.routes != st.wantRoutes {
			t.Errorf("%s: routes applied %d times, want %d", st.name, dp.routes, st.wantRoutes)
		}
	}
	if n := len(s.st.Endpoints); n != 1 {
		t.Errorf("the syncer keeps %d endpoints, want only the other host's one", n)
	}
}
