// Package ipam owns IP pools, per-host blocks, their affinities and handles,
// and answers Docker's IPAM driver calls. It never touches the kernel.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// poolTTL bounds how long a cached pool list is trusted for the choice of
// pools; every allocation still compares the pool's revision in its
// transaction, so a disabled or deleted pool is never allocated from.
const poolTTL = 2 * time.Second

// Allocator hands out addresses for one host. Its calls run in parallel as
// long as they work in different blocks: each block's read-modify-write is
// serialised by a lock of its own (so that this host's calls do not race
// each other into CAS conflicts), claiming a new block by one lock for the
// host (so that concurrent calls do not claim a block each), and reading
// the pools by another. Hosts coordinate only through etcd transactions.
// Every lock is waited for under the caller's context, so a call stuck
// behind one that waits on an unreachable etcd still answers by its own
// deadline.
type Allocator struct {
	store *datastore.Store
	host  string
	log   *slog.Logger
	now   func() time.Time // stamps allocation records (tests set it)

	// Locks are taken in this order: loadLock, claimLock, a block's,
	// poolsLock (a release that empties a block may read the pools).
	loadLock  chan struct{} // loading this host's blocks
	claimLock chan struct{} // claiming a new block
	poolsLock chan struct{} // reading the pools

	// mu guards what follows; it is never held across a round trip.
	mu        sync.Mutex
	blocks    map[netip.Prefix]chan struct{} // per-block locks, made on first use
	pools     map[string]poolEntry
	cfg       api.IPAMConfig
	poolsAt   time.Time
	own       map[netip.Prefix]cachedBlock // this host's blocks by CIDR
	ownLoaded bool
	// handles caches this host's handle records as last written or read,
	// by key, so that binding and releasing cost one transaction.
	handles map[string]cachedHandle
}

type cachedHandle struct {
	rec api.HandleRecord
	rev int64
}

type poolEntry struct {
	api.IPPool
	rev int64
	pfx netip.Prefix
}

// cachedBlock is a block as of revision rev. b is never modified in place
// (it is replaced), so a copy of the entry may be read without mu.
type cachedBlock struct {
	b   *api.Block
	rev int64
}

// New returns an allocator acting as host.
func New(store *datastore.Store, host string, log *slog.Logger) *Allocator {
	if log == nil {
		log = slog.Default()
	}
	return &Allocator{store: store, host: host, log: log, now: time.Now,
		loadLock: make(chan struct{}, 1), claimLock: make(chan struct{}, 1), poolsLock: make(chan struct{}, 1),
		blocks: map[netip.Prefix]chan struct{}{}, own: map[netip.Prefix]cachedBlock{}, handles: map[string]cachedHandle{}}
}

// SetClock makes the allocator stamp its records with now's time (tests).
func (a *Allocator) SetClock(now func() time.Time) { a.now = now }

// waitLock waits for the one-slot lock ch, or gives up when ctx ends; what
// names the lock in the error.
func waitLock(ctx context.Context, ch chan struct{}, what string) (func(), error) {
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for another IPAM call on this host (%s): %w", what, ctx.Err())
	}
}

func (a *Allocator) blockLock(cidr netip.Prefix) chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch, ok := a.blocks[cidr]
	if !ok {
		ch = make(chan struct{}, 1)
		a.blocks[cidr] = ch
	}
	return ch
}

// lockBlock takes the lock of block cidr: the read-modify-write of a block
// runs under it.
func (a *Allocator) lockBlock(ctx context.Context, cidr netip.Prefix) (func(), error) {
	return waitLock(ctx, a.blockLock(cidr), "block "+cidr.String())
}

// tryLockBlock takes the lock of block cidr if no one holds it.
func (a *Allocator) tryLockBlock(cidr netip.Prefix) (func(), bool) {
	ch := a.blockLock(cidr)
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, true
	default:
		return nil, false
	}
}

// Host is the node name this allocator allocates for.
func (a *Allocator) Host() string { return a.host }

// Selection narrows where an address may come from.
type Selection struct {
	Family int          // 4 or 6
	Pools  []string     // pool names; empty means every enabled pool of Family
	Within netip.Prefix // optional: only addresses inside this prefix
}

func (s Selection) String() string {
	parts := []string{fmt.Sprintf("IPv%d", s.Family)}
	if len(s.Pools) > 0 {
		parts = append(parts, "pools "+strings.Join(s.Pools, ","))
	}
	if s.Within.IsValid() {
		parts = append(parts, "within "+s.Within.String())
	}
	return strings.Join(parts, " ")
}

