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

// ErrInUse is returned when a specific address is already allocated.
var ErrInUse = errors.New("address already in use")

// Assign takes the specific address ip for handle (docker run --ip). A
// replay succeeds: the same host's handle asking again for an address it
// holds and has not bound to an endpoint yet. Anyone else holding it,
// whatever the handle or the host, is refused.
func (a *Allocator) Assign(ctx context.Context, ip netip.Addr, handle string) error {
	return a.assign(ctx, ip, handle, api.HandleRecord{State: api.StateAllocated})
}

// AssignBound claims ip for handle already bound to endpointID (CreateEndpoint
// found its address freed by a stray release). An address held by another
// owner is refused.
func (a *Allocator) AssignBound(ctx context.Context, ip netip.Addr, handle, endpointID string) error {
	return a.assign(ctx, ip, handle, api.HandleRecord{State: api.StateBound, Endpoint: endpointID})
}

// Adopt claims ip for endpointID, an endpoint found running in the kernel
// whose record the datastore lost, and returns the handle that holds it: the
// allocation that already names the endpoint when there is one (only the
// endpoint record was lost), else a new one of handle. An address held by
// another owner is refused.
func (a *Allocator) Adopt(ctx context.Context, ip netip.Addr, handle, endpointID string) (string, error) {
	if h, err := a.heldFor(ctx, ip, endpointID); err != nil || h != "" {
		return h, err
	}
	return handle, a.AssignBound(ctx, ip, handle, endpointID)
}

// heldFor returns the handle of this host's allocation of ip that names
// endpointID, or "".
func (a *Allocator) heldFor(ctx context.Context, ip netip.Addr, endpointID string) (string, error) {
	cidr, err := a.blockCIDRFor(ctx, ip)
	if err != nil || !cidr.IsValid() {
		return "", err
	}
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return "", err
	}
	defer unlock()
	blk, _, _, err := a.blockFor(ctx, cidr, true)
	if err != nil || blk == nil {
		return "", err
	}
	h := blk.Holder(ip)
	if h == nil || h.Host != a.host {
		return "", nil
	}
	rec, rev, _, err := a.handleFor(ctx, api.HandleKey(a.host, h.Handle, ip), true)
	if err != nil || rev == 0 || rec.Seq != h.Seq || rec.Endpoint != endpointID {
		return "", err
	}
	if rec.State != api.StateBound {
		// DeleteEndpoint ran, yet the endpoint runs: bind it again.
		rec.State, rec.Since = api.StateBound, a.now().UTC()
		key := api.HandleKey(a.host, h.Handle, ip)
		res, err := a.store.CAS(ctx, []datastore.Cond{datastore.Unchanged(key, rev)}, []datastore.Op{datastore.PutAppended(key, rec)})
		if err != nil || !res.Succeeded {
			return "", fmt.Errorf("bind %s to endpoint %s again: %w", ip, abbrevID(endpointID), errors.Join(err, datastore.ErrConflict))
		}
	}
	return h.Handle, nil
}

func (a *Allocator) assign(ctx context.Context, ip netip.Addr, handle string, want api.HandleRecord) error {
	// The cached pools decide which block; the commit compares the pool's
	// revision, and a refusal because of the pools is made on a fresh read.
	if err := a.ensurePools(ctx, false); err != nil {
		return err
	}
	fresh, poolsFresh := false, false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		pool, err := a.assignPool(ip)
		if err != nil && !poolsFresh {
			poolsFresh = true
			if err := a.ensurePools(ctx, true); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		done, err := a.assignIn(ctx, pool, ip, handle, want, fresh)
		if err != nil || done {
			return err
		}
		fresh = true
	}
	return fmt.Errorf("assign %s: %w", ip, datastore.ErrConflict)
}

// assignPool returns the enabled pool ip is in, by the cached pools.
func (a *Allocator) assignPool(ip netip.Addr) (poolEntry, error) {
	pool, ok := a.poolFor(ip)
	if !ok {
		return pool, fmt.Errorf("address %s is in no IP pool (pools: %s): pick an address inside a pool", ip, a.poolList())
	}
	if pool.Disabled {
		return pool, fmt.Errorf("address %s is in IP pool %q (%s), which is disabled: enable the pool or pick another address", ip, pool.Name, pool.CIDR)
	}
	return pool, nil
}

