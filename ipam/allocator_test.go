package ipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/dshook"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

var (
	v4 = Selection{Family: 4}
	v6 = Selection{Family: 6}
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// putPool writes a pool straight to etcd, as calicoctl would.
func putPool(t testing.TB, s *datastore.Store, p api.IPPool) api.IPPool {
	t.Helper()
	p.Normalize()
	if err := p.Validate(); err != nil {
		t.Fatalf("test pool %s: %v", p.Name, err)
	}
	if err := s.Put(context.Background(), api.PoolKey(p.Name), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func setup(t testing.TB, pools ...api.IPPool) *datastore.Store {
	t.Helper()
	s := testetcd.Start(t)
	for _, p := range pools {
		putPool(t, s, p)
	}
	return s
}

func mustAlloc(t testing.TB, a *Allocator, handle string, sel Selection) netip.Addr {
	t.Helper()
	ip, err := a.Allocate(testCtx(t), handle, sel)
	if err != nil {
		t.Fatalf("%s: Allocate(%s, %s): %v", a.Host(), handle, sel, err)
	}
	return ip
}

// readBlock returns the block as etcd holds it, or nil. It also checks the
// block's invariants.
func readBlock(t testing.TB, s *datastore.Store, cidr string) *api.Block {
	t.Helper()
	var b api.Block
	_, err := s.Get(context.Background(), api.BlockKey(netip.MustParsePrefix(cidr)), &b)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := t.(*testing.T); ok {
		checkBlock(tt, &b)
	}
	return &b
}

// ownerOf returns the allocation etcd records for ip.
func ownerOf(t testing.TB, s *datastore.Store, ip netip.Addr, bits int) api.Owner {
	t.Helper()
	b := readBlock(t, s, netip.PrefixFrom(ip, bits).Masked().String())
	if b == nil || b.Holder(ip) == nil {
		t.Fatalf("%s is not allocated", ip)
	}
	return *b.Holder(ip)
}

// holder returns the handle etcd records for ip in the block of size bits.
func holder(t testing.TB, s *datastore.Store, ip netip.Addr, bits int) (handle, affinity string) {
	t.Helper()
	b := readBlock(t, s, netip.PrefixFrom(ip, bits).Masked().String())
	if b == nil {
		return "", ""
	}
	if o := b.Holder(ip); o != nil {
		return o.Handle, b.Affinity
	}
	return "", b.Affinity
}

func keysUnder(t testing.TB, s *datastore.Store, prefix string) []string {
	t.Helper()
	keys, err := s.Keys(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		keys[i] = strings.TrimPrefix(keys[i], prefix)
	}
	return keys
}

func blockCIDRs(t testing.TB, s *datastore.Store) []string {
	t.Helper()
	var out []string
	for _, k := range keysUnder(t, s, api.BlocksPrefix) {
		if c, ok := api.ParseBlockKey(api.BlocksPrefix + k); ok {
			out = append(out, c.String())
		}
	}
	return out
}

// countingKV counts the requests that reach etcd from a Store.
type countingKV struct {
	dshook.KV
	gets, puts, deletes, txns atomic.Int64
}

// countRequests makes s count its requests from now on.
func countRequests(s *datastore.Store) *countingKV {
	kv := &countingKV{}
	s.SetHooks(&dshook.Hooks{WrapKV: func(next dshook.KV) dshook.KV { kv.KV = next; return kv }})
	return kv
}

func (k *countingKV) total() int64 {
	return k.gets.Load() + k.puts.Load() + k.deletes.Load() + k.txns.Load()
}

func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets.Add(1)
	return k.KV.Get(ctx, key, opts...)
}

func (k *countingKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	k.puts.Add(1)
	return k.KV.Put(ctx, key, val, opts...)
}

func (k *countingKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	k.deletes.Add(1)
	return k.KV.Delete(ctx, key, opts...)
}

func (k *countingKV) Commit(ctx context.Context, r dshook.Request) (*clientv3.TxnResponse, error) {
	k.txns.Add(1)
	return k.KV.Commit(ctx, r)
}

func TestAllocateFromOwnBlockInOneTransaction(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.10.0.0/24", BlockSize: 26})
	a := New(s, "host-a", quietLog())

	ip1 := mustAlloc(t, a, "h1", v4)
	if ip1 != addr("10.10.0.0") {
		t.Fatalf("first allocation = %s, want 10.10.0.0", ip1)
	}
	b := readBlock(t, s, "10.10.0.0/26")
	if b == nil || b.Affinity != "host-a" || b.Allocations[0].Handle != "h1" {
		t.Fatalf("block after first allocation = %+v, want affinity host-a and ordinal 0 held by h1", b)
	}
	if got := keysUnder(t, s, api.AffinityPrefix); !slices.Equal(got, []string{"host-a/10.10.0.0-26"}) {
		t.Fatalf("affinity keys = %v", got)
	}

	kv := countRequests(s)
	for i, want := range []string{"10.10.0.1", "10.10.0.2", "10.10.0.3"} {
		// Keep the pool list fresh so that its TTL cannot expire on a slow
		// machine and add a read: the point is the allocation's own cost.
		a.mu.Lock()
		a.poolsAt = time.Now()
		a.mu.Unlock()
		before := kv.total()
		ip := mustAlloc(t, a, "h2", v4)
		if ip != addr(want) {
			t.Fatalf("allocation %d = %s, want %s", i, ip, want)
		}
		if n := kv.total() - before; n != 1 || kv.txns.Load() != int64(i+1) {
			t.Fatalf("allocating from an own block took %d etcd requests (%d gets, %d txns so far), want exactly 1 transaction",
				n, kv.gets.Load(), kv.txns.Load())
		}
	}
	before := kv.total()
	if ok, err := a.Release(testCtx(t), ip1); err != nil || !ok {
		t.Fatalf("Release(%s) = %v, %v", ip1, ok, err)
	}
	if n := kv.total() - before; n != 1 {
		t.Fatalf("releasing from an own block took %d etcd requests, want 1 transaction", n)
	}

	if got := keysUnder(t, s, api.HandlesPrefix); !slices.Equal(got, []string{"host-a/h2/10.10.0.1", "host-a/h2/10.10.0.2", "host-a/h2/10.10.0.3"}) {
		t.Fatalf("handle keys = %v", got)
	}
	if b := readBlock(t, s, "10.10.0.0/26"); b.InUse() != 3 {
		t.Fatalf("block has %d addresses in use, want 3", b.InUse())
	}
}

func TestClaimsNewBlockWhenOwnBlocksAreFull(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.20.0.0/28", BlockSize: 30}) // 4 blocks of 4
	a := New(s, "host-a", quietLog())
	for i := 0; i < 9; i++ {
		ip := mustAlloc(t, a, "h", v4)
		if want := netip.AddrFrom4([4]byte{10, 20, 0, byte(i)}); ip != want {
			t.Fatalf("allocation %d = %s, want %s", i, ip, want)
		}
		wantBlocks := i/4 + 1
		if got := keysUnder(t, s, api.HostAffinitiesPrefix("host-a")); len(got) != wantBlocks {
			t.Fatalf("after %d allocations host-a has blocks %v, want %d", i+1, got, wantBlocks)
		}
	}
	for _, c := range []string{"10.20.0.0/30", "10.20.0.4/30", "10.20.0.8/30"} {
		if b := readBlock(t, s, c); b == nil || b.Affinity != "host-a" {
			t.Fatalf("block %s = %+v, want one affine to host-a", c, b)
		}
	}
	if b := readBlock(t, s, "10.20.0.12/30"); b != nil {
		t.Fatalf("block 10.20.0.12/30 was claimed before it was needed: %+v", b)
	}
}

func TestBorrowsOnlyWhenNoFreeBlockIsLeft(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.30.0.0/28", BlockSize: 30}) // 4 blocks of 4
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())

	if ip := mustAlloc(t, a, "a0", v4); ip != addr("10.30.0.0") {
		t.Fatalf("host-a's first address = %s", ip)
	}
	// host-a's block has 3 free addresses, but host-b must claim the three
	// free blocks before it borrows any of them.
	for i := 0; i < 12; i++ {
		ip := mustAlloc(t, b, "b", v4)
		if h, aff := holder(t, s, ip, 30); aff != "host-b" || h != "b" {
			t.Fatalf("host-b's allocation %d = %s in a block affine to %q (holder %q), want its own block while free blocks remain", i, ip, aff, h)
		}
	}
	ip := mustAlloc(t, b, "b-borrowed", v4)
	if ip != addr("10.30.0.1") {
		t.Fatalf("with no free block left host-b got %s, want 10.30.0.1 borrowed from host-a's block", ip)
	}
	if h, aff := holder(t, s, ip, 30); aff != "host-a" || h != "b-borrowed" {
		t.Fatalf("borrowed address: block affinity %q, holder %q; want the block to stay host-a's, held by b-borrowed", aff, h)
	}
	// host-a's cached copy of its block is now stale; it must still get the
	// right next address from it, not a duplicate.
	for _, want := range []string{"10.30.0.2", "10.30.0.3"} {
		if ip := mustAlloc(t, a, "a", v4); ip != addr(want) {
			t.Fatalf("host-a got %s, want %s from its own block", ip, want)
		}
	}
	for _, x := range []*Allocator{a, b} {
		if _, err := x.Allocate(testCtx(t), "late", v4); err == nil || !strings.Contains(err.Error(), "exhausted") {
			t.Fatalf("%s allocated from a full pool: err = %v", x.Host(), err)
		}
	}
	if got := len(keysUnder(t, s, api.HandlesPrefix)); got != 16 {
		t.Fatalf("%d handle keys for 16 allocations", got)
	}
}

func TestOwnerReusesAddressFreedByBorrower(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.35.0.0/29", BlockSize: 30}) // 2 blocks of 4
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())
	mustAlloc(t, a, "a", v4) // claims 10.35.0.0/30
	for i := 0; i < 4; i++ {
		mustAlloc(t, b, "b", v4) // claims and fills 10.35.0.4/30
	}
	borrowed := mustAlloc(t, b, "b", v4)
	if borrowed != addr("10.35.0.1") {
		t.Fatalf("host-b borrowed %s, want 10.35.0.1", borrowed)
	}
	mustAlloc(t, a, "a", v4)
	mustAlloc(t, a, "a", v4) // pool now full
	if ok, err := b.Release(testCtx(t), borrowed); err != nil || !ok {
		t.Fatalf("host-b releasing its borrowed %s = %v, %v", borrowed, ok, err)
	}
	// The only free address is in host-a's own block, freed by someone else.
	ip, err := a.Allocate(testCtx(t), "a-again", v4)
	if err != nil || ip != borrowed {
		t.Fatalf("host-a Allocate = %s, %v; want %s, which host-b freed in host-a's block", ip, err, borrowed)
	}
}

