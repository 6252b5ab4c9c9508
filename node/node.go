// Package node owns this host's Node record (its addresses, written only
// when they change) and the claim on its name, on an etcd lease kept alive
// by the heartbeat: the claim is how every host tells that the node's
// daemon is alive, and it stops two daemons from acting as one node.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

const (
	idFile   = "node-id"
	claimTTL = 20 // seconds: how long a dead daemon's claim outlives it
)

// ErrNameTaken is returned when another live daemon holds the node name.
var ErrNameTaken = errors.New("node name in use by another daemon")

// Registration is this daemon's hold on its node name.
type Registration struct {
	store  *datastore.Store
	node   api.Node
	hostID string
	lease  atomic.Int64 // datastore.Lease: replaced by Heartbeat, read by Lease
	// lastBeat is when the lease was last renewed (unix nanoseconds).
	lastBeat atomic.Int64
	log      *slog.Logger
}

// Config says who this node is.
type Config struct {
	Name    string
	DataDir string       // holds the host identity that lets a restarted daemon take its name back
	IPv4    netip.Prefix // the node's address with its prefix length ("10.0.0.1/24"); zero: none
	IPv6    netip.Prefix
	Version string
	// Encapsulations are what this kernel can carry (api.EncapsulationVXLAN,
	// api.EncapsulationIPIP); nil for a caller that did not probe.
	Encapsulations []string
}

// hostID is a random identity kept in the data dir: a daemon restarted on
// the same host (same data dir) may take over its own name at once, even
// after kill -9; another host using the same name is refused.
func hostID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, idFile)
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("record host identity: %w", err)
	}
	return id, nil
}

// Register claims the node name and writes the Node record.
func Register(ctx context.Context, s *datastore.Store, cfg Config, log *slog.Logger) (*Registration, error) {
	id, err := hostID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	r := &Registration{store: s, hostID: id, log: log, node: api.Node{
		Name: cfg.Name, IPv4Address: cfg.IPv4, IPv6Address: cfg.IPv6, Version: cfg.Version,
		Encapsulations: cfg.Encapsulations,
	}}
	if err := r.claim(ctx); err != nil {
		return nil, err
	}
	r.lastBeat.Store(time.Now().UnixNano())
	if err := r.writeRecord(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Node returns the registered record.
func (r *Registration) Node() api.Node { return r.node }

func (r *Registration) claim(ctx context.Context) error {
	lease, err := r.store.Grant(ctx, claimTTL*time.Second)
	if err != nil {
		return fmt.Errorf("etcd lease for node %s: %w", r.node.Name, err)
	}
	val := api.NodeClaim{HostID: r.hostID, PID: os.Getpid(), Since: time.Now().UTC()}
	key := api.NodeClaimKey(r.node.Name)
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		res, err := r.store.CAS(ctx, []datastore.Cond{datastore.Absent(key)},
			[]datastore.Op{datastore.PutLeased(key, val, lease)}, datastore.Get(key))
		if err != nil && !errors.Is(err, datastore.ErrUncertain) {
			return fmt.Errorf("claim node name %s: %w", r.node.Name, err)
		}
		if err == nil && res.Succeeded {
			r.lease.Store(int64(lease))
			return nil
		}
		if err != nil { // unconfirmed: the next pass reads the claim, ours or not
			continue
		}
		rec, ok := res.One(0)
		if !ok {
			continue
		}
		var other api.NodeClaim
		_ = rec.Decode(&other)
		if other.HostID != r.hostID {
			_ = r.store.Revoke(ctx, lease)
			return fmt.Errorf("node name %q is held by another running daemon (pid %d, since %s): give this host its own --nodename (NODENAME): %w",
				r.node.Name, other.PID, other.Since.Format(time.RFC3339), ErrNameTaken)
		}
		// Our own earlier life (restart, kill -9): take the claim over.
		tr, err := r.store.CAS(ctx, []datastore.Cond{datastore.Unchanged(key, rec.ModRevision)},
			[]datastore.Op{datastore.PutLeased(key, val, lease)})
		if err != nil && !errors.Is(err, datastore.ErrUncertain) {
			return fmt.Errorf("claim node name %s: %w", r.node.Name, err)
		}
		if err == nil && tr.Succeeded {
			r.lease.Store(int64(lease))
			return nil
		}
	}
	return fmt.Errorf("claim node name %s: %w", r.node.Name, datastore.ErrConflict)
}

// Lease is the etcd lease the node's claim lives on: keys written with it
// (the garbage collector's leadership) go when the daemon does.
func (r *Registration) Lease() datastore.Lease { return datastore.Lease(r.lease.Load()) }

// writeRecord writes the Node record only when what the daemon says
// (addresses, version, encapsulations) differs from what is stored:
// liveness is the claim's lease, so a running daemon never rewrites its
// record and other hosts' watches stay quiet. LastSeen is set whenever the
// record is written; what the user set (BGP settings, labels) is kept.
func (r *Registration) writeRecord(ctx context.Context) error {
	want := r.node
	want.LastSeen = time.Now().UTC().Truncate(time.Second)
	return datastore.Update(ctx, r.store, api.NodeKey(r.node.Name), func(cur *api.Node) (*api.Node, error) {
		if cur != nil {
			if sameSettings(*cur, want) {
				return nil, datastore.ErrNoChange
			}
			// What the user set with calicoctl stays.
			want.ASNumber, want.RouteReflectorClusterID, want.Labels = cur.ASNumber, cur.RouteReflectorClusterID, cur.Labels
		}
		return &want, nil
	})
}

// sameSettings says whether two records agree on all but LastSeen.
func sameSettings(a, b api.Node) bool {
	return a.Name == b.Name && a.IPv4Address == b.IPv4Address && a.IPv6Address == b.IPv6Address && a.Version == b.Version &&
		slices.Equal(a.Encapsulations, b.Encapsulations)
}

// recordCheckEvery is how many keep-alives pass between two reads of the
// Node record (put back if someone deleted or changed it).
const recordCheckEvery = 12

// Heartbeat keeps the claim's lease alive every interval until ctx ends:
// a keep-alive writes no key, so a steady cluster makes no etcd writes. A
// lost claim (etcd was unreachable past the lease) is taken again; it never
// gives the name away to another host. Now and then the record is read and
// put back only if it is missing or differs.
func (r *Registration) Heartbeat(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for beat := 1; ; beat++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reclaimed := false
		if err := r.store.KeepAliveOnce(ctx, r.Lease()); err != nil {
			r.log.Warn("node claim lapsed; claiming again", "node", r.node.Name, "err", err)
			if err := r.claim(ctx); err != nil {
				r.log.Error("cannot reclaim node name", "node", r.node.Name, "err", err)
				continue
			}
			reclaimed = true
		}
		r.lastBeat.Store(time.Now().UnixNano())
		if reclaimed || beat%recordCheckEvery == 0 {
			if err := r.writeRecord(ctx); err != nil {
				r.log.Warn("node record not checked", "node", r.node.Name, "err", err)
			}
		}
	}
}

