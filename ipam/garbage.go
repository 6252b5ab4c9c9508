package ipam

// The garbage rules: what the collector in each daemon releases, and what
// `calicoctl ipam check` reports (and `--fix` applies). One set of rules,
// computed from one consistent snapshot, serves both.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// GarbageKind says what a finding is.
type GarbageKind string

const (
	// An address RequestAddress gave out that no endpoint ever took: the
	// daemon died before CreateEndpoint, or Docker rolled back while the
	// release could not reach the daemon.
	GarbageUnclaimed GarbageKind = "allocation never used by an endpoint"
	// An address whose endpoint DeleteEndpoint removed, but whose
	// ReleaseAddress never came.
	GarbageUnreleased GarbageKind = "allocation of a deleted endpoint"
	// An address bound to an endpoint whose record is gone.
	GarbageEndpointGone GarbageKind = "allocation of a missing endpoint"
	// An address in a block with no record saying who asked for it (blocks
	// written before owners were recorded), and no endpoint holding it.
	GarbageUntracked GarbageKind = "allocation with no endpoint"
	// A handle record whose address its allocation no longer holds.
	GarbageStaleHandle GarbageKind = "stale handle record"
	// Records of a node that is gone: deleted, or not seen for the
	// configured time.
	GarbageNodeAllocation GarbageKind = "allocation of a gone node"
	GarbageNodeEndpoint   GarbageKind = "endpoint of a gone node"
	GarbageNodeBlock      GarbageKind = "block of a gone node"
)

// NodeGone says whether the kind belongs to a node that is gone, which only
// the collector elected for the cluster acts on.
func (k GarbageKind) NodeGone() bool {
	return k == GarbageNodeAllocation || k == GarbageNodeEndpoint || k == GarbageNodeBlock
}

// Finding is one piece of garbage.
type Finding struct {
	Kind   GarbageKind
	Host   string // whose record it is
	IP     netip.Addr
	Block  netip.Prefix // the block holding IP, or the block itself
	Owner  *api.Owner   // the allocation to free, for allocation kinds
	Key    string       // the record to delete, for record kinds
	Rev    int64        // its revision: it is deleted only if unchanged
	Reason string
	// Due is when it may be collected: when it became garbage plus the
	// grace period. Zero when that is not known (see CollectOptions.Seen).
	Due time.Time
}

func (f Finding) String() string {
	what := f.Key
	if f.IP.IsValid() {
		what = f.IP.String()
	} else if f.Block.IsValid() {
		what = "block " + f.Block.String()
	}
	return fmt.Sprintf("%s: %s (host %s): %s", f.Kind, what, orUnknown(f.Host), f.Reason)
}

// ID identifies a finding across passes (for CollectOptions.Seen).
func (f Finding) ID() string {
	return fmt.Sprintf("%s|%s|%s|%s|%v", f.Kind, f.Host, f.IP, f.Key, f.Owner)
}

// CollectOptions tune the garbage rules.
type CollectOptions struct {
	Now time.Time
	// Grace is how old an orphan must be before it is collected.
	Grace time.Duration
	// NodeGoneAfter: a node whose daemon has held no claim for this long
	// (since its record's LastSeen, or since Seen first saw it unclaimed,
	// whichever is later) is gone (0: only a deleted node is).
	NodeGoneAfter time.Duration
	// Seen, when set, returns when a finding whose age the records do not
	// tell was first seen (the collector remembers it across passes); nil
	// treats such findings as due now (a one-off check).
	Seen func(id string, now time.Time) time.Time
}

func (o CollectOptions) due(since time.Time) time.Time { return since.Add(o.Grace) }

// UnclaimedID is the Seen id under which the collector remembers since when
// a node's daemon has held no claim.
func UnclaimedID(host string) string { return "unclaimed|" + host }

// unclaimedSince is when host's daemon was last known alive: the later of
// its record's LastSeen (written when the daemon starts with new settings
// and when it stops) and when this collector first saw it without a claim.
// A running daemon renews its claim's lease instead of rewriting its
// record, so LastSeen alone may be old for a node that died a minute ago.
func (o CollectOptions) unclaimedSince(host string, n api.Node) time.Time {
	since := n.LastSeen
	if o.Seen != nil {
		if t := o.Seen(UnclaimedID(host), o.Now); t.After(since) {
			since = t
		}
	}
	return since
}

