package ipam

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Release frees ip for Docker's ReleaseAddress, which names only the
// address. It frees the address only while it is still this host's
// allocation and no endpoint holds it: the allocation of a request Docker
// rolls back (api.StateAllocated) or of an endpoint DeleteEndpoint removed
// (api.StateReleased). A late or repeated release, which would otherwise free
// whoever holds the address now, is refused with a log line. Releasing a
// free address is not an error (Docker retries); it reports whether
// anything was freed.
func (a *Allocator) Release(ctx context.Context, ip netip.Addr) (bool, error) {
	return a.release(ctx, ip, nil, "")
}

// ReleaseOwned frees ip only while owner still holds it, whatever its
// state: the garbage collector and calicoctl name the allocation they mean.
func (a *Allocator) ReleaseOwned(ctx context.Context, ip netip.Addr, owner api.Owner, why string) (bool, error) {
	return a.release(ctx, ip, &owner, why)
}

// ReleaseByHandle frees every address this host's handle holds.
func (a *Allocator) ReleaseByHandle(ctx context.Context, handle string) (int, error) {
	res, err := a.store.Read(ctx, datastore.GetPrefix(api.HandlePrefix(a.host, handle)))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range res.Reads[0] {
		ref, ok := api.ParseHandleKey(r.Key)
		if !ok {
			continue
		}
		if rec, err := api.DecodeHandleRecord(r.Value); err == nil {
			ok, err := a.ReleaseOwned(ctx, ref.IP, api.Owner{Host: a.host, Handle: handle, Seq: rec.Seq}, "its handle was released")
			if err != nil {
				return n, err
			}
			if ok {
				n++
				continue
			}
		}
		// A record whose address the handle no longer holds.
		if _, err := a.store.CAS(ctx, []datastore.Cond{datastore.Unchanged(r.Key, r.ModRevision)}, []datastore.Op{datastore.Delete(r.Key)}); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (a *Allocator) release(ctx context.Context, ip netip.Addr, owner *api.Owner, why string) (bool, error) {
	cidr, err := a.blockCIDRFor(ctx, ip)
	if err != nil || !cidr.IsValid() {
		return false, err
	}
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return false, err
	}
	defer unlock()
	fresh := false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		blk, rev, cached, err := a.blockFor(ctx, cidr, fresh)
		if err != nil || blk == nil {
			return false, err
		}
		ord := blk.Ordinal(ip)
		h := blk.Allocations[ord]
		refuse := ""
		switch {
		case h == nil:
			refuse = "free"
		case owner != nil && !h.Same(owner):
			refuse = "held by " + h.String()
		case owner == nil && h.Host != "" && h.Host != a.host:
			refuse = "held by host " + h.Host
		}
		var key string
		var hrev int64
		if refuse == "" && h.Host != "" {
			key = api.HandleKey(h.Host, h.Handle, ip)
			var rec api.HandleRecord
			rec, hrev, _, err = a.handleFor(ctx, key, fresh)
			if err != nil {
				return false, err
			}
			if owner == nil && rec.State == api.StateBound && hrev != 0 {
				refuse = "bound to endpoint " + abbrevID(rec.Endpoint)
			}
		} else if refuse == "" {
			key = api.HandleRef{Handle: h.Handle, IP: ip}.Key() // written before hosts were recorded
		}
		if refuse != "" {
			if cached { // confirm with etcd before answering without a write
				fresh = true
				continue
			}
			if refuse != "free" {
				a.log.Warn("release refused: the address belongs to another allocation now (a late or repeated release)",
					"ip", ip, "reason", refuse, "asked", owner.String())
			}
			return false, nil
		}
		ok, learnt, err := a.free(ctx, blk, rev, ord, key, hrev, h)
		if err != nil {
			return false, err
		}
		if ok {
			if why != "" {
				a.log.Info("released address", "ip", ip, "owner", h.String(), "why", why)
			}
			return true, nil
		}
		// A conflict's reply brought the block and the handle record: go
		// again from them, without reading them again.
		fresh = !learnt
	}
	return false, fmt.Errorf("release %s: %w", ip, datastore.ErrConflict)
}

