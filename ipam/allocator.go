// Package ipam owns IP pools, per-host blocks, their affinities and handles,
// and answers Docker's IPAM driver calls. It never touches the kernel.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// poolTTL bounds how long a cached pool list is trusted for the choice of
// pools; every allocation still compares the pool's revision in its
// transaction, so a disabled or deleted pool is never allocated from.
const poolTTL = 2 * time.Second

// ErrInUse is returned when a specific address is already allocated.
var ErrInUse = errors.New("address already in use")

// Allocator hands out addresses for one host. One mutex serialises this
// host's allocations (so goroutines do not race each other into CAS
// conflicts); hosts coordinate only through etcd transactions.
type Allocator struct {
	store *datastore.Store
	host  string
	log   *slog.Logger

	mu        sync.Mutex
	pools     map[string]poolEntry
	cfg       api.IPAMConfig
	poolsAt   time.Time
	own       map[string]cachedBlock // this host's blocks by CIDR
	ownLoaded bool
}

type poolEntry struct {
	api.IPPool
	rev int64
	pfx netip.Prefix
}

type cachedBlock struct {
	b   *Block
	rev int64
}

// New returns an allocator acting as host.
func New(store *datastore.Store, host string, log *slog.Logger) *Allocator {
	if log == nil {
		log = slog.Default()
	}
	return &Allocator{store: store, host: host, log: log, own: map[string]cachedBlock{}}
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

// Key helpers: the layout is documented in README.md.
func PoolKey(name string) string  { return datastore.PoolsPrefix + name }
func BlockKey(cidr string) string { return datastore.BlocksPrefix + datastore.EscapeCIDR(cidr) }
func AffinityKey(host, cidr string) string {
	return datastore.AffinityPrefix + host + "/" + datastore.EscapeCIDR(cidr)
}
func HandleKey(handle string, ip netip.Addr) string {
	return datastore.HandlesPrefix + handle + "/" + ip.String()
}

// SanitizeHandle makes a handle ID safe as a key segment.
func SanitizeHandle(h string) string { return strings.NewReplacer("/", "_", " ", "_").Replace(h) }

// ListPools reads every pool from etcd.
func ListPools(ctx context.Context, s *datastore.Store) ([]api.IPPool, error) {
	items, err := datastore.List[api.IPPool](ctx, s, datastore.PoolsPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.IPPool, 0, len(items))
	for _, it := range items {
		out = append(out, it.Value)
	}
	return out, nil
}

// refreshPools reads the pools and the IPAM configuration in one round trip.
func (a *Allocator) refreshPools(ctx context.Context) error {
	c, cancel := a.store.Ctx(ctx)
	defer cancel()
	resp, err := a.store.Client.Txn(c).Then(
		clientv3.OpGet(datastore.PoolsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(datastore.ConfigKey),
	).Commit()
	if err != nil {
		return fmt.Errorf("read IP pools: %w", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	a.pools = make(map[string]poolEntry, len(kvs))
	for _, kv := range kvs {
		var p api.IPPool
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			a.log.Warn("ignoring undecodable pool", "key", string(kv.Key), "err", err)
			continue
		}
		pfx, err := netip.ParsePrefix(p.CIDR)
		if err != nil {
			a.log.Warn("ignoring pool with a bad CIDR", "pool", p.Name, "cidr", p.CIDR)
			continue
		}
		a.pools[p.Name] = poolEntry{IPPool: p, rev: kv.ModRevision, pfx: pfx}
	}
	a.cfg = api.DefaultIPAMConfig()
	if cfgKVs := resp.Responses[1].GetResponseRange().Kvs; len(cfgKVs) > 0 {
		if err := json.Unmarshal(cfgKVs[0].Value, &a.cfg); err != nil {
			a.log.Warn("ignoring undecodable IPAM configuration", "err", err)
			a.cfg = api.DefaultIPAMConfig()
		}
	}
	a.poolsAt = time.Now()
	return nil
}

// Pools returns the pools, read fresh.
func (a *Allocator) Pools(ctx context.Context) ([]api.IPPool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshPools(ctx); err != nil {
		return nil, err
	}
	out := make([]api.IPPool, 0, len(a.pools))
	for _, p := range a.pools {
		out = append(out, p.IPPool)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CIDR < out[j].CIDR })
	return out, nil
}

func (a *Allocator) candidates(sel Selection) []poolEntry {
	var out []poolEntry
	for _, p := range a.pools {
		if p.Disabled || (sel.Family == 4) != p.pfx.Addr().Is4() {
			continue
		}
		if len(sel.Pools) > 0 && !contains(sel.Pools, p.Name) {
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
	for _, p := range a.pools {
		if p.pfx.Contains(ip) {
			return p, true
		}
	}
	return poolEntry{}, false
}

func (a *Allocator) loadOwn(ctx context.Context) error {
	if a.ownLoaded {
		return nil
	}
	keys, err := a.store.Keys(ctx, datastore.AffinityPrefix+a.host+"/")
	if err != nil {
		return fmt.Errorf("read this host's block affinities: %w", err)
	}
	for _, k := range keys {
		cidr := datastore.UnescapeCIDR(k[strings.LastIndex(k, "/")+1:])
		var b Block
		rev, err := a.store.Get(ctx, BlockKey(cidr), &b)
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if b.Affinity == a.host {
			a.own[cidr] = cachedBlock{b: &b, rev: rev}
		}
	}
	a.ownLoaded = true
	return nil
}

// commit writes blk if the block is still at rev (0: does not exist) and,
// when pool is given, the pool is still at its cached revision. On a conflict
// it refreshes the caches from the transaction's Else reads and reports false.
func (a *Allocator) commit(ctx context.Context, pool *poolEntry, blk *Block, rev int64, extra ...clientv3.Op) (bool, error) {
	bkey := BlockKey(blk.CIDR)
	val, err := json.Marshal(blk)
	if err != nil {
		return false, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(bkey), "=", rev)}
	elses := []clientv3.Op{clientv3.OpGet(bkey)}
	if pool != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(PoolKey(pool.Name)), "=", pool.rev))
		elses = append(elses, clientv3.OpGet(PoolKey(pool.Name)))
	}
	ops := append([]clientv3.Op{clientv3.OpPut(bkey, string(val))}, extra...)
	c, cancel := a.store.Ctx(ctx)
	defer cancel()
	resp, err := a.store.Client.Txn(c).If(cmps...).Then(ops...).Else(elses...).Commit()
	if err != nil {
		return false, fmt.Errorf("etcd transaction on block %s: %w", blk.CIDR, err)
	}
	if resp.Succeeded {
		if blk.Affinity == a.host {
			a.own[blk.CIDR] = cachedBlock{b: blk, rev: resp.Header.Revision}
		}
		return true, nil
	}
	// Conflict: learn what changed.
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		var fresh Block
		if err := json.Unmarshal(kvs[0].Value, &fresh); err != nil {
			return false, fmt.Errorf("decode block %s: %w", blk.CIDR, err)
		}
		if fresh.Affinity == a.host {
			a.own[blk.CIDR] = cachedBlock{b: &fresh, rev: kvs[0].ModRevision}
		} else {
			delete(a.own, blk.CIDR)
		}
	} else {
		delete(a.own, blk.CIDR)
	}
	if pool != nil {
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			var p api.IPPool
			if err := json.Unmarshal(kvs[0].Value, &p); err == nil {
				if pfx, err := netip.ParsePrefix(p.CIDR); err == nil {
					a.pools[p.Name] = poolEntry{IPPool: p, rev: kvs[0].ModRevision, pfx: pfx}
				}
			}
		} else {
			delete(a.pools, pool.Name)
		}
	}
	return false, nil
}