// LastHeartbeat is when the claim's lease was last renewed (zero: not yet).
func (r *Registration) LastHeartbeat() time.Time {
	if n := r.lastBeat.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Release drops the claim and records, in LastSeen, when the daemon
// stopped (the record stays: other hosts keep routing to this node's
// containers while it restarts).
func (r *Registration) Release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	stopped := time.Now().UTC().Truncate(time.Second)
	_ = datastore.Update(ctx, r.store, api.NodeKey(r.node.Name), func(cur *api.Node) (*api.Node, error) {
		if cur == nil || !sameSettings(*cur, r.node) {
			return nil, datastore.ErrNoChange // deleted or changed by someone else: theirs
		}
		next := *cur
		next.LastSeen = stopped
		return &next, nil
	})
	_ = r.store.Revoke(ctx, r.Lease())
}

// List returns every node record.
func List(ctx context.Context, s *datastore.Store) ([]api.Node, error) {
	items, err := datastore.List[api.Node](ctx, s, api.NodesPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.Node, 0, len(items))
	for _, it := range items {
		out = append(out, it.Value)
	}
	return out, nil
}

// Claims returns the live daemons' claims by node name: a node is alive
// while its claim is held (its daemon renews the lease every few seconds;
// a dead daemon's claim goes within the lease's 20 s).
func Claims(ctx context.Context, s *datastore.Store) (map[string]api.NodeClaim, error) {
	items, err := datastore.List[api.NodeClaim](ctx, s, api.ClaimsPrefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]api.NodeClaim, len(items))
	for _, it := range items {
		if name, ok := api.ParseNodeClaimKey(it.Key); ok {
			out[name] = it.Value
		}
	}
	return out, nil
}