func (o CollectOptions) dueFirstSeen(f Finding) time.Time {
	if o.Seen == nil {
		return o.Now
	}
	return o.due(o.Seen(f.ID(), o.Now))
}

// Garbage applies the rules to the snapshot. A live node's allocations and
// endpoints are judged by their own daemon's records (Finding.Host); the
// records of a gone node by the node rules only.
func (s *Snapshot) Garbage(opt CollectOptions) []Finding {
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	idx := s.index()
	gone := s.goneNodes(opt, idx)
	var out []Finding
	add := func(f Finding, since time.Time) {
		if since.IsZero() {
			f.Due = opt.dueFirstSeen(f)
		} else {
			f.Due = opt.due(since)
		}
		out = append(out, f)
	}
	for host, since := range gone {
		s.nodeGarbage(host, since, idx, add)
	}
	s.handleGarbage(idx, gone, add)
	s.untrackedGarbage(idx, gone, add)
	sort.SliceStable(out, func(i, j int) bool { return kindOrder(out[i].Kind) < kindOrder(out[j].Kind) })
	return out
}

// kindOrder applies allocations before the records that depend on them, so
// that a gone node's emptied blocks go in the same pass.
func kindOrder(k GarbageKind) int {
	switch k {
	case GarbageNodeEndpoint:
		return 1
	case GarbageNodeBlock:
		return 2
	}
	return 0
}

type snapIndex struct {
	blockOf   map[netip.Addr]*api.Block // block holding each allocated address
	endpoints map[string]bool           // host/endpoint ID
	held      map[string]bool           // host/ip held by an endpoint record
	handles   map[string]bool           // host/handle/ip/seq of every handle record
}

func (s *Snapshot) index() snapIndex {
	idx := snapIndex{blockOf: map[netip.Addr]*api.Block{}, endpoints: map[string]bool{}, held: map[string]bool{}, handles: map[string]bool{}}
	for i := range s.Blocks {
		b := &s.Blocks[i].Value
		for ord, o := range b.Allocations {
			if o != nil {
				idx.blockOf[b.Addr(ord)] = b
			}
		}
	}
	for _, it := range s.Endpoints {
		e := it.Value
		idx.endpoints[e.Host+"/"+e.ID] = true
		for _, a := range e.Addrs() {
			idx.held[e.Host+"/"+a.String()] = true
			idx.held["/"+a.String()] = true
		}
	}
	for _, h := range s.Handles {
		idx.handles[fmt.Sprintf("%s/%s/%s/%d", h.Host, h.Handle, h.IP, h.Record.Seq)] = true
	}
	return idx
}

// goneNodes returns the hosts that hold records but have no live daemon,
// with when they were last known alive (zero: unknown).
func (s *Snapshot) goneNodes(opt CollectOptions, idx snapIndex) map[string]time.Time {
	records := map[string]api.Node{}
	for _, n := range s.Nodes {
		records[n.Value.Name] = n.Value
	}
	hosts := map[string]bool{}
	for _, b := range s.Blocks {
		hosts[b.Value.Affinity] = true
		for _, o := range b.Value.Allocations {
			if o != nil {
				hosts[o.Host] = true
			}
		}
	}
	for _, e := range s.Endpoints {
		hosts[e.Value.Host] = true
	}
	for _, h := range s.Handles {
		hosts[h.Host] = true
	}
	gone := map[string]time.Time{}
	if len(records) == 0 && len(s.unreadNodes) == 0 {
		return gone // no node records at all (an older datastore): hosts cannot be judged
	}
	for h := range hosts {
		if h == "" || s.Claims[h] || s.unreadNodes[h] {
			continue
		}
		n, ok := records[h]
		switch {
		case !ok:
			gone[h] = time.Time{}
		case opt.NodeGoneAfter > 0:
			if since := opt.unclaimedSince(h, n); !since.IsZero() && opt.Now.Sub(since) > opt.NodeGoneAfter {
				gone[h] = since.Add(opt.NodeGoneAfter)
			}
		}
	}
	return gone
}

