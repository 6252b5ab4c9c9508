package ipam

// Pool management (calicoctl create/apply/replace/delete of IPPools). Every
// write is one etcd transaction guarded by compare-and-swap on what it read,
// retried from a fresh read on conflict.

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

// Errors a pool write can wrap, for callers that react to them.
var (
	// ErrPoolInUse: a delete of a pool whose blocks still hold addresses.
	ErrPoolInUse = errors.New("pool has addresses in use")
)

// PutMode says whether a write may create, update, or both.
type PutMode int

const (
	PutCreate  PutMode = iota // the record must not exist (calicoctl create)
	PutReplace                // the record must exist (calicoctl replace)
	PutApply                  // either (calicoctl apply)
)

// poolView is a consistent read of the pools and blocks.
type poolView struct {
	rev    int64
	pools  []datastore.Item[api.IPPool]
	blocks []datastore.Item[api.Block]
}

func readPoolView(ctx context.Context, s *datastore.Store) (*poolView, error) {
	res, err := s.Read(ctx, datastore.GetPrefix(api.PoolsPrefix), datastore.GetPrefix(api.BlocksPrefix))
	if err != nil {
		return nil, fmt.Errorf("read IP pools and blocks: %w", err)
	}
	v := &poolView{rev: res.Revision}
	for _, rec := range res.Reads[0] {
		var p api.IPPool
		if err := rec.Decode(&p); err != nil {
			return nil, err
		}
		v.pools = append(v.pools, datastore.Item[api.IPPool]{Key: rec.Key, ModRevision: rec.ModRevision, Value: p})
	}
	for _, rec := range res.Reads[1] {
		b, err := decodeBlock(rec)
		if err != nil {
			return nil, err
		}
		v.blocks = append(v.blocks, datastore.Item[api.Block]{Key: rec.Key, ModRevision: rec.ModRevision, Value: *b})
	}
	return v, nil
}

// find returns the pool named nameOrCIDR, or whose CIDR it is.
func (v *poolView) find(nameOrCIDR string) (*datastore.Item[api.IPPool], bool) {
	want := strings.TrimSpace(nameOrCIDR)
	if pfx, err := netip.ParsePrefix(want); err == nil {
		want = pfx.Masked().String()
		for i := range v.pools {
			if v.pools[i].Value.CIDR == want {
				return &v.pools[i], true
			}
		}
		return nil, false
	}
	for i := range v.pools {
		if v.pools[i].Value.Name == want {
			return &v.pools[i], true
		}
	}
	return nil, false
}

// blocksIn returns the blocks inside pfx and the addresses in use in them.
func (v *poolView) blocksIn(pfx netip.Prefix) ([]datastore.Item[api.Block], int) {
	var out []datastore.Item[api.Block]
	n := 0
	for _, b := range v.blocks {
		bp := b.Value.CIDR
		if bp.IsValid() && pfx.Bits() <= bp.Bits() && pfx.Contains(bp.Addr()) {
			out = append(out, b)
			n += b.Value.InUse()
		}
	}
	return out, n
}

// GetPool reads the pool named nameOrCIDR (a name, or the pool's CIDR) and
// its revision. A missing pool wraps datastore.ErrNotFound.
func GetPool(ctx context.Context, s *datastore.Store, nameOrCIDR string) (api.IPPool, int64, error) {
	v, err := readPoolView(ctx, s)
	if err != nil {
		return api.IPPool{}, 0, err
	}
	it, ok := v.find(nameOrCIDR)
	if !ok {
		return api.IPPool{}, 0, poolNotFound(nameOrCIDR)
	}
	return it.Value, it.ModRevision, nil
}

// ListPoolItems reads every pool with its revision, in name order.
func ListPoolItems(ctx context.Context, s *datastore.Store) ([]datastore.Item[api.IPPool], error) {
	return datastore.List[api.IPPool](ctx, s, api.PoolsPrefix)
}

func poolNotFound(nameOrCIDR string) error {
	return api.Mark(datastore.ErrNotFound, "IPPool %q does not exist (calicoctl get ippools lists them)", nameOrCIDR)
}