func TestExhaustedPoolErrorNamesThePool(t *testing.T) {
	s := setup(t, api.IPPool{Name: "tiny", CIDR: "10.40.0.0/30", BlockSize: 30})
	a := New(s, "host-a", quietLog())
	for i := 0; i < 4; i++ {
		mustAlloc(t, a, "h", v4)
	}
	_, err := a.Allocate(testCtx(t), "h", v4)
	if err == nil {
		t.Fatal("allocated a fifth address from a /30")
	}
	for _, want := range []string{"tiny", "10.40.0.0/30", "exhausted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if errors.Is(err, datastore.ErrConflict) {
		t.Errorf("exhaustion reported as a conflict: %v", err)
	}
}

func TestDisabledPoolIsNotAllocatedFromEvenWithStaleCache(t *testing.T) {
	first := api.IPPool{Name: "first", CIDR: "10.50.0.0/24", BlockSize: 26}
	s := setup(t, first, api.IPPool{Name: "second", CIDR: "10.51.0.0/24", BlockSize: 26})
	a := New(s, "host-a", quietLog())
	if ip := mustAlloc(t, a, "h", v4); ip != addr("10.50.0.0") {
		t.Fatalf("first allocation = %s, want 10.50.0.0 from the lowest pool", ip)
	}

	first.Disabled = true
	putPool(t, s, first) // as calicoctl would, behind the allocator's back
	a.mu.Lock()
	stale := !a.pools["first"].Disabled && time.Since(a.poolsAt) < poolTTL
	a.mu.Unlock()
	if !stale {
		t.Fatal("test set-up: the allocator's pool cache should still think pool first is enabled")
	}
	for i := 0; i < 3; i++ {
		ip := mustAlloc(t, a, "h", v4)
		if !pfx("10.51.0.0/24").Contains(ip) {
			t.Fatalf("allocation %d after disabling pool first = %s, want one from pool second", i, ip)
		}
	}
	if b := readBlock(t, s, "10.50.0.0/26"); b.InUse() != 1 {
		t.Fatalf("disabled pool's block has %d addresses in use, want 1", b.InUse())
	}

	// Delete the last enabled pool the same way: nothing is left to allocate from.
	if err := s.Delete(testCtx(t), api.PoolKey("second")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(testCtx(t), "h", v4); err == nil || !strings.Contains(err.Error(), "no enabled IP pool") {
		t.Fatalf("Allocate with only a disabled pool: err = %v, want \"no enabled IP pool\"", err)
	}
	if b := readBlock(t, s, "10.51.0.0/26"); b.InUse() != 3 {
		t.Fatalf("deleted pool's block has %d addresses in use, want 3", b.InUse())
	}
}

func TestAssign(t *testing.T) {
	s := setup(t,
		api.IPPool{Name: "p", CIDR: "10.60.0.0/24", BlockSize: 26},
		api.IPPool{Name: "off", CIDR: "10.61.0.0/24", BlockSize: 26, Disabled: true},
		api.IPPool{Name: "p6", CIDR: "fd00:60::/120", BlockSize: 122},
	)
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())
	ctx := testCtx(t)
	x := addr("10.60.0.10")

	if err := a.Assign(ctx, x, "h1"); err != nil {
		t.Fatalf("Assign free %s: %v", x, err)
	}
	if blk := readBlock(t, s, "10.60.0.0/26"); blk == nil || blk.Affinity != "host-a" || blk.Allocations[10].Handle != "h1" || blk.InUse() != 1 {
		t.Fatalf("block after Assign = %+v, want a new host-a block with ordinal 10 held by h1", blk)
	}
	if err := a.Assign(ctx, x, "h1"); err != nil {
		t.Fatalf("Assign of %s again with the same handle: %v, want success (idempotent)", x, err)
	}
	if blk := readBlock(t, s, "10.60.0.0/26"); blk.InUse() != 1 {
		t.Fatalf("repeated Assign left %d addresses in use, want 1", blk.InUse())
	}
	if got := keysUnder(t, s, api.HandlesPrefix); !slices.Equal(got, []string{"host-a/h1/10.60.0.10"}) {
		t.Fatalf("handle keys = %v", got)
	}

	tests := []struct {
		name     string
		alloc    *Allocator
		ip       string
		inUse    bool   // want an error wrapping ErrInUse
		mentions string // else: want an error saying this
	}{
		{name: "in use, other handle", alloc: a, ip: "10.60.0.10", inUse: true},
		{name: "in use, other host", alloc: b, ip: "10.60.0.10", inUse: true},
		{name: "outside every pool", alloc: a, ip: "10.99.0.1", mentions: "in no IP pool"},
		{name: "other family, outside every pool", alloc: a, ip: "fd00:99::1", mentions: "in no IP pool"},
		{name: "disabled pool", alloc: a, ip: "10.61.0.1", mentions: "disabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.alloc.Assign(ctx, addr(tc.ip), "h2")
			if err == nil {
				t.Fatalf("Assign(%s) succeeded", tc.ip)
			}
			if errors.Is(err, ErrInUse) != tc.inUse {
				t.Fatalf("Assign(%s) = %v; errors.Is(err, ErrInUse) = %v, want %v", tc.ip, err, !tc.inUse, tc.inUse)
			}
			if !strings.Contains(err.Error(), tc.mentions) {
				t.Fatalf("Assign(%s) = %v, want it to say %q", tc.ip, err, tc.mentions)
			}
		})
	}
	if blk := readBlock(t, s, "10.61.0.0/26"); blk != nil {
		t.Fatalf("Assign in a disabled pool created block %+v", blk)
	}
	if h, _ := holder(t, s, x, 26); h != "h1" {
		t.Fatalf("%s is held by %q after failed Assigns, want h1", x, h)
	}

	// Another host may assign an address inside host-a's block; the block stays host-a's.
	if err := b.Assign(ctx, addr("10.60.0.11"), "hb"); err != nil {
		t.Fatal(err)
	}
	if h, aff := holder(t, s, addr("10.60.0.11"), 26); h != "hb" || aff != "host-a" {
		t.Fatalf("10.60.0.11: holder %q, block affinity %q; want hb, host-a", h, aff)
	}
	// Allocation never hands out assigned addresses, even with a stale cache.
	for i := 0; i < 20; i++ {
		if ip := mustAlloc(t, a, "auto", v4); ip == x || ip == addr("10.60.0.11") {
			t.Fatalf("Allocate handed out assigned address %s", ip)
		}
	}
	if err := a.Assign(ctx, addr("fd00:60::5"), "h6"); err != nil {
		t.Fatalf("Assign IPv6: %v", err)
	}
	if h, _ := holder(t, s, addr("fd00:60::5"), 122); h != "h6" {
		t.Fatalf("fd00:60::5 held by %q, want h6", h)
	}
}