// Allocate takes one address for handle: from this host's blocks first, then
// by claiming a free block, and only when no block is free by borrowing from
// another host's block. The common path is a single etcd transaction.
func (a *Allocator) Allocate(ctx context.Context, handle string, sel Selection) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pools == nil || time.Since(a.poolsAt) > poolTTL {
		if err := a.refreshPools(ctx); err != nil {
			return netip.Addr{}, err
		}
	}
	if err := a.loadOwn(ctx); err != nil {
		return netip.Addr{}, err
	}
	refreshed := false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		cands := a.candidates(sel)
		if len(cands) == 0 {
			if !refreshed {
				refreshed = true
				if err := a.refreshPools(ctx); err != nil {
					return netip.Addr{}, err
				}
				continue
			}
			return netip.Addr{}, fmt.Errorf("no enabled IP pool matches %s: create one with calicoctl or enable a pool", sel)
		}
		ip, done, err := a.fromOwn(ctx, handle, sel, cands)
		if err != nil || done {
			return ip, err
		}
		if ip.IsValid() { // conflict: caches refreshed, go again
			continue
		}
		if a.mayClaim() {
			ip, done, err = a.claim(ctx, handle, sel, cands)
			if err != nil || done {
				return ip, err
			}
			if ip.IsValid() {
				continue
			}
		}
		if !a.cfg.StrictAffinity {
			ip, done, err = a.borrow(ctx, handle, sel, cands)
			if err != nil || done {
				return ip, err
			}
			if ip.IsValid() {
				continue
			}
		}
		if !refreshed { // maybe a pool was added or enabled since we looked
			refreshed = true
			if err := a.refreshPools(ctx); err != nil {
				return netip.Addr{}, err
			}
			continue
		}
		names := make([]string, 0, len(cands))
		for _, p := range cands {
			names = append(names, fmt.Sprintf("%s (%s)", p.Name, p.CIDR))
		}
		why := ""
		if !a.mayClaim() {
			why += "; this host may claim no more blocks (IPAMConfiguration autoAllocateBlocks/maxBlocksPerHost)"
		}
		if a.cfg.StrictAffinity {
			why += "; strictAffinity forbids borrowing from other hosts' blocks"
		}
		return netip.Addr{}, fmt.Errorf("IP pool %s exhausted: no free %s address%s; add a pool with calicoctl or remove unused containers",
			strings.Join(names, ", "), sel, why)
	}
	return netip.Addr{}, fmt.Errorf("allocate %s: %w", sel, datastore.ErrConflict)
}