// PutPool creates or updates pool p after normalising and validating it.
// A new pool must not overlap another pool, nor blocks left by a deleted
// pool with another block size. An existing pool keeps its CIDR and block
// size: changing either is refused. rev, when not 0, is the revision the
// caller read the pool at (metadata.resourceVersion): the update fails with
// ErrStale if the pool changed since. Disabling a pool takes effect at once:
// every allocation compares the pool's revision in its transaction.
// PutPool reports whether it created the pool.
func PutPool(ctx context.Context, s *datastore.Store, p api.IPPool, mode PutMode, rev int64) (bool, error) {
	p.Normalize()
	if err := p.Validate(); err != nil {
		return false, err
	}
	key := api.PoolKey(p.Name)
	uncertain, existed := false, false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		v, err := readPoolView(ctx, s)
		if err != nil {
			return false, err
		}
		var cmps []datastore.Cond
		cur, exists := v.find(p.Name)
		if uncertain && exists && cur.Value == p {
			return !existed, nil // the unconfirmed write did go through
		}
		existed = exists
		if exists {
			if mode == PutCreate {
				return false, api.Mark(api.ErrExists, "IPPool %q already exists: use calicoctl apply or calicoctl replace to change it", p.Name)
			}
			if rev != 0 && rev != cur.ModRevision {
				return false, api.Mark(api.ErrStale, "IPPool %q was changed since it was read (metadata.resourceVersion %d, now %d): get it again and reapply, or leave resourceVersion out", p.Name, rev, cur.ModRevision)
			}
			if cur.Value.CIDR != p.CIDR {
				return false, fmt.Errorf("spec.cidr: IPPool %q's CIDR cannot change (%s to %s): create a new pool, disable this one, move the containers, then delete it",
					p.Name, cur.Value.CIDR, p.CIDR)
			}
			if cur.Value.BlockSize != p.BlockSize {
				return false, fmt.Errorf("spec.blockSize: IPPool %q's block size cannot change (/%d to /%d): its blocks are already carved; create a new pool with the new size instead",
					p.Name, cur.Value.BlockSize, p.BlockSize)
			}
			if cur.Value == p {
				return false, nil
			}
			cmps = append(cmps, datastore.Unchanged(key, cur.ModRevision))
		} else {
			if mode == PutReplace {
				return false, api.Mark(datastore.ErrNotFound, "IPPool %q does not exist: use calicoctl create or calicoctl apply", p.Name)
			}
			others := make([]api.IPPool, 0, len(v.pools))
			for _, o := range v.pools {
				others = append(others, o.Value)
			}
			if err := p.ValidateAgainst(others); err != nil {
				return false, err
			}
			if err := checkLeftoverBlocks(p, v.blocks); err != nil {
				return false, err
			}
			// No pool may have been created or changed since the read, so two
			// overlapping pools created at once cannot both pass the check.
			cmps = append(cmps, datastore.UnchangedUnder(api.PoolsPrefix, v.rev))
		}
		resp, err := s.CAS(ctx, cmps, []datastore.Op{datastore.Put(key, p)})
		if errors.Is(err, datastore.ErrUncertain) {
			uncertain = true
			continue
		}
		if err != nil {
			return false, fmt.Errorf("write IPPool %q: %w", p.Name, err)
		}
		if resp.Succeeded {
			return !exists, nil
		}
	}
	return false, fmt.Errorf("write IPPool %q: %w", p.Name, datastore.ErrConflict)
}

// checkLeftoverBlocks refuses a new pool over blocks of a deleted pool that
// do not fit its block size: the allocator would carve overlapping blocks.
func checkLeftoverBlocks(p api.IPPool, blocks []datastore.Item[api.Block]) error {
	pfx := p.Prefix()
	for _, it := range blocks {
		b := it.Value
		bp := b.CIDR
		if !bp.IsValid() || !bp.Overlaps(pfx) {
			continue
		}
		if bp.Bits() == p.BlockSize && pfx.Contains(bp.Addr()) {
			continue
		}
		return fmt.Errorf("spec.cidr %s overlaps block %s left by a deleted pool (%d addresses in use, host %q), which does not fit spec.blockSize /%d: remove the containers using it and release its addresses (calicoctl ipam check), or choose another CIDR or block size",
			pfx, b.CIDR, b.InUse(), b.Affinity, p.BlockSize)
	}
	return nil
}

// PoolDeletion reports what DeletePool did.
type PoolDeletion struct {
	Pool        api.IPPool
	InUse       int // addresses in use in the pool's blocks when it was deleted
	BlocksFreed int // empty blocks removed with their affinities
	BlocksKept  int // blocks kept because addresses in them are in use
}

