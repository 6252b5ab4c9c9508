package ipam

import (
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// A running daemon no longer rewrites its record, so a node is gone only
// once it has held no claim for NodeGoneAfter, counted from the later of
// its record's LastSeen and when the collector first saw it unclaimed.
func TestGoneNodeCountsFromLostClaim(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	after := time.Hour
	tests := []struct {
		name        string
		lastSeen    time.Time
		claimed     bool
		unclaimedAt time.Time // what Seen remembers (zero: Seen is nil)
		gone        bool
	}{
		{"a live claim is never gone, however old the record", now.Add(-48 * time.Hour), true, now.Add(-48 * time.Hour), false},
		{"an old record whose claim just went is not gone yet", now.Add(-48 * time.Hour), false, now.Add(-time.Minute), false},
		{"unclaimed for longer than the timeout is gone", now.Add(-48 * time.Hour), false, now.Add(-2 * time.Hour), true},
		{"stopped recently (LastSeen written at stop) is not gone", now.Add(-time.Minute), false, now.Add(-2 * time.Hour), false},
		{"a one-off check (no memory) judges by LastSeen", now.Add(-2 * time.Hour), false, time.Time{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap := &Snapshot{
				Nodes:       []datastore.Item[api.Node]{{Key: api.NodeKey("h2"), Value: api.Node{Name: "h2", LastSeen: tc.lastSeen}}},
				Endpoints:   []datastore.Item[api.Endpoint]{{Key: "e", Value: api.Endpoint{Host: "h2", ID: "e1"}}},
				Claims:      map[string]bool{"h2": tc.claimed},
				unreadNodes: map[string]bool{},
			}
			opt := CollectOptions{Now: now, NodeGoneAfter: after}
			if !tc.unclaimedAt.IsZero() {
				opt.Seen = func(id string, now time.Time) time.Time {
					if id == UnclaimedID("h2") {
						return tc.unclaimedAt
					}
					return now
				}
			}
			_, gone := snap.goneNodes(opt, snap.index())["h2"]
			if gone != tc.gone {
				t.Errorf("gone = %v, want %v", gone, tc.gone)
			}
		})
	}
}