// free releases ordinal ord of blk (at rev) and deletes its handle record
// (at hrev, 0: not checked) in one transaction. The last address of a
// deleted pool's block takes the block and its affinity with it. On a
// conflict, learnt says the reply refreshed the caches of the block and
// the handle record.
func (a *Allocator) free(ctx context.Context, blk *api.Block, rev int64, ord int, key string, hrev int64, h *api.Owner) (ok, learnt bool, err error) {
	ip := blk.Addr(ord)
	releaseOrdinal(blk, ord)
	w := write{blk: blk, rev: rev, ops: []datastore.Op{datastore.Delete(key)}, applied: frees(ip, h),
		reads: []datastore.Op{datastore.Get(key)}}
	if hrev != 0 {
		w.conds = []datastore.Cond{datastore.Unchanged(key, hrev)}
	}
	if blk.InUse() == 0 && a.inNoPool(ctx, blk.CIDR) {
		w.drop = true
		if blk.Affinity != "" {
			w.ops = append(w.ops, datastore.Delete(api.AffinityKey(blk.Affinity, blk.CIDR)))
		}
	}
	out, err := a.commit(ctx, w)
	if err != nil {
		return false, false, err
	}
	if !out.ok {
		if len(out.extra) == 0 {
			return false, false, nil // read back after an unconfirmed commit: the handle was not
		}
		a.learnHandle(key, out.extra[0])
		return false, true, nil
	}
	a.forgetHandle(key)
	if w.drop {
		a.log.Info("removed the empty block of a deleted pool", "block", blk.CIDR)
	}
	return true, false, nil
}

// learnHandle caches the handle record at key from a read of it.
func (a *Allocator) learnHandle(key string, recs []datastore.Record) {
	if len(recs) == 0 {
		a.forgetHandle(key)
		return
	}
	rec, err := api.DecodeHandleRecord(recs[0].Value)
	if err != nil {
		a.forgetHandle(key) // read it again, and fail there with the key named
		return
	}
	a.cacheHandle(key, rec, recs[0].ModRevision)
}

// inNoPool reports whether no pool holds blk, by the pool list (read again
// when older than poolTTL). It is asked whenever a release empties a block,
// so it must not cost a round trip each time: a pool deleted within the
// last poolTTL may leave its emptied block behind, which is harmless.
func (a *Allocator) inNoPool(ctx context.Context, blk netip.Prefix) bool {
	if err := a.ensurePools(ctx, false); err != nil {
		return false
	}
	_, ok := a.poolFor(blk.Addr())
	return !ok
}

// blockCIDRFor finds the block that holds ip: by its pool's block size, or,
// for a deleted pool, by searching the blocks.
func (a *Allocator) blockCIDRFor(ctx context.Context, ip netip.Addr) (netip.Prefix, error) {
	a.mu.Lock()
	loaded := a.pools != nil
	a.mu.Unlock()
	if !loaded {
		if err := a.ensurePools(ctx, false); err != nil {
			return netip.Prefix{}, err
		}
	}
	if p, ok := a.poolFor(ip); ok {
		return netip.PrefixFrom(ip, p.BlockSize).Masked(), nil
	}
	keys, err := a.store.Keys(ctx, api.BlocksPrefix)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, k := range keys {
		if c, ok := api.ParseBlockKey(k); ok && c.Contains(ip) {
			return c, nil
		}
	}
	return netip.Prefix{}, nil
}

// ReleaseEndpoint frees the addresses of handle that endpointID holds (or
// held: DeleteEndpoint ran), for an endpoint the Docker engine no longer
// knows. An address another allocation holds by now is left alone.
func (a *Allocator) ReleaseEndpoint(ctx context.Context, handle string, ips []netip.Addr, endpointID, why string) (int, error) {
	n := 0
	for _, ip := range ips {
		res, err := a.store.Read(ctx, datastore.Get(api.HandleKey(a.host, handle, ip)))
		if err != nil {
			return n, err
		}
		r, ok := res.One(0)
		if !ok {
			continue
		}
		rec, err := api.DecodeHandleRecord(r.Value)
		if err != nil || rec.Endpoint != endpointID {
			continue
		}
		freed, err := a.ReleaseOwned(ctx, ip, api.Owner{Host: a.host, Handle: handle, Seq: rec.Seq}, why)
		if err != nil {
			return n, err
		}
		if freed {
			n++
		}
	}
	return n, nil
}