// ListPools reads every pool from etcd.
func ListPools(ctx context.Context, s *datastore.Store) ([]api.IPPool, error) {
	items, err := datastore.List[api.IPPool](ctx, s, api.PoolsPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.IPPool, 0, len(items))
	for _, it := range items {
		out = append(out, it.Value)
	}
	return out, nil
}

// ensurePools reads the pools and the IPAM configuration (one round trip)
// when force is set or the cached ones are older than poolTTL.
func (a *Allocator) ensurePools(ctx context.Context, force bool) error {
	unlock, err := waitLock(ctx, a.poolsLock, "reading the IP pools")
	if err != nil {
		return err
	}
	defer unlock()
	a.mu.Lock()
	fresh := a.pools != nil && time.Since(a.poolsAt) <= poolTTL
	a.mu.Unlock()
	if fresh && !force {
		return nil
	}
	return a.refreshPools(ctx)
}

// refreshPools reads the pools and the IPAM configuration in one round
// trip; poolsLock is held.
func (a *Allocator) refreshPools(ctx context.Context) error {
	res, err := a.store.Read(ctx, datastore.GetPrefix(api.PoolsPrefix), datastore.Get(api.IPAMConfigKey))
	if err != nil {
		return fmt.Errorf("read IP pools: %w", err)
	}
	cfg := api.DefaultIPAMConfig()
	if rec, ok := res.One(1); ok {
		if err := rec.Decode(&cfg); err != nil {
			a.log.Warn("ignoring undecodable IPAM configuration", "err", err)
			cfg = api.DefaultIPAMConfig()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pools = make(map[string]poolEntry, len(res.Reads[0]))
	for _, rec := range res.Reads[0] {
		a.cachePool(rec)
	}
	a.cfg, a.poolsAt = cfg, time.Now()
	return nil
}

// cachePool remembers the pool rec; mu is held.
func (a *Allocator) cachePool(rec datastore.Record) {
	var p api.IPPool
	if err := rec.Decode(&p); err != nil {
		a.log.Warn("ignoring undecodable pool", "key", rec.Key, "err", err)
		return
	}
	pfx, err := netip.ParsePrefix(p.CIDR)
	if err != nil {
		a.log.Warn("ignoring pool with a bad CIDR", "pool", p.Name, "cidr", p.CIDR)
		return
	}
	a.pools[p.Name] = poolEntry{IPPool: p, rev: rec.ModRevision, pfx: pfx}
}

// Pools returns the pools, read fresh.
func (a *Allocator) Pools(ctx context.Context) ([]api.IPPool, error) {
	if err := a.ensurePools(ctx, true); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]api.IPPool, 0, len(a.pools))
	for _, p := range a.pools {
		out = append(out, p.IPPool)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CIDR < out[j].CIDR })
	return out, nil
}

func (a *Allocator) candidates(sel Selection) []poolEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []poolEntry
	for _, p := range a.pools {
		if p.Disabled || (sel.Family == 4) != p.pfx.Addr().Is4() {
			continue
		}
		if len(sel.Pools) > 0 && !slices.Contains(sel.Pools, p.Name) {
			continue
		}
		if sel.Within.IsValid() && !sel.Within.Overlaps(p.pfx) {
			continue
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pfx.Addr().Less(out[j].pfx.Addr()) })
	return out
}

func (a *Allocator) poolFor(ip netip.Addr) (poolEntry, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pools {
		if p.pfx.Contains(ip) {
			return p, true
		}
	}
	return poolEntry{}, false
}