// An allocator's cached copy of its own block goes stale when another
// allocator changes the block; a decision that writes nothing must not rest
// on it.
func TestAssignAndReleaseDoNotTrustAStaleCache(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.65.0.0/24", BlockSize: 26})
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())
	ctx := testCtx(t)
	x, y := addr("10.65.0.10"), addr("10.65.0.11")

	if err := a.Assign(ctx, x, "h1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Release(ctx, x); err != nil || ok {
		t.Fatalf("host-b Release(%s) of host-a's address = %v, %v; want refused", x, ok, err)
	}
	if ok, err := b.ReleaseOwned(ctx, x, ownerOf(t, s, x, 26), "test"); err != nil || !ok {
		t.Fatalf("host-b ReleaseOwned(%s) = %v, %v", x, ok, err)
	}
	// host-a still caches x as held by h1. Asking again must really take it.
	if err := a.Assign(ctx, x, "h1"); err != nil {
		t.Fatal(err)
	}
	if h, _ := holder(t, s, x, 26); h != "h1" {
		t.Fatalf("Assign(%s, h1) succeeded but etcd records holder %q: the address is free for anyone", x, h)
	}
	if err := b.Assign(ctx, x, "h2"); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second holder could take %s: err = %v", x, err)
	}

	// host-b takes y in host-a's block; host-a's cache still sees y free.
	if err := b.Assign(ctx, y, "hb"); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.ReleaseOwned(ctx, y, ownerOf(t, s, y, 26), "test"); err != nil || !ok {
		t.Fatalf("host-a ReleaseOwned(%s), held by hb in host-a's block = %v, %v; want true", y, ok, err)
	}
	if h, _ := holder(t, s, y, 26); h != "" {
		t.Fatalf("%s still held by %q after Release", y, h)
	}
	// And the other way: host-a's cache says y is held by hb, but it is free.
	if err := b.Assign(ctx, y, "hb2"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Release(ctx, y); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(ctx, y, "ha"); err != nil {
		t.Fatalf("Assign(%s) of a free address: %v", y, err)
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.70.0.0/24", BlockSize: 26})
	a := New(s, "host-a", quietLog())
	ctx := testCtx(t)
	x := mustAlloc(t, a, "h", v4)
	y := mustAlloc(t, a, "h", v4)

	for i, want := range []bool{true, false, false} {
		ok, err := a.Release(ctx, x)
		if err != nil || ok != want {
			t.Fatalf("Release(%s) call %d = %v, %v; want %v, nil", x, i+1, ok, err, want)
		}
	}
	for _, ip := range []string{"192.0.2.1", "10.70.0.200", "fd00::1"} {
		if ok, err := a.Release(ctx, addr(ip)); err != nil || ok {
			t.Errorf("Release(%s), never allocated = %v, %v; want false, nil", ip, ok, err)
		}
	}
	if got := keysUnder(t, s, api.HandlesPrefix); !slices.Equal(got, []string{"host-a/h/" + y.String()}) {
		t.Fatalf("handle keys = %v, want only y's", got)
	}

	// An address whose pool was deleted can still be released, by a fresh
	// allocator that finds the block by searching.
	if err := s.Delete(ctx, api.PoolKey("p")); err != nil {
		t.Fatal(err)
	}
	fresh := New(s, "host-a", quietLog()) // the daemon restarted
	if ok, err := fresh.Release(ctx, y); err != nil || !ok {
		t.Fatalf("Release(%s) after its pool was deleted = %v, %v; want true", y, ok, err)
	}
	// That was its block's last address, and no pool holds the block any
	// more: the block goes with it.
	if b := readBlock(t, s, "10.70.0.0/26"); b != nil {
		t.Fatalf("the emptied block of a deleted pool is still there, %d in use", b.InUse())
	}
	if got := keysUnder(t, s, api.HandlesPrefix); len(got) != 0 {
		t.Fatalf("handle keys left: %v", got)
	}
}

func TestReleaseByHandle(t *testing.T) {
	s := setup(t,
		api.IPPool{Name: "p4", CIDR: "10.80.0.0/24", BlockSize: 26},
		api.IPPool{Name: "p6", CIDR: "fd00:80::/120", BlockSize: 122},
	)
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())
	ctx := testCtx(t)
	h1 := []netip.Addr{mustAlloc(t, a, "h1", v4), mustAlloc(t, a, "h1", v6)}
	if err := a.Assign(ctx, addr("10.80.0.100"), "h1"); err != nil {
		t.Fatal(err)
	}
	h1 = append(h1, addr("10.80.0.100"))
	// A handle is one host's: host-b's h1 is another handle.
	keep := map[netip.Addr]string{mustAlloc(t, a, "h10", v4): "h10", mustAlloc(t, a, "h2", v6): "h2", mustAlloc(t, b, "h1", v4): "h1"}

	n, err := a.ReleaseByHandle(ctx, "h1")
	if err != nil || n != len(h1) {
		t.Fatalf("ReleaseByHandle(h1) = %d, %v; want %d", n, err, len(h1))
	}
	for _, ip := range h1 {
		bits := 26
		if ip.Is6() {
			bits = 122
		}
		if h, _ := holder(t, s, ip, bits); h != "" {
			t.Errorf("%s still held by %q", ip, h)
		}
	}
	for ip, want := range keep {
		bits := 26
		if ip.Is6() {
			bits = 122
		}
		if h, _ := holder(t, s, ip, bits); h != want {
			t.Errorf("%s held by %q, want %q (ReleaseByHandle(h1) must not touch it)", ip, h, want)
		}
	}
	if got := keysUnder(t, s, api.HandlePrefix("host-a", "h1")); len(got) != 0 {
		t.Fatalf("h1 handle keys left: %v", got)
	}
	if n, err := a.ReleaseByHandle(ctx, "h1"); err != nil || n != 0 {
		t.Fatalf("second ReleaseByHandle(h1) = %d, %v; want 0, nil", n, err)
	}
	if n, err := b.ReleaseByHandle(ctx, "h10"); err != nil || n != 0 {
		t.Fatalf("ReleaseByHandle(h10) from another host = %d, %v; want 0: host-a's handle is not host-b's", n, err)
	}
	if n, err := b.ReleaseByHandle(ctx, "h1"); err != nil || n != 1 {
		t.Fatalf("host-b ReleaseByHandle(h1) = %d, %v; want 1", n, err)
	}
	if n, err := a.ReleaseByHandle(ctx, "h10"); err != nil || n != 1 {
		t.Fatalf("ReleaseByHandle(h10) = %d, %v; want 1", n, err)
	}
	// A handle key whose address is no longer held by it is cleaned up.
	if err := s.Put(ctx, api.HandleKey("host-a", "ghost", addr("10.80.0.200")), ""); err != nil {
		t.Fatal(err)
	}
	if n, err := a.ReleaseByHandle(ctx, "ghost"); err != nil || n != 0 {
		t.Fatalf("ReleaseByHandle(ghost) = %d, %v; want 0", n, err)
	}
	if got := keysUnder(t, s, api.HandlesPrefix); len(got) != 1 || !strings.HasPrefix(got[0], "host-a/h2/") {
		t.Fatalf("handle keys = %v, want only h2's", got)
	}
}

