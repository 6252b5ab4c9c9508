package ipam

import (
	"context"
	"net/netip"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/dshook"
)

// lateKV plays a write that etcd applies after the client gave up on it:
// the first write request after arm() fails at once as a timeout would
// (the request is still on its way), one more call goes through unchanged
// (the read back), and the held write reaches etcd just before the call
// after that. The fault-injection history test (ipam/history) saw this
// order under a real cluster: a release reported freeing nothing although
// its own write had freed the address.
type lateKV struct {
	dshook.KV
	mu      sync.Mutex
	armed   bool
	held    *dshook.Request
	passed  bool
	applied bool
	// afterCall keeps the write held until deliver: it reaches etcd only
	// once the call that sent it has returned.
	afterCall bool
}

// lateWrites makes s's requests go through a lateKV.
func lateWrites(s *datastore.Store, afterCall bool) *lateKV {
	kv := &lateKV{afterCall: afterCall}
	s.SetHooks(&dshook.Hooks{WrapKV: func(next dshook.KV) dshook.KV { kv.KV = next; return kv }})
	return kv
}

func (k *lateKV) arm() { k.mu.Lock(); k.armed = true; k.mu.Unlock() }

// before lets the held write reach etcd once the read back has passed.
func (k *lateKV) before() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.held == nil || k.afterCall {
		return
	}
	if !k.passed {
		k.passed = true
		return
	}
	h := k.held
	k.held = nil
	if _, err := k.KV.Commit(context.Background(), *h); err == nil {
		k.applied = true
	}
}

// deliver sends the held write now and reports whether etcd applied it.
func (k *lateKV) deliver(t *testing.T) bool {
	t.Helper()
	k.mu.Lock()
	h := k.held
	k.held = nil
	k.mu.Unlock()
	if h == nil {
		t.Fatal("no write was held")
	}
	resp, err := k.KV.Commit(context.Background(), *h)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Succeeded
}

func (k *lateKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.before()
	return k.KV.Get(ctx, key, opts...)
}

func (k *lateKV) Commit(ctx context.Context, r dshook.Request) (*clientv3.TxnResponse, error) {
	k.mu.Lock()
	if k.armed && r.Writes() {
		k.armed, k.held = false, &r
		k.mu.Unlock()
		return nil, context.DeadlineExceeded
	}
	k.mu.Unlock()
	k.before()
	return k.KV.Commit(ctx, r)
}

// A release whose write etcd applied only after the read back said it had
// not been must still report that it freed the address, and leave it free.
func TestReleaseWhoseWriteLandsAfterTheReadBack(t *testing.T) {
	for _, by := range []string{"address", "owner", "handle"} {
		t.Run(by, func(t *testing.T) {
			s := setup(t, api.IPPool{Name: "p", CIDR: "10.20.0.0/24", BlockSize: 26})
			kv := lateWrites(s, false)
			a := New(s, "host-a", quietLog())
			ctx := testCtx(t)
			ip := mustAlloc(t, a, "h1", Selection{Family: 4})
			owner := ownerOf(t, s, ip, 26)

			kv.arm()
			var freed bool
			var err error
			switch by {
			case "address":
				freed, err = a.Release(ctx, ip)
			case "owner":
				freed, err = a.ReleaseOwned(ctx, ip, owner, "test")
			case "handle":
				var n int
				n, err = a.ReleaseByHandle(ctx, "h1")
				freed = n == 1
			}
			if !kv.applied {
				t.Fatalf("the held write was never applied: the test did not set up the late write")
			}
			if err != nil || !freed {
				t.Errorf("release by %s = %v, %v; want true: its own (late) write freed %s", by, freed, err, ip)
			}
			if h, _ := holder(t, s, ip, 26); h != "" {
				t.Errorf("%s still held by %q", ip, h)
			}
			if got := keysUnder(t, s, api.HandlePrefix("host-a", "h1")); len(got) != 0 {
				t.Errorf("handle records left: %v", got)
			}
		})
	}
}

// An allocation whose write etcd applied only after the read back said it
// had not been must return the address that write took, and the handle
// must hold no other.
func TestAllocationWhoseWriteLandsAfterTheReadBack(t *testing.T) {
	fixed := netip.MustParseAddr("10.20.0.9")
	for _, how := range []string{"Allocate", "AllocateOnce", "Assign"} {
		t.Run(how, func(t *testing.T) {
			s := setup(t, api.IPPool{Name: "p", CIDR: "10.20.0.0/24", BlockSize: 26})
			kv := lateWrites(s, false)
			a := New(s, "host-a", quietLog())
			ctx := testCtx(t)
			mustAlloc(t, a, "first", Selection{Family: 4}) // the block exists: the late write is an update

			kv.arm()
			var ip netip.Addr
			var err error
			switch how {
			case "Allocate":
				ip, err = a.Allocate(ctx, "h1", Selection{Family: 4})
			case "AllocateOnce":
				ip, err = a.AllocateOnce(ctx, "h1", Selection{Family: 4})
			case "Assign":
				ip, err = fixed, a.Assign(ctx, fixed, "h1")
			}
			if !kv.applied {
				t.Fatalf("the held write was never applied: the test did not set up the late write")
			}
			if err != nil {
				t.Fatalf("%s: %v", how, err)
			}
			if h, _ := holder(t, s, ip, 26); h != "h1" {
				t.Errorf("%s returned %s, which etcd gives to %q", how, ip, h)
			}
			if got := keysUnder(t, s, api.HandlePrefix("host-a", "h1")); len(got) != 1 || got[0] != ip.String() {
				t.Errorf("handle h1 holds %v; want only %s: the late write's address leaked", got, ip)
			}
		})
	}
}

// A write that reaches etcd only after its call returned must find its
// condition broken: the call fenced it off before it wrote again, so the
// late write can neither free the address a second time nor take another.
func TestWriteLandingAfterItsCallIsFencedOff(t *testing.T) {
	for _, how := range []string{"Allocate", "Release"} {
		t.Run(how, func(t *testing.T) {
			s := setup(t, api.IPPool{Name: "p", CIDR: "10.20.0.0/24", BlockSize: 26})
			kv := lateWrites(s, true)
			a := New(s, "host-a", quietLog())
			ctx := testCtx(t)
			ip := mustAlloc(t, a, "h1", Selection{Family: 4})

			kv.arm()
			switch how {
			case "Allocate":
				got, err := a.Allocate(ctx, "h2", Selection{Family: 4})
				if err != nil {
					t.Fatal(err)
				}
				ip = got
			case "Release":
				if ok, err := a.Release(ctx, ip); err != nil || !ok {
					t.Fatalf("Release = %v, %v; want true", ok, err)
				}
				// The address goes to someone else before the late write lands.
				if got := mustAlloc(t, New(s, "host-b", quietLog()), "other", Selection{Family: 4, Within: netip.PrefixFrom(ip, 32)}); got != ip {
					t.Fatalf("host-b got %s, want %s", got, ip)
				}
			}
			if kv.deliver(t) {
				t.Fatalf("the late write was applied after its call had fenced it off")
			}
			switch how {
			case "Allocate":
				if got := keysUnder(t, s, api.HandlePrefix("host-a", "h2")); len(got) != 1 || got[0] != ip.String() {
					t.Errorf("handle h2 holds %v; want only %s", got, ip)
				}
			case "Release":
				if h, _ := holder(t, s, ip, 26); h != "other" {
					t.Errorf("%s is held by %q after the late release; want the new holder", ip, h)
				}
			}
		})
	}
}