// The three steps below return (ip, true, nil) on success, (invalid, false,
// nil) when they found nothing, and (conflictMarker, false, nil) when a
// transaction lost a race and the caller should start over.
var conflictMarker = netip.IPv4Unspecified()

func (a *Allocator) fromOwn(ctx context.Context, handle string, sel Selection, cands []poolEntry) (netip.Addr, bool, error) {
	cidrs := make([]string, 0, len(a.own))
	for c := range a.own {
		cidrs = append(cidrs, c)
	}
	sort.Strings(cidrs)
	for _, c := range cidrs {
		cb := a.own[c]
		pfx := cb.b.prefix()
		pool := poolOf(cands, pfx)
		if pool == nil || (sel.Within.IsValid() && !sel.Within.Overlaps(pfx)) {
			continue
		}
		qpos, ord := cb.b.firstFree(sel.Within)
		if ord < 0 {
			continue
		}
		blk := cb.b.clone()
		blk.take(qpos, ord, handle)
		ip := blk.addr(ord)
		ok, err := a.commit(ctx, pool, blk, cb.rev, clientv3.OpPut(HandleKey(handle, ip), ""))
		if err != nil {
			return netip.Addr{}, false, err
		}
		if !ok {
			return conflictMarker, false, nil
		}
		return ip, true, nil
	}
	return netip.Addr{}, false, nil
}

func (a *Allocator) claim(ctx context.Context, handle string, sel Selection, cands []poolEntry) (netip.Addr, bool, error) {
	keys, err := a.store.Keys(ctx, datastore.BlocksPrefix)
	if err != nil {
		return netip.Addr{}, false, err
	}
	exists := make(map[string]bool, len(keys))
	for _, k := range keys {
		exists[datastore.UnescapeCIDR(strings.TrimPrefix(k, datastore.BlocksPrefix))] = true
	}
	for i := range cands {
		pool := &cands[i]
		var free netip.Prefix
		blocksOf(pool.pfx, pool.BlockSize, sel.Within, func(b netip.Prefix) bool {
			if !exists[b.String()] {
				free = b
				return false
			}
			return true
		})
		if !free.IsValid() {
			continue
		}
		blk := newBlock(free, a.host)
		qpos, ord := blk.firstFree(sel.Within)
		if ord < 0 {
			continue
		}
		blk.take(qpos, ord, handle)
		ip := blk.addr(ord)
		ok, err := a.commit(ctx, pool, blk, 0,
			clientv3.OpPut(AffinityKey(a.host, blk.CIDR), ""),
			clientv3.OpPut(HandleKey(handle, ip), ""))
		if err != nil {
			return netip.Addr{}, false, err
		}
		if !ok {
			return conflictMarker, false, nil
		}
		a.log.Info("claimed block", "block", blk.CIDR, "pool", pool.Name, "host", a.host)
		return ip, true, nil
	}
	return netip.Addr{}, false, nil
}