func TestJustReleasedAddressIsNotReusedAtOnce(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.90.0.0/30", BlockSize: 30}) // one block of 4
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())
	ctx := testCtx(t)
	release := func(x *Allocator, ip string) {
		t.Helper()
		if ok, err := x.Release(ctx, addr(ip)); err != nil || !ok {
			t.Fatalf("Release(%s) = %v, %v", ip, ok, err)
		}
	}
	expect := func(x *Allocator, want string) {
		t.Helper()
		if ip := mustAlloc(t, x, "h", v4); ip != addr(want) {
			t.Fatalf("%s allocated %s, want %s", x.Host(), ip, want)
		}
	}
	expect(a, "10.90.0.0")
	expect(a, "10.90.0.1")
	expect(a, "10.90.0.2")
	release(a, "10.90.0.1")
	expect(a, "10.90.0.3") // not the just-released .1
	expect(a, "10.90.0.1")
	release(a, "10.90.0.3")
	release(a, "10.90.0.0")
	expect(a, "10.90.0.3") // released first, handed out first
	// The order holds across hosts: host-b borrows the oldest free address.
	release(a, "10.90.0.2")
	expect(b, "10.90.0.0")
	expect(a, "10.90.0.2")
}

func TestIPv6Allocation(t *testing.T) {
	s := setup(t,
		api.IPPool{Name: "p4", CIDR: "10.100.0.0/24"},
		api.IPPool{Name: "p6", CIDR: "fd00:100::/120"}, // default block size /122
	)
	a := New(s, "host-a", quietLog())
	if ip := mustAlloc(t, a, "h", v6); ip != addr("fd00:100::") {
		t.Fatalf("first IPv6 address = %s, want fd00:100::", ip)
	}
	if b := readBlock(t, s, "fd00:100::/122"); b == nil || len(b.Allocations) != 64 || b.Affinity != "host-a" {
		t.Fatalf("IPv6 block = %+v, want a /122 of 64 affine to host-a", b)
	}
	if ip := mustAlloc(t, a, "h", v4); ip != addr("10.100.0.0") {
		t.Fatalf("IPv4 address = %s, want 10.100.0.0 (families must not mix)", ip)
	}
	var last netip.Addr
	for i := 1; i < 65; i++ {
		last = mustAlloc(t, a, "h", v6)
	}
	if last != addr("fd00:100::40") {
		t.Fatalf("65th IPv6 address = %s, want fd00:100::40 from a second block", last)
	}
	if got := keysUnder(t, s, api.HostAffinitiesPrefix("host-a")); len(got) != 3 {
		t.Fatalf("host-a blocks = %v, want 2 IPv6 and 1 IPv4", got)
	}
	if ok, err := a.Release(testCtx(t), last); err != nil || !ok {
		t.Fatalf("Release(%s) = %v, %v", last, ok, err)
	}

	s2 := setup(t, api.IPPool{Name: "p4", CIDR: "10.101.0.0/24"})
	if _, err := New(s2, "host-a", quietLog()).Allocate(testCtx(t), "h", v6); err == nil || !strings.Contains(err.Error(), "no enabled IP pool matches IPv6") {
		t.Fatalf("IPv6 Allocate with only an IPv4 pool: err = %v", err)
	}
}

