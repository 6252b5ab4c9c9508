package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Allocate takes one more address for handle: from this host's blocks first,
// then by claiming a free block, and only when no block is free by borrowing
// from another host's block. The common path is a single etcd transaction.
func (a *Allocator) Allocate(ctx context.Context, handle string, sel Selection) (netip.Addr, error) {
	return a.allocate(ctx, handle, sel, false)
}

// AllocateOnce is Allocate for a handle that names one request (Docker's
// RequestAddress: the handle is the endpoint's). It is idempotent: while
// handle holds an address that fits sel and that no endpoint has been bound
// to yet (a replayed request), that address is returned again. The
// transaction itself checks that the handle had no records, so a replay is
// caught without an extra round trip.
func (a *Allocator) AllocateOnce(ctx context.Context, handle string, sel Selection) (netip.Addr, error) {
	return a.allocate(ctx, handle, sel, true)
}

func (a *Allocator) allocate(ctx context.Context, handle string, sel Selection, once bool) (netip.Addr, error) {
	if err := a.ensurePools(ctx, false); err != nil {
		return netip.Addr{}, err
	}
	if err := a.loadOwn(ctx); err != nil {
		return netip.Addr{}, err
	}
	var hv *handleView
	if once {
		hv = &handleView{prefix: api.HandlePrefix(a.host, handle)}
	}
	refreshed := false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		cands := a.candidates(sel)
		if ip, ok := a.replayable(hv, sel, cands); ok {
			a.log.Info("replayed request: returning the address the handle already holds", "ip", ip, "handle", handle)
			return ip, nil
		}
		if len(cands) == 0 {
			if !refreshed {
				refreshed = true
				if err := a.ensurePools(ctx, true); err != nil {
					return netip.Addr{}, err
				}
				continue
			}
			return netip.Addr{}, fmt.Errorf("no enabled IP pool matches %s: create one with calicoctl or enable a pool", sel)
		}
		r, err := a.allocateOnce(ctx, handle, sel, cands, hv)
		if err != nil || r.done {
			return r.ip, err
		}
		if r.conflict {
			continue
		}
		if !refreshed { // maybe a pool was added or enabled since we looked
			refreshed = true
			if err := a.ensurePools(ctx, true); err != nil {
				return netip.Addr{}, err
			}
			continue
		}
		return netip.Addr{}, a.exhausted(sel, cands)
	}
	return netip.Addr{}, fmt.Errorf("allocate %s: %w", sel, datastore.ErrConflict)
}

// step is the result of one allocation attempt: done with ip, a conflict
// (caches refreshed: go again), or neither (nothing free there).
type step struct {
	ip       netip.Addr
	done     bool
	conflict bool
}

func (a *Allocator) allocateOnce(ctx context.Context, handle string, sel Selection, cands []poolEntry, hv *handleView) (step, error) {
	if r, err := a.fromOwn(ctx, handle, sel, cands, hv); err != nil || r.done || r.conflict {
		return r, err
	}
	claimable, strict := a.mayClaim() // one reading of the configuration for both
	if claimable {
		if r, err := a.claim(ctx, handle, sel, cands, hv); err != nil || r.done || r.conflict {
			return r, err
		}
	}
	if !strict {
		return a.borrow(ctx, handle, sel, cands, hv)
	}
	return step{}, nil
}

func (a *Allocator) exhausted(sel Selection, cands []poolEntry) error {
	names := make([]string, 0, len(cands))
	for _, p := range cands {
		names = append(names, fmt.Sprintf("%s (%s)", p.Name, p.CIDR))
	}
	why := ""
	claimable, strict := a.mayClaim()
	if !claimable {
		why += "; this host may claim no more blocks (IPAMConfiguration autoAllocateBlocks/maxBlocksPerHost)"
	}
	if strict {
		why += "; strictAffinity forbids borrowing from other hosts' blocks"
	}
	return fmt.Errorf("IP pool %s exhausted: no free %s address%s; add a pool with calicoctl or remove unused containers",
		strings.Join(names, ", "), sel, why)
}