// loadOwn reads this host's blocks into the cache, once.
func (a *Allocator) loadOwn(ctx context.Context) error {
	unlock, err := waitLock(ctx, a.loadLock, "loading this host's blocks")
	if err != nil {
		return err
	}
	defer unlock()
	a.mu.Lock()
	loaded := a.ownLoaded
	a.mu.Unlock()
	if loaded {
		return nil
	}
	keys, err := a.store.Keys(ctx, api.HostAffinitiesPrefix(a.host))
	if err != nil {
		return fmt.Errorf("read this host's block affinities: %w", err)
	}
	for _, k := range keys {
		_, cidr, ok := api.ParseAffinityKey(k)
		if !ok {
			continue
		}
		unlockB, err := a.lockBlock(ctx, cidr)
		if err != nil {
			return err
		}
		_, _, _, err = a.blockFor(ctx, cidr, true)
		unlockB()
		if err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.ownLoaded = true
	a.mu.Unlock()
	return nil
}

// decodeBlock reads a block record and checks its invariants.
func decodeBlock(rec datastore.Record) (*api.Block, error) {
	var b api.Block
	if err := rec.Decode(&b); err != nil {
		return nil, err
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", rec.Key, err)
	}
	return &b, nil
}

// cacheBlock remembers blk at rev when it is this host's (nil: absent). A
// copy older than the cached one (a listing read before the last write) is
// ignored; an absent or foreign block is read under the block's lock, so
// dropping it is never stale.
func (a *Allocator) cacheBlock(cidr netip.Prefix, blk *api.Block, rev int64) {
	if blk != nil && blk.Affinity == a.host { // only this host's are kept
		blk = blk.Clone()
	}
	a.keepBlock(cidr, blk, rev)
}

// keepBlock is cacheBlock for a block that no one else holds or changes
// from now on (one decoded from etcd, or a commit's own copy): the cache
// takes it as is, without a copy.
func (a *Allocator) keepBlock(cidr netip.Prefix, blk *api.Block, rev int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if blk == nil || blk.Affinity != a.host {
		delete(a.own, cidr)
		return
	}
	if cb, ok := a.own[cidr]; ok && cb.rev > rev {
		return
	}
	a.own[cidr] = cachedBlock{b: blk, rev: rev}
}

// ownBlock returns the cached copy of this host's block cidr.
func (a *Allocator) ownBlock(cidr netip.Prefix) (cachedBlock, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cb, ok := a.own[cidr]
	return cb, ok
}

// cacheHandle remembers host's handle record at key as of rev, unless a
// newer one is cached.
func (a *Allocator) cacheHandle(key string, rec api.HandleRecord, rev int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ch, ok := a.handles[key]; ok && ch.rev > rev {
		return
	}
	a.handles[key] = cachedHandle{rec: rec, rev: rev}
}

func (a *Allocator) forgetHandle(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.handles, key)
}

// write is one block change: blk written (or deleted, when drop is set) if
// it is still at rev and, when pool is set, the pool is still at its cached
// revision; conds must hold too and ops go in the same transaction. reads
// are added to the Else branch (after the block and the pool) so that a
// conflict tells the caller what changed. applied, given the block read
// back, says whether this write took effect: it resolves a commit whose
// outcome etcd did not confirm.
type write struct {
	pool    *poolEntry
	blk     *api.Block
	rev     int64
	drop    bool
	conds   []datastore.Cond
	ops     []datastore.Op
	reads   []datastore.Op
	applied func(*api.Block) bool
}

// outcome is what commit learnt: ok when the write took effect; on a
// conflict, extra holds the caller's reads from the Else branch.
type outcome struct {
	ok    bool
	rev   int64
	extra [][]datastore.Record
}

func (a *Allocator) commit(ctx context.Context, w write) (outcome, error) {
	bkey := api.BlockKey(w.blk.CIDR)
	conds := append([]datastore.Cond{datastore.Unchanged(bkey, w.rev)}, w.conds...)
	elses := []datastore.Op{datastore.Get(bkey)}
	if w.pool != nil {
		conds = append(conds, datastore.Unchanged(api.PoolKey(w.pool.Name), w.pool.rev))
		elses = append(elses, datastore.Get(api.PoolKey(w.pool.Name)))
	}
	elses = append(elses, w.reads...)
	first := datastore.PutAppended(bkey, w.blk)
	if w.drop {
		first = datastore.Delete(bkey)
	}
	res, err := a.store.CAS(ctx, conds, append([]datastore.Op{first}, w.ops...), elses...)
	if errors.Is(err, datastore.ErrUncertain) {
		return a.readBack(ctx, w, err)
	}
	if err != nil {
		return outcome{}, fmt.Errorf("etcd transaction on block %s: %w", w.blk.CIDR, err)
	}
	if res.Succeeded {
		if w.drop {
			a.keepBlock(w.blk.CIDR, nil, 0)
		} else {
			a.keepBlock(w.blk.CIDR, w.blk, res.Revision) // the write's copy: its caller is done with it
		}
		return outcome{ok: true, rev: res.Revision}, nil
	}
	// Conflict: learn what changed.
	if rec, ok := res.One(0); ok {
		fresh, err := decodeBlock(rec)
		if err != nil {
			return outcome{}, err
		}
		a.keepBlock(w.blk.CIDR, fresh, rec.ModRevision)
	} else {
		a.cacheBlock(w.blk.CIDR, nil, 0)
	}
	n := 1
	if w.pool != nil {
		n = 2
		a.mu.Lock()
		if rec, ok := res.One(1); ok {
			a.cachePool(rec)
		} else {
			delete(a.pools, w.pool.Name)
		}
		a.mu.Unlock()
	}
	return outcome{rev: res.Revision, extra: res.Reads[n:]}, nil
}