func TestAllocateWithin(t *testing.T) {
	s := setup(t,
		api.IPPool{Name: "big", CIDR: "10.110.0.0/16", BlockSize: 26},
		api.IPPool{Name: "x", CIDR: "10.120.0.0/24", BlockSize: 26},
		api.IPPool{Name: "y", CIDR: "10.121.0.0/24", BlockSize: 26},
		api.IPPool{Name: "p6", CIDR: "fd00:110::/64"},
	)
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())

	subnet := Selection{Family: 4, Within: pfx("10.110.5.0/24")}
	if ip := mustAlloc(t, a, "h", subnet); ip != addr("10.110.5.0") {
		t.Fatalf("Allocate within %s = %s, want 10.110.5.0", subnet.Within, ip)
	}
	ipRange := Selection{Family: 4, Within: pfx("10.110.7.16/28")}
	if ip := mustAlloc(t, a, "h", ipRange); ip != addr("10.110.7.16") {
		t.Fatalf("Allocate within %s = %s, want 10.110.7.16", ipRange.Within, ip)
	}
	if b := readBlock(t, s, "10.110.7.0/26"); b == nil || b.Affinity != "host-a" {
		t.Fatalf("a range narrower than a block should claim the block holding it, got %+v", b)
	}
	// Unrestricted, host-a uses one of the blocks it already has.
	if ip := mustAlloc(t, a, "h", v4); !pfx("10.110.5.0/26").Contains(ip) && !pfx("10.110.7.0/26").Contains(ip) {
		t.Fatalf("unrestricted Allocate = %s, want one from host-a's existing blocks", ip)
	}
	if got := keysUnder(t, s, api.HostAffinitiesPrefix("host-a")); len(got) != 2 {
		t.Fatalf("host-a blocks = %v, want 2", got)
	}

	// The only block for a narrow range is host-a's: host-b borrows from it
	// even though the pool has free blocks elsewhere, and never leaves the range.
	narrow := Selection{Family: 4, Within: pfx("10.110.7.16/30")}
	for _, want := range []string{"10.110.7.17", "10.110.7.18", "10.110.7.19"} {
		if ip := mustAlloc(t, b, "hb", narrow); ip != addr(want) {
			t.Fatalf("host-b Allocate within %s = %s, want %s", narrow.Within, ip, want)
		}
	}
	_, err := b.Allocate(testCtx(t), "hb", narrow)
	if err == nil || !strings.Contains(err.Error(), "exhausted") || !strings.Contains(err.Error(), "within 10.110.7.16/30") {
		t.Fatalf("Allocate in a full range: err = %v, want exhausted, naming the range", err)
	}
	if _, err := a.Allocate(testCtx(t), "h", Selection{Family: 4, Within: pfx("10.200.0.0/24")}); err == nil || !strings.Contains(err.Error(), "no enabled IP pool matches") {
		t.Fatalf("Allocate within a range outside every pool: err = %v", err)
	}

	if ip := mustAlloc(t, a, "h", Selection{Family: 4, Pools: []string{"y"}}); !pfx("10.121.0.0/24").Contains(ip) {
		t.Fatalf("Allocate from pool y = %s", ip)
	}
	w6 := Selection{Family: 6, Within: pfx("fd00:110::1:0/112")}
	if ip := mustAlloc(t, a, "h", w6); ip != addr("fd00:110::1:0") {
		t.Fatalf("Allocate within %s = %s", w6.Within, ip)
	}
}