func (s *Snapshot) nodeGarbage(host string, since time.Time, idx snapIndex, add func(Finding, time.Time)) {
	why := "its node record was deleted"
	if !since.IsZero() {
		why = "its daemon has not been seen since " + since.UTC().Format(time.RFC3339)
	}
	for _, it := range s.Blocks {
		b := it.Value
		for ord, o := range b.Allocations {
			if o != nil && o.Host == host {
				add(Finding{Kind: GarbageNodeAllocation, Host: host, IP: b.Addr(ord), Block: b.CIDR, Owner: o, Reason: why}, since)
			}
		}
		if b.Affinity == host {
			add(Finding{Kind: GarbageNodeBlock, Host: host, Block: b.CIDR, Key: it.Key, Rev: it.ModRevision,
				Reason: why + "; removed once no other host's address is in it"}, since)
		}
	}
	for _, it := range s.Endpoints {
		if it.Value.Host == host {
			add(Finding{Kind: GarbageNodeEndpoint, Host: host, Key: it.Key, Rev: it.ModRevision,
				Reason: fmt.Sprintf("endpoint %s: %s", abbrevID(it.Value.ID), why)}, since)
		}
	}
}

func (s *Snapshot) handleGarbage(idx snapIndex, gone map[string]time.Time, add func(Finding, time.Time)) {
	for _, h := range s.Handles {
		if _, g := gone[h.Host]; g && h.Host != "" {
			continue // the node rules free its allocations, handle records with them
		}
		b := idx.blockOf[h.IP]
		var o *api.Owner
		if b != nil {
			o = b.Holder(h.IP)
		}
		if o == nil || o.Handle != h.Handle || (h.Host != "" && (o.Host != h.Host || o.Seq != h.Record.Seq)) {
			add(Finding{Kind: GarbageStaleHandle, Host: h.Host, IP: h.IP, Key: h.Key(), Rev: h.ModRevision,
				Reason: "its address is held by " + o.String()}, time.Time{})
			continue
		}
		if h.Host == "" {
			continue // written before hosts were recorded: judged with its block entry
		}
		f := Finding{Host: h.Host, IP: h.IP, Block: b.CIDR, Owner: o}
		switch h.Record.State {
		case api.StateAllocated:
			if idx.held[h.Host+"/"+h.IP.String()] {
				continue
			}
			f.Kind, f.Reason = GarbageUnclaimed, "allocated at "+stamp(h.Record.Since)+" to "+h.Handle+"; no endpoint was created with it"
			add(f, h.Record.Since)
		case api.StateReleased:
			f.Kind, f.Reason = GarbageUnreleased, fmt.Sprintf("endpoint %s was deleted at %s; Docker never released the address", abbrevID(h.Record.Endpoint), stamp(h.Record.Since))
			add(f, h.Record.Since)
		case api.StateBound:
			if idx.endpoints[h.Host+"/"+h.Record.Endpoint] {
				continue
			}
			f.Kind, f.Reason = GarbageEndpointGone, fmt.Sprintf("bound to endpoint %s, whose record is gone", abbrevID(h.Record.Endpoint))
			add(f, time.Time{})
		}
	}
}

// untrackedGarbage finds allocations no handle record describes (blocks and
// handles written before owners were recorded) that no endpoint holds.
func (s *Snapshot) untrackedGarbage(idx snapIndex, gone map[string]time.Time, add func(Finding, time.Time)) {
	for _, it := range s.Blocks {
		b := it.Value
		for ord, o := range b.Allocations {
			if o == nil {
				continue
			}
			if _, g := gone[o.Host]; g && o.Host != "" {
				continue
			}
			ip := b.Addr(ord)
			if idx.handles[fmt.Sprintf("%s/%s/%s/%d", o.Host, o.Handle, ip, o.Seq)] && o.Host != "" {
				continue
			}
			if idx.held["/"+ip.String()] {
				continue
			}
			host := o.Host
			if host == "" {
				host = b.Affinity
			}
			add(Finding{Kind: GarbageUntracked, Host: host, IP: ip, Block: b.CIDR, Owner: o,
				Reason: "held by " + o.Handle + " with no record of who asked for it, and no endpoint holds it"}, time.Time{})
		}
	}
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "an unknown time"
	}
	return t.UTC().Format(time.RFC3339)
}

