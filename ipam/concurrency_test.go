package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/dshook"
)

// casCounter counts the compare-and-swaps that reach etcd, by outcome.
type casCounter struct{ applied, conflicts atomic.Int64 }

func (c *casCounter) ObserveOp(string, string, time.Duration, error) {}
func (c *casCounter) ObserveCAS(_ string, applied bool) {
	if applied {
		c.applied.Add(1)
	} else {
		c.conflicts.Add(1)
	}
}

// holdingKV holds every write to the block key hold until release is
// closed, telling held when the first one arrives.
type holdingKV struct {
	dshook.KV
	hold    string
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

func (k *holdingKV) Commit(ctx context.Context, r dshook.Request) (*clientv3.TxnResponse, error) {
	for _, op := range r.Then {
		if op.IsPut() && string(op.KeyBytes()) == k.hold {
			k.once.Do(func() { close(k.held) })
			<-k.release
		}
	}
	return k.KV.Commit(ctx, r)
}

// TestCallsInOtherBlocksDoNotWait: while one allocation's write to its
// block is held in flight, the same host's calls in other blocks (another
// pool, a release in another block, an assignment) complete; a second
// allocation in the held block waits for it and then gets the next address.
func TestCallsInOtherBlocksDoNotWait(t *testing.T) {
	s := setup(t, api.IPPool{Name: "a", CIDR: "10.31.0.0/24", BlockSize: 26},
		api.IPPool{Name: "b", CIDR: "10.32.0.0/24", BlockSize: 26})
	ctx := testCtx(t)
	a := New(s, "host-a", quietLog())
	selA, selB := Selection{Family: 4, Pools: []string{"a"}}, Selection{Family: 4, Pools: []string{"b"}}
	mustAlloc(t, a, "warm-a", selA)
	ipB := mustAlloc(t, a, "warm-b", selB)

	kv := &holdingKV{hold: api.BlockKey(netip.MustParsePrefix("10.31.0.0/26")), held: make(chan struct{}), release: make(chan struct{})}
	s.SetHooks(&dshook.Hooks{WrapKV: func(next dshook.KV) dshook.KV { kv.KV = next; return kv }})
	type result struct {
		ip  netip.Addr
		err error
	}
	first, second := make(chan result, 1), make(chan result, 1)
	go func() { ip, err := a.Allocate(ctx, "held-1", selA); first <- result{ip, err} }()
	<-kv.held
	go func() { ip, err := a.Allocate(ctx, "held-2", selA); second <- result{ip, err} }()

	// Calls in pool b's block must not wait for the held write.
	step := func(what string, fn func(context.Context) error) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := fn(c); err != nil {
			close(kv.release)
			t.Fatalf("%s while another block's write was in flight: %v", what, err)
		}
	}
	step("allocate in another pool", func(c context.Context) error { _, err := a.Allocate(c, "free-1", selB); return err })
	step("release in another block", func(c context.Context) error {
		ok, err := a.Release(c, ipB)
		if err == nil && !ok {
			err = fmt.Errorf("released nothing")
		}
		return err
	})
	step("assign in another block", func(c context.Context) error { return a.Assign(c, addr("10.32.0.200"), "fixed") })
	select {
	case r := <-second:
		close(kv.release)
		t.Fatalf("a second allocation in the held block finished before the first (%s, %v): it did not wait for the block", r.ip, r.err)
	default:
	}
	close(kv.release)
	r1, r2 := <-first, <-second
	if r1.err != nil || r2.err != nil {
		t.Fatalf("allocations in the held block: %v, %v", r1.err, r2.err)
	}
	if r1.ip != addr("10.31.0.1") || r2.ip != addr("10.31.0.2") {
		t.Fatalf("allocations in the held block got %s and %s, want 10.31.0.1 then 10.31.0.2", r1.ip, r2.ip)
	}
}