// assignIn makes one attempt at giving ip of pool to handle, under its
// block's lock: done when it was given (or refused: the error says so),
// not done when the caches were stale.
func (a *Allocator) assignIn(ctx context.Context, pool poolEntry, ip netip.Addr, handle string, want api.HandleRecord, fresh bool) (bool, error) {
	cidr := netip.PrefixFrom(ip, pool.BlockSize).Masked()
	unlock, err := a.lockBlock(ctx, cidr)
	if err != nil {
		return false, err
	}
	defer unlock()
	blk, rev, cached, err := a.blockFor(ctx, cidr, fresh)
	if err != nil {
		return false, err
	}
	key := api.HandleKey(a.host, handle, ip)
	var extra []datastore.Op
	if blk == nil {
		blk = newBlock(cidr, a.host)
		extra = append(extra, datastore.PutRaw(api.AffinityKey(a.host, cidr), ""))
	}
	ord := blk.Ordinal(ip)
	var conds []datastore.Cond
	if h := blk.Allocations[ord]; h != nil {
		if cached { // confirm with etcd before answering without a write
			return false, nil
		}
		old, oldRev, err := a.takeOver(ctx, ip, h)
		if err != nil {
			return false, err
		}
		if old == "" {
			return true, a.heldAlready(ctx, ip, h, handle, want)
		}
		// This host's endpoint that held it is gone (DeleteEndpoint
		// ran); only Docker's release was still to come. Take it over.
		releaseOrdinal(blk, ord)
		conds = append(conds, datastore.Unchanged(old, oldRev))
		if old != key {
			extra = append(extra, datastore.Delete(old))
		}
	}
	owner := takeOrdinal(blk, ord, a.host, handle)
	rec := want
	rec.Seq, rec.Since = owner.Seq, a.now().UTC()
	out, err := a.commit(ctx, write{pool: &pool, blk: blk, rev: rev, conds: conds,
		ops: append(extra, datastore.PutAppended(key, rec)), applied: holds(ip, owner)})
	if err != nil || !out.ok {
		return false, err
	}
	a.cacheHandle(key, rec, out.rev)
	return true, nil
}

// takeOver returns the handle key (and its revision) of h's allocation of
// ip when it may be taken over: this host's, and its endpoint deleted.
func (a *Allocator) takeOver(ctx context.Context, ip netip.Addr, h *api.Owner) (string, int64, error) {
	if h.Host != a.host {
		return "", 0, nil
	}
	key := api.HandleKey(h.Host, h.Handle, ip)
	rec, rev, _, err := a.handleFor(ctx, key, true)
	if err != nil || rev == 0 || rec.Seq != h.Seq || rec.State != api.StateReleased {
		return "", 0, err
	}
	return key, rev, nil
}

// heldAlready answers an assignment of an address h holds: a replay of the
// same unbound request (or the same adoption) succeeds; anything else is in
// use.
func (a *Allocator) heldAlready(ctx context.Context, ip netip.Addr, h *api.Owner, handle string, want api.HandleRecord) error {
	if h.Host == a.host && h.Handle == handle {
		rec, _, _, err := a.handleFor(ctx, api.HandleKey(a.host, handle, ip), true)
		if err != nil {
			return err
		}
		if rec.Seq == h.Seq && rec.State == want.State && rec.Endpoint == want.Endpoint {
			return nil
		}
		if rec.Endpoint != "" {
			return fmt.Errorf("address %s is already in use by endpoint %s on this host (a container with the same MAC address): pick another address or MAC: %w",
				ip, abbrevID(rec.Endpoint), ErrInUse)
		}
	}
	return fmt.Errorf("address %s is already in use (held by %s): pick another address or remove the container holding it: %w", ip, h, ErrInUse)
}

func (a *Allocator) poolList() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s []string
	for _, p := range a.pools {
		s = append(s, fmt.Sprintf("%s %s", p.Name, p.CIDR))
	}
	sort.Strings(s)
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