// Apply collects one finding, changing only the record the finding was made
// from: an allocation is freed only while its owner still holds it, a record
// deleted only while unchanged. It reports whether anything changed.
func Apply(ctx context.Context, s *datastore.Store, f Finding) (bool, error) {
	switch {
	case f.Owner != nil:
		return freeOwnedIn(ctx, s, f.Block, f.IP, *f.Owner)
	case f.Kind == GarbageNodeBlock:
		return freeBlockIfEmpty(ctx, s, f.Block, f.Host)
	case f.Key != "":
		res, err := s.CAS(ctx, []datastore.Cond{datastore.Unchanged(f.Key, f.Rev)}, []datastore.Op{datastore.Delete(f.Key)})
		if err != nil {
			return false, fmt.Errorf("delete %s: %w", f.Key, err)
		}
		return res.Succeeded, nil
	}
	return false, fmt.Errorf("nothing to do for %s", f)
}

// FreeOwned frees ip while owner still holds it (calicoctl ipam release).
func FreeOwned(ctx context.Context, s *datastore.Store, ip netip.Addr, owner api.Owner) (bool, error) {
	keys, err := s.Keys(ctx, api.BlocksPrefix)
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		if c, ok := api.ParseBlockKey(k); ok && c.Contains(ip) {
			return freeOwnedIn(ctx, s, c, ip, owner)
		}
	}
	return false, nil
}

// freeOwnedIn frees ip in block cidr while owner holds it, with its handle
// record, in one transaction; the last address of a block in no pool takes
// the block and its affinity with it.
func freeOwnedIn(ctx context.Context, s *datastore.Store, cidr netip.Prefix, ip netip.Addr, owner api.Owner) (bool, error) {
	key := api.BlockKey(cidr)
	hkey := api.HandleRef{Host: owner.Host, Handle: owner.Handle, IP: ip}.Key()
	uncertain := false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		res, err := s.Read(ctx, datastore.Get(key), datastore.GetPrefix(api.PoolsPrefix))
		if err != nil {
			return false, err
		}
		rec, ok := res.One(0)
		if !ok {
			return false, nil
		}
		b, err := decodeBlock(rec)
		if err != nil {
			return false, err
		}
		ord := b.Ordinal(ip)
		if !b.Holder(ip).Same(&owner) {
			return uncertain, nil // freed by the unconfirmed write, or someone else's now: leave it
		}
		releaseOrdinal(b, ord)
		ops := []datastore.Op{datastore.Delete(hkey)}
		inPool := false
		for _, pr := range res.Reads[1] {
			var p api.IPPool
			if pr.Decode(&p) == nil && p.Prefix().Bits() <= b.CIDR.Bits() && p.Prefix().Contains(b.CIDR.Addr()) {
				inPool = true
			}
		}
		if b.InUse() == 0 && !inPool {
			ops = append(ops, datastore.Delete(key))
			if b.Affinity != "" {
				ops = append(ops, datastore.Delete(api.AffinityKey(b.Affinity, b.CIDR)))
			}
		} else {
			ops = append(ops, datastore.Put(key, b))
		}
		tr, err := s.CAS(ctx, []datastore.Cond{datastore.Unchanged(key, rec.ModRevision)}, ops)
		if errors.Is(err, datastore.ErrUncertain) {
			uncertain = true
			continue // the next read shows whether it went
		}
		if err != nil {
			return false, fmt.Errorf("release %s: %w", ip, err)
		}
		if tr.Succeeded {
			return true, nil
		}
	}
	return false, fmt.Errorf("release %s: %w", ip, datastore.ErrConflict)
}