func TestEnsureDefaultPools(t *testing.T) {
	ctx := testCtx(t)
	s := setup(t)
	avoid := []netip.Prefix{pfx("fd00::/9")}
	created, err := EnsureDefaultPools(ctx, s, avoid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != 2 {
		t.Fatalf("EnsureDefaultPools created %+v, want 2 pools", created)
	}
	byName := map[string]api.IPPool{}
	for _, p := range created {
		byName[p.Name] = p
	}
	p4, p6 := byName[DefaultPoolV4Name], byName[DefaultPoolV6Name]
	if p4.CIDR != DefaultPoolV4CIDR || p4.BlockSize != 26 || !p4.NATOutgoing || p4.Disabled {
		t.Errorf("default IPv4 pool = %+v", p4)
	}
	v6p, err := netip.ParsePrefix(p6.CIDR)
	if err != nil || v6p.Bits() != 48 || !pfx("fd80::/9").Contains(v6p.Addr()) || p6.BlockSize != 122 {
		t.Errorf("default IPv6 pool = %+v, want a /48 in fd80::/9 (fd00::/9 is to be avoided)", p6)
	}
	stored, err := ListPools(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(stored, func(x, y api.IPPool) int { return strings.Compare(x.Name, y.Name) })
	if len(stored) != 2 || stored[0] != p4 || stored[1] != p6 {
		t.Fatalf("stored pools = %+v, want %+v and %+v", stored, p4, p6)
	}

	if again, err := EnsureDefaultPools(ctx, s, nil, nil); err != nil || len(again) != 0 {
		t.Fatalf("second EnsureDefaultPools = %+v, %v; want nothing created", again, err)
	}
	if err := s.Delete(ctx, api.PoolKey(DefaultPoolV4Name)); err != nil {
		t.Fatal(err)
	}
	if again, err := EnsureDefaultPools(ctx, s, nil, nil); err != nil || len(again) != 0 {
		t.Fatalf("EnsureDefaultPools after the user deleted a default pool = %+v, %v; want nothing created", again, err)
	}
	if stored, _ := ListPools(ctx, s); len(stored) != 1 || stored[0] != p6 {
		t.Fatalf("pools after deleting the IPv4 default = %+v, want only %+v", stored, p6)
	}

	// Hosts starting together create one set.
	s2 := setup(t)
	var wg sync.WaitGroup
	var creators atomic.Int32
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := EnsureDefaultPools(ctx, s2, nil, nil)
			if err != nil {
				t.Error(err)
			}
			if len(got) > 0 {
				creators.Add(1)
			}
		}()
	}
	wg.Wait()
	if stored, _ := ListPools(ctx, s2); creators.Load() != 1 || len(stored) != 2 {
		t.Fatalf("4 concurrent EnsureDefaultPools: %d created pools, %d stored; want 1 and 2", creators.Load(), len(stored))
	}

	// A pool the user made first is kept; only the missing family is added.
	s3 := setup(t, api.IPPool{Name: "mine", CIDR: "10.0.0.0/16"})
	got, err := EnsureDefaultPools(ctx, s3, nil, nil)
	if err != nil || len(got) != 1 || got[0].Name != DefaultPoolV6Name {
		t.Fatalf("EnsureDefaultPools with a user IPv4 pool = %+v, %v; want only the IPv6 default", got, err)
	}
}