func (a *Allocator) borrow(ctx context.Context, handle string, sel Selection, cands []poolEntry) (netip.Addr, bool, error) {
	items, err := datastore.List[Block](ctx, a.store, datastore.BlocksPrefix)
	if err != nil {
		return netip.Addr{}, false, err
	}
	// Other hosts may have freed addresses in this host's blocks (borrowed
	// ones they released) behind the cache: refresh it from the listing, and
	// if an own block turns out to have room, start over from own blocks.
	ownHasRoom := false
	for _, it := range items {
		if it.Value.Affinity != a.host {
			continue
		}
		if cb, ok := a.own[it.Value.CIDR]; ok && cb.rev == it.ModRevision {
			continue
		}
		blk := it.Value.clone()
		a.own[blk.CIDR] = cachedBlock{b: blk, rev: it.ModRevision}
		pfx := blk.prefix()
		if poolOf(cands, pfx) != nil && (!sel.Within.IsValid() || sel.Within.Overlaps(pfx)) {
			if _, ord := blk.firstFree(sel.Within); ord >= 0 {
				ownHasRoom = true
			}
		}
	}
	if ownHasRoom {
		return conflictMarker, false, nil
	}
	for _, it := range items {
		blk := it.Value
		pfx := blk.prefix()
		if blk.Affinity == a.host || !pfx.IsValid() {
			continue
		}
		pool := poolOf(cands, pfx)
		if pool == nil || (sel.Within.IsValid() && !sel.Within.Overlaps(pfx)) {
			continue
		}
		qpos, ord := blk.firstFree(sel.Within)
		if ord < 0 {
			continue
		}
		blk.take(qpos, ord, handle)
		ip := blk.addr(ord)
		ok, err := a.commit(ctx, pool, &blk, it.ModRevision, clientv3.OpPut(HandleKey(handle, ip), ""))
		if err != nil {
			return netip.Addr{}, false, err
		}
		if !ok {
			return conflictMarker, false, nil
		}
		a.log.Info("borrowed address from another host's block", "ip", ip, "block", blk.CIDR, "owner", blk.Affinity)
		return ip, true, nil
	}
	return netip.Addr{}, false, nil
}