// replayable returns the address handle already holds that fits sel and
// that no endpoint is bound to.
func (a *Allocator) replayable(hv *handleView, sel Selection, cands []poolEntry) (netip.Addr, bool) {
	if hv == nil || !hv.known {
		return netip.Addr{}, false
	}
	var ips []netip.Addr
	for ip, rec := range hv.records {
		if rec.State != api.StateAllocated || (sel.Family == 4) != ip.Is4() {
			continue
		}
		if sel.Within.IsValid() && !sel.Within.Contains(ip) {
			continue
		}
		for _, p := range cands {
			if p.pfx.Contains(ip) {
				ips = append(ips, ip)
			}
		}
	}
	if len(ips) == 0 {
		return netip.Addr{}, false
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	return ips[0], true
}

// take gives the ordinal at qpos in blk (at rev) to handle in one
// transaction, with the handle's record and any extra ops.
func (a *Allocator) take(ctx context.Context, pool *poolEntry, blk *api.Block, rev int64, qpos, ord int, handle string, hv *handleView, extra ...datastore.Op) (step, error) {
	owner := takeAt(blk, qpos, ord, a.host, handle)
	ip := blk.Addr(ord)
	key := api.HandleKey(a.host, handle, ip)
	rec := api.HandleRecord{Seq: owner.Seq, State: api.StateAllocated, Since: a.now().UTC()}
	w := write{pool: pool, blk: blk, rev: rev, ops: append([]datastore.Op{datastore.PutAppended(key, rec)}, extra...), applied: holds(ip, owner)}
	if hv != nil {
		w.conds, w.reads = []datastore.Cond{hv.cond()}, []datastore.Op{datastore.GetPrefix(hv.prefix)}
	}
	out, err := a.commit(ctx, w)
	if err != nil {
		return step{}, err
	}
	if !out.ok {
		if hv != nil && len(out.extra) > 0 {
			hv.learn(out.extra[0], out.rev)
		}
		return step{conflict: true}, nil
	}
	a.cacheHandle(key, rec, out.rev)
	return step{ip: ip, done: true}, nil
}

// fromOwn allocates from one of this host's blocks that has room: one that
// no other call of this host is working in if there is one (so that they
// run in parallel), else the first, once its lock is free.
func (a *Allocator) fromOwn(ctx context.Context, handle string, sel Selection, cands []poolEntry, hv *handleView) (step, error) {
	cidrs := a.ownWithRoom(sel, cands)
	if len(cidrs) == 0 {
		return step{}, nil
	}
	var unlock func()
	var c netip.Prefix
	for _, c = range cidrs {
		var ok bool
		if unlock, ok = a.tryLockBlock(c); ok {
			break
		}
	}
	if unlock == nil {
		c = cidrs[0]
		var err error
		if unlock, err = a.lockBlock(ctx, c); err != nil {
			return step{}, err
		}
	}
	defer unlock()
	// Another call may have filled or changed it before the lock was ours.
	cb, ok := a.ownBlock(c)
	pool := poolOf(cands, c)
	if !ok || pool == nil {
		return step{conflict: true}, nil
	}
	qpos, ord := firstFree(cb.b, sel.Within)
	if ord < 0 {
		return step{conflict: true}, nil
	}
	return a.take(ctx, pool, cb.b.Clone(), cb.rev, qpos, ord, handle, hv)
}

// ownWithRoom lists this host's cached blocks in the candidate pools with
// a free address inside sel, in the order of their text (as blocks were
// always tried).
func (a *Allocator) ownWithRoom(sel Selection, cands []poolEntry) []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Prefix
	for c, cb := range a.own {
		if poolOf(cands, c) == nil || (sel.Within.IsValid() && !sel.Within.Overlaps(c)) {
			continue
		}
		if _, ord := firstFree(cb.b, sel.Within); ord >= 0 {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// claim takes a free block of a candidate pool for this host with the
// allocation. One claim at a time: a call that waited for another's finds
// the block it claimed.
func (a *Allocator) claim(ctx context.Context, handle string, sel Selection, cands []poolEntry, hv *handleView) (step, error) {
	unlock, err := waitLock(ctx, a.claimLock, "claiming a block")
	if err != nil {
		return step{}, err
	}
	defer unlock()
	if len(a.ownWithRoom(sel, cands)) > 0 {
		return step{conflict: true}, nil // claimed (or freed) while this call waited: allocate there
	}
	if claimable, _ := a.mayClaim(); !claimable {
		return step{}, nil
	}
	keys, err := a.store.Keys(ctx, api.BlocksPrefix)
	if err != nil {
		return step{}, err
	}
	exists := make(map[netip.Prefix]bool, len(keys))
	for _, k := range keys {
		if c, ok := api.ParseBlockKey(k); ok {
			exists[c] = true
		}
	}
	for i := range cands {
		pool := &cands[i]
		var free netip.Prefix
		blocksOf(pool.pfx, pool.BlockSize, sel.Within, func(b netip.Prefix) bool {
			if !exists[b] {
				free = b
				return false
			}
			return true
		})
		if !free.IsValid() {
			continue
		}
		blk := newBlock(free, a.host)
		qpos, ord := firstFree(blk, sel.Within)
		if ord < 0 {
			continue
		}
		unlockB, err := a.lockBlock(ctx, free) // Assign may be creating it too
		if err != nil {
			return step{}, err
		}
		defer unlockB()
		r, err := a.take(ctx, pool, blk, 0, qpos, ord, handle, hv, datastore.PutRaw(api.AffinityKey(a.host, blk.CIDR), ""))
		if r.done {
			a.log.Info("claimed block", "block", blk.CIDR, "pool", pool.Name, "host", a.host)
		}
		return r, err
	}
	return step{}, nil
}

func (a *Allocator) borrow(ctx context.Context, handle string, sel Selection, cands []poolEntry, hv *handleView) (step, error) {
	res, err := a.store.Read(ctx, datastore.GetPrefix(api.BlocksPrefix))
	if err != nil {
		return step{}, err
	}
	var blocks []*api.Block
	var revs []int64
	for _, rec := range res.Reads[0] {
		b, err := decodeBlock(rec)
		if err != nil {
			a.log.Warn("skipping a block that cannot be read", "err", err)
			continue
		}
		blocks, revs = append(blocks, b), append(revs, rec.ModRevision)
	}
	// Other hosts may have freed addresses in this host's blocks (borrowed
	// ones they released) behind the cache: refresh it from the listing, and
	// if an own block turns out to have room, start over from own blocks.
	ownHasRoom := false
	for i, blk := range blocks {
		if blk.Affinity != a.host {
			continue
		}
		if cb, ok := a.ownBlock(blk.CIDR); ok && cb.rev >= revs[i] {
			continue
		}
		a.cacheBlock(blk.CIDR, blk, revs[i])
		pfx := blk.CIDR
		if poolOf(cands, pfx) != nil && (!sel.Within.IsValid() || sel.Within.Overlaps(pfx)) {
			if _, ord := firstFree(blk, sel.Within); ord >= 0 {
				ownHasRoom = true
			}
		}
	}
	if ownHasRoom {
		return step{conflict: true}, nil
	}
	for i, blk := range blocks {
		pfx := blk.CIDR
		if blk.Affinity == a.host {
			continue
		}
		pool := poolOf(cands, pfx)
		if pool == nil || (sel.Within.IsValid() && !sel.Within.Overlaps(pfx)) {
			continue
		}
		qpos, ord := firstFree(blk, sel.Within)
		if ord < 0 {
			continue
		}
		unlock, err := a.lockBlock(ctx, pfx)
		if err != nil {
			return step{}, err
		}
		defer unlock()
		r, err := a.take(ctx, pool, blk, revs[i], qpos, ord, handle, hv)
		if r.done {
			a.log.Info("borrowed address from another host's block", "ip", r.ip, "block", blk.CIDR, "owner", blk.Affinity)
		}
		return r, err
	}
	return step{}, nil
}

// mayClaim applies the IPAM configuration's limits on claiming blocks;
// strict says borrowing from other hosts' blocks is forbidden.
func (a *Allocator) mayClaim() (claimable, strict bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	strict = a.cfg.StrictAffinity
	if !a.cfg.AutoAllocateBlocks {
		return false, strict
	}
	return a.cfg.MaxBlocksPerHost <= 0 || len(a.own) < a.cfg.MaxBlocksPerHost, strict
}

func poolOf(cands []poolEntry, blk netip.Prefix) *poolEntry {
	for i := range cands {
		if cands[i].pfx.Contains(blk.Addr()) {
			return &cands[i]
		}
	}
	return nil
}

// blockFor returns a copy of the block cidr and its revision: the cached one
// for this host's blocks unless fresh is set, else read from etcd. cached
// says the copy came from the cache, which may be stale (other hosts borrow
// and release in this host's blocks): a decision that writes nothing must be
// confirmed with a fresh read. A nil block means none exists.
func (a *Allocator) blockFor(ctx context.Context, cidr netip.Prefix, fresh bool) (blk *api.Block, rev int64, cached bool, err error) {
	if cb, ok := a.ownBlock(cidr); ok && !fresh {
		return cb.b.Clone(), cb.rev, true, nil
	}
	res, err := a.store.Read(ctx, datastore.Get(api.BlockKey(cidr)))
	if err != nil {
		return nil, 0, false, err
	}
	rec, ok := res.One(0)
	if !ok {
		a.cacheBlock(cidr, nil, 0)
		return nil, 0, false, nil
	}
	b, err := decodeBlock(rec)
	if err != nil {
		return nil, 0, false, err
	}
	a.cacheBlock(cidr, b, rec.ModRevision)
	return b, rec.ModRevision, false, nil
}

// handleFor returns host's handle record at key and its revision (0 when
// absent): the cached one unless fresh is set.
func (a *Allocator) handleFor(ctx context.Context, key string, fresh bool) (rec api.HandleRecord, rev int64, cached bool, err error) {
	a.mu.Lock()
	ch, ok := a.handles[key]
	a.mu.Unlock()
	if ok && !fresh {
		return ch.rec, ch.rev, true, nil
	}
	res, err := a.store.Read(ctx, datastore.Get(key))
	if err != nil {
		return api.HandleRecord{}, 0, false, err
	}
	r, ok := res.One(0)
	if !ok {
		a.forgetHandle(key)
		return api.HandleRecord{}, 0, false, nil
	}
	if rec, err = api.DecodeHandleRecord(r.Value); err != nil {
		return api.HandleRecord{}, 0, false, fmt.Errorf("decode %s: %w", key, err)
	}
	a.cacheHandle(key, rec, r.ModRevision)
	return rec, r.ModRevision, false, nil
}

var errStale = errors.New("stale cache")
