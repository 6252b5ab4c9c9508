package routing

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

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
func TestNATAppliedOnlyWhenPoolsChangeOrFull(t *testing.T) {
	dp := &countingApplier{}
	s := New(nil, dp, "h1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	pool := func(cidr string) []byte {
		return []byte(`{"name":"p","cidr":"` + cidr + `","blockSize":26,"natOutgoing":true}`)
	}
	steps := []struct {
		name    string
		do      func()
		full    bool
		wantNAT int
	}{
		{"first pass (full) applies NAT", func() { s.Put("/calico/libnetwork/v1/pools/p", pool("10.10.0.0/16")) }, true, 1},
		{"a node record changed: no iptables", func() {
			s.Put("/calico/libnetwork/v1/nodes/h2", []byte(`{"name":"h2","ipv4Address":"10.0.0.2/24"}`))
		}, false, 1},
		{"a resync (full) checks NAT again", func() {}, true, 2},
		{"the pool changed: NAT applied", func() { s.Put("/calico/libnetwork/v1/pools/p", pool("10.11.0.0/16")) }, false, 3},
		{"nothing changed: no iptables", func() {}, false, 3},
	}
	for _, st := range steps {
		st.do()
		if err := s.Apply(st.full); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if dp.nat != st.wantNAT {
			t.Errorf("%s: NAT applied %d times, want %d", st.name, dp.nat, st.wantNAT)
		}
	}
	if dp.routes != len(steps) {
		t.Errorf("routes applied %d times, want every pass (%d)", dp.routes, len(steps))
	}
}