// TestConcurrentCallsOnOneAllocator runs many goroutines on one host's
// allocator and checks what etcd holds afterwards: every address given once,
// with its handle record, no more blocks claimed than needed, and, for
// calls in one block, no CAS conflict (they take turns, they do not race).
func TestConcurrentCallsOnOneAllocator(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pools      int // one per goroutine group
		goroutines int
		each       int // allocations per goroutine, half released again
		wantBlocks int
	}{
		{name: "one pool, one block", pools: 1, goroutines: 8, each: 6, wantBlocks: 1},
		{name: "one pool, more than a block", pools: 1, goroutines: 8, each: 12, wantBlocks: 1 + (8*12/2)/64},
		{name: "four pools", pools: 4, goroutines: 8, each: 6, wantBlocks: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pools []api.IPPool
			for i := 0; i < tc.pools; i++ {
				pools = append(pools, api.IPPool{Name: fmt.Sprintf("p%d", i), CIDR: fmt.Sprintf("10.4%d.0.0/22", i), BlockSize: 26})
			}
			s := setup(t, pools...)
			ctx := testCtx(t)
			a := New(s, "host-a", quietLog())
			cas := &casCounter{}
			s.Observe(cas)
			held := runConcurrent(t, ctx, a, tc.goroutines, tc.each, tc.pools)
			checkHeld(t, s, held)
			if got := len(blockCIDRs(t, s)); got > tc.wantBlocks {
				t.Errorf("%d blocks claimed, want at most %d: concurrent calls claimed a block each", got, tc.wantBlocks)
			}
			if tc.wantBlocks == 1 && cas.conflicts.Load() != 0 {
				t.Errorf("%d CAS conflicts among one host's calls in one block (applied %d): they raced instead of taking turns",
					cas.conflicts.Load(), cas.applied.Load())
			}
		})
	}
}

// runConcurrent has n goroutines allocate each addresses apiece (goroutine
// i from pool p<i mod pools>), releasing every other one at once; it returns
// the addresses kept, by handle.
func runConcurrent(t *testing.T, ctx context.Context, a *Allocator, n, each, pools int) map[string]netip.Addr {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		held = map[string]netip.Addr{}
		errs []error
	)
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sel := Selection{Family: 4, Pools: []string{fmt.Sprintf("p%d", g%pools)}}
			for i := 0; i < each; i++ {
				h := fmt.Sprintf("g%d.%d", g, i)
				ip, err := a.AllocateOnce(ctx, h, sel)
				if err == nil && i%2 == 1 {
					var ok bool
					if ok, err = a.Release(ctx, ip); err == nil && !ok {
						err = fmt.Errorf("release %s freed nothing", ip)
					}
				} else if err == nil {
					mu.Lock()
					held[h] = ip
					mu.Unlock()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", h, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent calls failed: %v", errs)
	}
	return held
}

// checkHeld checks that etcd holds exactly the addresses in held, each once,
// by its handle, with its handle record.
func checkHeld(t *testing.T, s *datastore.Store, held map[string]netip.Addr) {
	t.Helper()
	owners := map[netip.Addr]string{}
	for _, it := range mustList[api.Block](t, s, api.BlocksPrefix) {
		b := it.Value
		for ord, o := range b.Allocations {
			if o == nil {
				continue
			}
			ip := b.Addr(ord)
			if prev, dup := owners[ip]; dup {
				t.Fatalf("%s held twice (%s, %s)", ip, prev, o.Handle)
			}
			owners[ip] = o.Handle
		}
	}
	if len(owners) != len(held) {
		t.Errorf("etcd holds %d addresses, the callers kept %d", len(owners), len(held))
	}
	seen := map[netip.Addr]bool{}
	for h, ip := range held {
		if seen[ip] {
			t.Errorf("%s was given to two handles", ip)
		}
		seen[ip] = true
		if owners[ip] != h {
			t.Errorf("%s is held by %q in etcd, want %q", ip, owners[ip], h)
		}
	}
	var recs []string
	for _, k := range keysUnder(t, s, api.HandlesPrefix) {
		recs = append(recs, k)
	}
	if len(recs) != len(held) {
		t.Errorf("%d handle records (%s), want %d", len(recs), strings.Join(recs, " "), len(held))
	}
}