// DeletePool deletes the pool named nameOrCIDR (its name or CIDR). A pool
// whose blocks hold addresses is refused with ErrPoolInUse unless force; a
// forced delete keeps those blocks (their containers keep working and
// release their addresses as usual) and stops all new allocations from the
// pool. Empty blocks of the pool are removed with their affinities. rev,
// when not 0, must be the pool's current revision.
func DeletePool(ctx context.Context, s *datastore.Store, nameOrCIDR string, force bool, rev int64) (PoolDeletion, error) {
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		v, err := readPoolView(ctx, s)
		if err != nil {
			return PoolDeletion{}, err
		}
		it, ok := v.find(nameOrCIDR)
		if !ok {
			return PoolDeletion{}, poolNotFound(nameOrCIDR)
		}
		p := it.Value
		if rev != 0 && rev != it.ModRevision {
			return PoolDeletion{}, api.Mark(api.ErrStale, "IPPool %q was changed since it was read (metadata.resourceVersion %d, now %d): get it again, or leave resourceVersion out", p.Name, rev, it.ModRevision)
		}
		blocks, inUse := v.blocksIn(p.Prefix())
		if inUse > 0 && !force {
			return PoolDeletion{}, api.Mark(ErrPoolInUse, "IPPool %q (%s) still has %d addresses in use: disable it first (spec.disabled: true, then calicoctl apply), remove the containers using it, then delete it; or pass --force to delete it anyway", p.Name, p.CIDR, inUse)
		}
		cmps := []datastore.Cond{datastore.Unchanged(it.Key, it.ModRevision)}
		if !force {
			// No block may have changed since the read: an allocation made in
			// between would otherwise be orphaned.
			cmps = append(cmps, datastore.UnchangedUnder(api.BlocksPrefix, v.rev))
		}
		resp, err := s.CAS(ctx, cmps, []datastore.Op{datastore.Delete(it.Key)})
		if errors.Is(err, datastore.ErrUncertain) {
			continue // the next read tells: gone means deleted
		}
		if err != nil {
			return PoolDeletion{}, fmt.Errorf("delete IPPool %q: %w", p.Name, err)
		}
		if !resp.Succeeded {
			continue
		}
		d := PoolDeletion{Pool: p, InUse: inUse}
		sort.Slice(blocks, func(i, j int) bool { return blocks[i].Key < blocks[j].Key })
		for _, b := range blocks {
			freed, err := freeBlockIfEmpty(ctx, s, b.Value.CIDR, "")
			if err != nil {
				return d, fmt.Errorf("IPPool %q deleted, but cleaning up its blocks failed: %w", p.Name, err)
			}
			if freed {
				d.BlocksFreed++
			} else {
				d.BlocksKept++
			}
		}
		return d, nil
	}
	return PoolDeletion{}, fmt.Errorf("delete IPPool %q: %w", nameOrCIDR, datastore.ErrConflict)
}

// freeBlockIfEmpty deletes the block cidr and its affinity key when no
// address in it is in use (and, when host is given, it is affine to host).
// A missing block counts as freed.
func freeBlockIfEmpty(ctx context.Context, s *datastore.Store, cidr netip.Prefix, host string) (bool, error) {
	key := api.BlockKey(cidr)
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		res, err := s.Read(ctx, datastore.Get(key))
		if err != nil {
			return false, err
		}
		rec, ok := res.One(0)
		if !ok {
			return true, nil
		}
		var b api.Block
		if err := rec.Decode(&b); err != nil {
			return false, err
		}
		if b.InUse() > 0 || (host != "" && b.Affinity != host) {
			return false, nil
		}
		ops := []datastore.Op{datastore.Delete(key)}
		if b.Affinity != "" {
			ops = append(ops, datastore.Delete(api.AffinityKey(b.Affinity, b.CIDR)))
		}
		tr, err := s.CAS(ctx, []datastore.Cond{datastore.Unchanged(key, rec.ModRevision)}, ops)
		if errors.Is(err, datastore.ErrUncertain) {
			continue // the next read says whether it went
		}
		if err != nil {
			return false, fmt.Errorf("delete block %s: %w", cidr, err)
		}
		if tr.Succeeded {
			return true, nil
		}
	}
	return false, fmt.Errorf("delete block %s: %w", cidr, datastore.ErrConflict)
}