// mayClaim applies the IPAM configuration's limits on claiming blocks.
func (a *Allocator) mayClaim() bool {
	if !a.cfg.AutoAllocateBlocks {
		return false
	}
	return a.cfg.MaxBlocksPerHost <= 0 || len(a.own) < a.cfg.MaxBlocksPerHost
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
func (a *Allocator) blockFor(ctx context.Context, cidr string, fresh bool) (blk *Block, rev int64, cached bool, err error) {
	if cb, ok := a.own[cidr]; ok && !fresh {
		return cb.b.clone(), cb.rev, true, nil
	}
	var b Block
	rev, err = a.store.Get(ctx, BlockKey(cidr), &b)
	if errors.Is(err, datastore.ErrNotFound) {
		delete(a.own, cidr)
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	if b.Affinity == a.host {
		a.own[cidr] = cachedBlock{b: b.clone(), rev: rev}
	} else {
		delete(a.own, cidr)
	}
	return &b, rev, false, nil
}

// Assign takes the specific address ip for handle. It is idempotent: the
// same handle asking again for the address it holds succeeds.
func (a *Allocator) Assign(ctx context.Context, ip netip.Addr, handle string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refreshPools(ctx); err != nil {
		return err
	}
	fresh := false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		pool, ok := a.poolFor(ip)
		if !ok {
			return fmt.Errorf("address %s is in no IP pool (pools: %s): pick an address inside a pool", ip, a.poolList())
		}
		if pool.Disabled {
			return fmt.Errorf("address %s is in IP pool %q (%s), which is disabled: enable the pool or pick another address", ip, pool.Name, pool.CIDR)
		}
		cidr := netip.PrefixFrom(ip, pool.BlockSize).Masked().String()
		blk, rev, cached, err := a.blockFor(ctx, cidr, fresh)
		if err != nil {
			return err
		}
		var extra []clientv3.Op
		if blk == nil {
			blk = newBlock(netip.MustParsePrefix(cidr), a.host)
			extra = append(extra, clientv3.OpPut(AffinityKey(a.host, cidr), ""))
		}
		ord := blk.ordinal(ip)
		if h := blk.Allocations[ord]; h != "" {
			if cached { // confirm with etcd before answering without a write
				fresh = true
				continue
			}
			if h == handle {
				return nil
			}
			return fmt.Errorf("address %s is already in use: pick another address or remove the container holding it: %w", ip, ErrInUse)
		}
		blk.takeOrdinal(ord, handle)
		extra = append(extra, clientv3.OpPut(HandleKey(handle, ip), ""))
		ok, err = a.commit(ctx, &pool, blk, rev, extra...)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("assign %s: %w", ip, datastore.ErrConflict)
}

func (a *Allocator) poolList() string {
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

// Release frees ip. Releasing a free address is not an error (Docker
// retries); it reports whether anything was freed.
func (a *Allocator) Release(ctx context.Context, ip netip.Addr) (bool, error) {
	return a.release(ctx, ip, "")
}

// ReleaseByHandle frees every address held by handle.
func (a *Allocator) ReleaseByHandle(ctx context.Context, handle string) (int, error) {
	keys, err := a.store.Keys(ctx, datastore.HandlesPrefix+handle+"/")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		ip, err := netip.ParseAddr(k[strings.LastIndex(k, "/")+1:])
		if err != nil {
			continue
		}
		ok, err := a.release(ctx, ip, handle)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		} else if err := a.store.Delete(ctx, k); err != nil { // a stale handle key
			return n, err
		}
	}
	return n, nil
}

func (a *Allocator) release(ctx context.Context, ip netip.Addr, onlyHandle string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cidr, err := a.blockCIDRFor(ctx, ip)
	if err != nil || cidr == "" {
		return false, err
	}
	fresh := false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		blk, rev, cached, err := a.blockFor(ctx, cidr, fresh)
		if err != nil || blk == nil {
			return false, err
		}
		ord := blk.ordinal(ip)
		h := blk.Allocations[ord]
		if h == "" || (onlyHandle != "" && h != onlyHandle) {
			if cached { // confirm with etcd before answering without a write
				fresh = true
				continue
			}
			return false, nil
		}
		blk.release(ord)
		if blk.inUse() == 0 && a.inNoPool(ctx, blk.prefix()) {
			// The last address of a deleted pool's block: the block and
			// its affinity go with it, in the same transaction.
			ok, err := a.dropBlock(ctx, blk, rev, clientv3.OpDelete(HandleKey(h, ip)))
			if err != nil || ok {
				return ok, err
			}
			fresh = true
			continue
		}
		ok, err := a.commit(ctx, nil, blk, rev, clientv3.OpDelete(HandleKey(h, ip)))
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, fmt.Errorf("release %s: %w", ip, datastore.ErrConflict)
}

// inNoPool reports whether no pool holds blk, by the pool list (read again
// when older than poolTTL). It is asked whenever a release empties a block,
// so it must not cost a round trip each time: a pool deleted within the
// last poolTTL may leave its emptied block behind, which is harmless.
func (a *Allocator) inNoPool(ctx context.Context, blk netip.Prefix) bool {
	if time.Since(a.poolsAt) > poolTTL {
		if err := a.refreshPools(ctx); err != nil {
			return false
		}
	}
	_, ok := a.poolFor(blk.Addr())
	return !ok
}

// dropBlock deletes blk and its affinity if blk is still at rev.
func (a *Allocator) dropBlock(ctx context.Context, blk *Block, rev int64, extra ...clientv3.Op) (bool, error) {
	ops := append([]clientv3.Op{clientv3.OpDelete(BlockKey(blk.CIDR))}, extra...)
	if blk.Affinity != "" {
		ops = append(ops, clientv3.OpDelete(AffinityKey(blk.Affinity, blk.CIDR)))
	}
	c, cancel := a.store.Ctx(ctx)
	defer cancel()
	resp, err := a.store.Client.Txn(c).If(clientv3.Compare(clientv3.ModRevision(BlockKey(blk.CIDR)), "=", rev)).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("etcd transaction on block %s: %w", blk.CIDR, err)
	}
	if resp.Succeeded {
		delete(a.own, blk.CIDR)
		a.log.Info("removed the empty block of a deleted pool", "block", blk.CIDR)
	}
	return resp.Succeeded, nil
}

// blockCIDRFor finds the block that holds ip: by its pool's block size, or,
// for a deleted pool, by searching the blocks.
func (a *Allocator) blockCIDRFor(ctx context.Context, ip netip.Addr) (string, error) {
	if a.pools == nil {
		if err := a.refreshPools(ctx); err != nil {
			return "", err
		}
	}
	if p, ok := a.poolFor(ip); ok {
		return netip.PrefixFrom(ip, p.BlockSize).Masked().String(), nil
	}
	keys, err := a.store.Keys(ctx, datastore.BlocksPrefix)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		c := datastore.UnescapeCIDR(strings.TrimPrefix(k, datastore.BlocksPrefix))
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(ip) {
			return c, nil
		}
	}
	return "", nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