func mustList[T any](t *testing.T, s *datastore.Store, prefix string) []datastore.Item[T] {
	t.Helper()
	items, err := datastore.List[T](context.Background(), s, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// TestStaleCachedRevision: two allocators of one host (the daemon and
// calicoctl, or a daemon restarted while the old one still ran) share a
// block. Each uses its cached revision for the compare directly; when the
// other wrote in between, the compare fails once, the conflict's own reply
// brings the block, and the retry succeeds without a separate read.
func TestStaleCachedRevision(t *testing.T) {
	for _, tc := range []struct {
		name string
		// other changes the block behind stale's cache; then stale acts.
		other func(t *testing.T, other *Allocator, held netip.Addr)
		act   func(t *testing.T, stale *Allocator, held netip.Addr) netip.Addr
		want  string // the address stale's call ends with
	}{
		{
			name:  "allocate after the other allocated",
			other: func(t *testing.T, o *Allocator, _ netip.Addr) { mustAlloc(t, o, "other", v4) },
			act:   func(t *testing.T, st *Allocator, _ netip.Addr) netip.Addr { return mustAlloc(t, st, "stale", v4) },
			want:  "10.50.0.3", // its cache still had .1 (which other took and freed) first
		},
		{
			name:  "release after the other allocated",
			other: func(t *testing.T, o *Allocator, _ netip.Addr) { mustAlloc(t, o, "other", v4) },
			act: func(t *testing.T, st *Allocator, held netip.Addr) netip.Addr {
				if ok, err := st.Release(testCtx(t), held); err != nil || !ok {
					t.Fatalf("release %s with a stale cache: %v, %v", held, ok, err)
				}
				return held
			},
			want: "10.50.0.0",
		},
		{
			name: "allocate after the other released",
			other: func(t *testing.T, o *Allocator, held netip.Addr) {
				if ok, err := o.Release(testCtx(t), held); err != nil || !ok {
					t.Fatalf("release %s: %v, %v", held, ok, err)
				}
			},
			act:  func(t *testing.T, st *Allocator, _ netip.Addr) netip.Addr { return mustAlloc(t, st, "stale", v4) },
			want: "10.50.0.2",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := setup(t, api.IPPool{Name: "p", CIDR: "10.50.0.0/24", BlockSize: 26})
			stale, other := New(s, "host-a", quietLog()), New(s, "host-a", quietLog())
			held := mustAlloc(t, stale, "first", v4) // stale caches the block
			mustAlloc(t, other, "warm", v4)          // other loads it (10.50.0.1)
			if ok, err := other.Release(testCtx(t), addr("10.50.0.1")); err != nil || !ok {
				t.Fatalf("release warm-up: %v %v", ok, err)
			}
			tc.other(t, other, held)
			cas := &casCounter{}
			s.Observe(cas)
			kv := countRequests(s)
			got := tc.act(t, stale, held)
			if got != addr(tc.want) {
				t.Errorf("stale allocator's call ended with %s, want %s", got, tc.want)
			}
			if c, ap := cas.conflicts.Load(), cas.applied.Load(); c != 1 || ap != 1 {
				t.Errorf("CAS outcomes: %d conflicts, %d applied; want one conflict (the stale revision) and one applied", c, ap)
			}
			if n := kv.total(); n != 2 {
				t.Errorf("%d etcd requests, want 2 (the failed compare brings the block back; no separate read)", n)
			}
			checkOneHolderEach(t, s)
		})
	}
}

// checkOneHolderEach checks that every handle record's address is held by
// its handle and nothing is held without a record.
func checkOneHolderEach(t *testing.T, s *datastore.Store) {
	t.Helper()
	held := map[string]netip.Addr{}
	for _, k := range keysUnder(t, s, api.HandlesPrefix) {
		ref, ok := api.ParseHandleKey(api.HandlesPrefix + k)
		if !ok {
			t.Fatalf("bad handle key %s", k)
		}
		held[ref.Handle] = ref.IP
	}
	checkHeld(t, s, held)
}

// TestDockerLifecycleRoundTrips counts the etcd requests of each IPAM call
// of a container's life, as Docker makes them, with the pools cached: each
// is one transaction.
func TestDockerLifecycleRoundTrips(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.60.0.0/24", BlockSize: 26})
	ctx := testCtx(t)
	a := New(s, "host-a", quietLog())
	mustAlloc(t, a, "warm", v4) // claims the block, loads the pools
	kv := countRequests(s)
	var ip netip.Addr
	const ep = "0123456789abcdef"
	for _, c := range []struct {
		call string
		fn   func() error
	}{
		{"RequestAddress (AllocateOnce)", func() (err error) { ip, err = a.AllocateOnce(ctx, "docker.mac1", v4); return err }},
		{"CreateEndpoint (Bind)", func() error { return a.Bind(ctx, "docker.mac1", []netip.Addr{ip}, ep) }},
		{"DeleteEndpoint (Unbind)", func() error { return a.Unbind(ctx, "docker.mac1", []netip.Addr{ip}, ep) }},
		{"ReleaseAddress (Release)", func() error {
			if ok, err := a.Release(ctx, ip); err != nil || !ok {
				return fmt.Errorf("freed %v: %w", ok, err)
			}
			return nil
		}},
		{"RequestAddress with --ip (Assign)", func() error { return a.Assign(ctx, addr("10.60.0.50"), "docker.mac2") }},
		{"ReleaseAddress of it", func() error { _, err := a.Release(ctx, addr("10.60.0.50")); return err }},
	} {
		a.mu.Lock()
		a.poolsAt = time.Now() // the TTL must not expire on a slow machine: the call's own cost is the point
		a.mu.Unlock()
		before, txns := kv.total(), kv.txns.Load()
		if err := c.fn(); err != nil {
			t.Fatalf("%s: %v", c.call, err)
		}
		if n, tx := kv.total()-before, kv.txns.Load()-txns; n != 1 || tx != 1 {
			t.Errorf("%s took %d etcd requests (%d transactions), want 1 transaction", c.call, n, tx)
		}
	}
}