// readBack resolves a transaction etcd did not confirm by reading the block:
// never by writing again blindly. A block still at the revision the write
// was conditioned on settles nothing: etcd may apply the write after it
// answered the read (the request was still on its way). Such a block is
// fenced off: written back unchanged under the write's own condition, so
// that exactly one of the two can apply and the read that follows is final.
func (a *Allocator) readBack(ctx context.Context, w write, cause error) (outcome, error) {
	// The caller's deadline may be what failed the commit: give the read
	// (and the fence) their own time.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*datastore.DownTimeout)
	defer cancel()
	bkey := api.BlockKey(w.blk.CIDR)
	res, err := a.store.Read(rctx, datastore.Get(bkey))
	if err != nil {
		return outcome{}, fmt.Errorf("block %s: %w (and reading it back failed: %v)", w.blk.CIDR, cause, err)
	}
	rev := res.Revision
	rec, found := res.One(0)
	switch {
	case found && rec.ModRevision == w.rev:
		fence, err := a.store.CAS(rctx, []datastore.Cond{datastore.Unchanged(bkey, w.rev)},
			[]datastore.Op{datastore.PutRaw(bkey, string(rec.Value))}, datastore.Get(bkey))
		if err != nil {
			return outcome{}, fmt.Errorf("block %s: %w (and fencing the write off failed: %v)", w.blk.CIDR, cause, err)
		}
		rev = fence.Revision
		if fence.Succeeded {
			rec.ModRevision = fence.Revision
		} else {
			rec, found = fence.One(0)
		}
	case !found && w.rev == 0:
		return outcome{}, fmt.Errorf("block %s: %w (it does not exist yet, and the write may still create it)", w.blk.CIDR, cause)
	}
	var fresh *api.Block
	var brev int64
	if found {
		if fresh, err = decodeBlock(rec); err != nil {
			return outcome{}, err
		}
		brev = rec.ModRevision
	}
	a.cacheBlock(w.blk.CIDR, fresh, brev)
	if w.applied != nil && w.applied(fresh) {
		a.log.Info("an unconfirmed etcd transaction was applied (read back)", "block", w.blk.CIDR)
		return outcome{ok: true, rev: brev}, nil
	}
	return outcome{rev: rev}, nil
}

// holds returns an applied check: the block read back gives ip to owner.
func holds(ip netip.Addr, owner *api.Owner) func(*api.Block) bool {
	return func(b *api.Block) bool { return b != nil && b.Holder(ip).Same(owner) }
}

// frees returns an applied check: ip is no longer owner's.
func frees(ip netip.Addr, owner *api.Owner) func(*api.Block) bool {
	return func(b *api.Block) bool { return b == nil || !b.Holder(ip).Same(owner) }
}

// handleView is what an allocation knows of its handle's existing records:
// at first nothing (the commit then requires there to be none); after a
// conflict showed some, the records and the revision they were read at.
type handleView struct {
	prefix  string
	known   bool
	records map[netip.Addr]api.HandleRecord
	rev     int64
}

func (h *handleView) cond() datastore.Cond {
	if !h.known {
		return datastore.NothingUnder(h.prefix)
	}
	return datastore.UnchangedUnder(h.prefix, h.rev)
}

// learn takes the handle's records from a conflict's read; false when
// there were none (the conflict was the block's).
func (h *handleView) learn(recs []datastore.Record, rev int64) bool {
	if len(recs) == 0 {
		return false
	}
	h.known, h.rev, h.records = true, rev, map[netip.Addr]api.HandleRecord{}
	for _, r := range recs {
		ref, ok := api.ParseHandleKey(r.Key)
		if !ok {
			continue
		}
		if rec, err := api.DecodeHandleRecord(r.Value); err == nil {
			h.records[ref.IP] = rec
		}
	}
	return true
}