func TestRandomULAAvoids(t *testing.T) {
	avoid := []netip.Prefix{pfx("fd00::/9"), pfx("10.0.0.0/8")}
	for i := 0; i < 200; i++ {
		s, err := randomULA(avoid)
		if err != nil {
			t.Fatal(err)
		}
		p := pfx(s)
		if p.Bits() != 48 || p.Masked() != p || !pfx("fd80::/9").Contains(p.Addr()) {
			t.Fatalf("randomULA = %s, want a masked /48 in fd80::/9", s)
		}
	}
	if s, err := randomULA([]netip.Prefix{pfx("fd00::/8")}); err == nil {
		t.Fatalf("randomULA with all of fd00::/8 to avoid = %s, want an error", s)
	}
}

func TestIPAMConfigLimits(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	pool := api.IPPool{Name: "p", CIDR: "10.77.0.0/28", BlockSize: 30}
	pool.Normalize()
	if err := s.Put(ctx, api.PoolKey("p"), pool); err != nil {
		t.Fatal(err)
	}
	a := New(s, "host-a", nil)
	b := New(s, "host-b", nil)
	sel := Selection{Family: 4}
	// host-a takes one block (4 addresses) with one allocation.
	if _, err := a.Allocate(ctx, "a0", sel); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     api.IPAMConfig
		alloc   *Allocator
		n       int
		wantErr string
	}{
		{"maxBlocksPerHost stops claims", api.IPAMConfig{AutoAllocateBlocks: true, MaxBlocksPerHost: 1, StrictAffinity: true}, a, 4, "maxBlocksPerHost"},
		{"autoAllocateBlocks false: no claim, strictAffinity: no borrow", api.IPAMConfig{AutoAllocateBlocks: false, StrictAffinity: true}, b, 1, "strictAffinity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Put(ctx, api.IPAMConfigKey, tc.cfg); err != nil {
				t.Fatal(err)
			}
			tc.alloc.poolsAt = time.Time{} // read the new configuration now
			var err error
			for i := 0; i < tc.n && err == nil; i++ {
				_, err = tc.alloc.Allocate(ctx, fmt.Sprintf("%s-%d", tc.name, i), sel)
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
	// Defaults again: host-b claims a block of its own.
	if err := s.Delete(ctx, api.IPAMConfigKey); err != nil {
		t.Fatal(err)
	}
	b.poolsAt = time.Time{}
	if _, err := b.Allocate(ctx, "b-last", sel); err != nil {
		t.Fatalf("with the default configuration: %v", err)
	}
}

func TestReleaseDropsEmptyBlockOfDeletedPool(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	pool := api.IPPool{Name: "gone", CIDR: "10.78.0.0/24"}
	pool.Normalize()
	if err := s.Put(ctx, api.PoolKey("gone"), pool); err != nil {
		t.Fatal(err)
	}
	a := New(s, "host-a", nil)
	ip1, err := a.Allocate(ctx, "h1", Selection{Family: 4})
	if err != nil {
		t.Fatal(err)
	}
	ip2, err := a.Allocate(ctx, "h2", Selection{Family: 4})
	if err != nil {
		t.Fatal(err)
	}
	// The pool is deleted while addresses are in use (calicoctl --force),
	// and the allocator's pool list is older than poolTTL.
	if err := s.Delete(ctx, api.PoolKey("gone")); err != nil {
		t.Fatal(err)
	}
	a.poolsAt = time.Time{}
	blockKey := api.BlockKey(netip.MustParsePrefix("10.78.0.0/26"))
	if ok, err := a.Release(ctx, ip1); err != nil || !ok {
		t.Fatalf("release %s: %v %v", ip1, ok, err)
	}
	var b api.Block
	if _, err := s.Get(ctx, blockKey, &b); err != nil {
		t.Fatalf("block removed while %s still uses it: %v", ip2, err)
	}
	if ok, err := a.Release(ctx, ip2); err != nil || !ok {
		t.Fatalf("release %s: %v %v", ip2, ok, err)
	}
	if _, err := s.Get(ctx, blockKey, &b); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("the empty block of a deleted pool is still there: %v", err)
	}
	if keys, _ := s.Keys(ctx, api.AffinityPrefix); len(keys) != 0 {
		t.Fatalf("affinity left: %v", keys)
	}
	// Releasing again is still a no-op.
	if ok, err := a.Release(ctx, ip2); err != nil || ok {
		t.Fatalf("second release: %v %v", ok, err)
	}
}
