package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// A replayed RequestAddress (the same endpoint's handle, no endpoint bound
// yet) gets the same address and changes nothing; once an endpoint holds it,
// the handle's next request is a new one.
func TestAllocateOnceIsIdempotent(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.120.0.0/24", BlockSize: 26},
		api.IPPool{Name: "p6", CIDR: "fd00:120::/120", BlockSize: 122})
	a := New(s, "host-a", quietLog())
	ctx := testCtx(t)
	h := HandleFor("02:42:0a:78:00:01")
	first, err := a.AllocateOnce(ctx, h, v4)
	if err != nil {
		t.Fatal(err)
	}
	rev := readBlockRev(t, s, "10.120.0.0/26")
	for i := 0; i < 3; i++ {
		again, err := a.AllocateOnce(ctx, h, v4)
		if err != nil || again != first {
			t.Fatalf("replay %d = %s, %v; want %s", i+1, again, err, first)
		}
	}
	if r := readBlockRev(t, s, "10.120.0.0/26"); r != rev {
		t.Fatalf("a replay wrote the block (revision %d -> %d)", rev, r)
	}
	if got := keysUnder(t, s, api.HandlePrefix("host-a", h)); len(got) != 1 {
		t.Fatalf("handle records after replays: %v, want one", got)
	}
	// A fresh allocator (the daemon restarted) still recognises the replay.
	if again, err := New(s, "host-a", quietLog()).AllocateOnce(ctx, h, v4); err != nil || again != first {
		t.Fatalf("replay after restart = %s, %v; want %s", again, err, first)
	}
	// Another family is another request.
	six, err := a.AllocateOnce(ctx, h, v6)
	if err != nil || !six.Is6() {
		t.Fatalf("IPv6 request = %s, %v", six, err)
	}
	// Bound to an endpoint, the address is no longer a pending request.
	if err := a.Bind(ctx, h, []netip.Addr{first, six}, "ep1"); err != nil {
		t.Fatal(err)
	}
	next, err := a.AllocateOnce(ctx, h, v4)
	if err != nil || next == first {
		t.Fatalf("request after the endpoint was bound = %s, %v; want a new address", next, err)
	}
	// Replaying Bind is a no-op; binding another endpoint to it is refused.
	if err := a.Bind(ctx, h, []netip.Addr{first}, "ep1"); err != nil {
		t.Fatalf("replayed Bind: %v", err)
	}
	if err := a.Bind(ctx, h, []netip.Addr{first}, "ep2"); !errors.Is(err, ErrInUse) {
		t.Fatalf("binding a second endpoint to %s: %v, want ErrInUse", first, err)
	}
}

// A fixed address (docker run --ip, compose ipv4_address) is refused when
// anyone else holds it, whatever the MAC; the same request replayed succeeds.
func TestAssignRefusesEveryOtherOwner(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.121.0.0/24", BlockSize: 26})
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())
	ctx := testCtx(t)
	ip := addr("10.121.0.7")
	mac := HandleFor("02:42:0a:79:00:07")
	if err := a.Assign(ctx, ip, mac); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(ctx, ip, mac); err != nil {
		t.Fatalf("replayed Assign: %v", err)
	}
	if err := b.Assign(ctx, ip, mac); !errors.Is(err, ErrInUse) {
		t.Fatalf("another host with the same MAC and --ip: %v, want ErrInUse", err)
	}
	if err := a.Bind(ctx, mac, []netip.Addr{ip}, "ep1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(ctx, ip, mac); !errors.Is(err, ErrInUse) {
		t.Fatalf("a second container with the same MAC and --ip on one host: %v, want ErrInUse", err)
	}
	if err := a.Assign(ctx, ip, HandleFor("02:42:0a:79:00:08")); !errors.Is(err, ErrInUse) {
		t.Fatalf("another MAC: %v, want ErrInUse", err)
	}
	// Its endpoint deleted (Docker's release still to come), the address
	// may go to the next container at once: compose down, then up.
	if err := a.Unbind(ctx, mac, []netip.Addr{ip}, "ep1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(ctx, ip, mac); err != nil {
		t.Fatalf("Assign after the holder's endpoint was deleted: %v", err)
	}
	if got := keysUnder(t, s, api.HandlesPrefix); !slices.Equal(got, []string{"host-a/" + mac + "/10.121.0.7"}) {
		t.Fatalf("handle records = %v", got)
	}
}

// The ABA case: a release naming only the address must never free the
// allocation that holds it now.
func TestLateReleaseNeverFreesTheNextHolder(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.122.0.0/30", BlockSize: 30})
	a := New(s, "host-a", quietLog())
	b := New(s, "host-b", quietLog())
	ctx := testCtx(t)
	ip := addr("10.122.0.1")
	hA, hB, hC := HandleFor("02:00:00:00:00:0a"), HandleFor("02:00:00:00:00:0b"), HandleFor("02:00:00:00:00:0c")

	// Endpoint A: requested, created, deleted, released.
	mustAssign(t, a, ip, hA)
	mustBind(t, a, hA, ip, "epA")
	if err := a.Unbind(ctx, hA, []netip.Addr{ip}, "epA"); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Release(ctx, ip); err != nil || !ok {
		t.Fatalf("Docker's release of A = %v, %v; want freed", ok, err)
	}
	// Endpoint B takes the address and is created.
	mustAssign(t, a, ip, hB)
	mustBind(t, a, hB, ip, "epB")
	// A's release again (Docker retried, or released late): B keeps it.
	for i := 0; i < 2; i++ {
		if ok, err := a.Release(ctx, ip); err != nil || ok {
			t.Fatalf("replayed release = %v, %v; want refused", ok, err)
		}
	}
	if h, _ := holder(t, s, ip, 30); h != hB {
		t.Fatalf("%s held by %q after the replayed release, want %s", ip, h, hB)
	}
	if err := a.Assign(ctx, ip, hC); !errors.Is(err, ErrInUse) {
		t.Fatalf("a third container got B's address: %v", err)
	}
	// Nor from another host.
	if ok, err := b.Release(ctx, ip); err != nil || ok {
		t.Fatalf("another host's release = %v, %v; want refused", ok, err)
	}

	// In the instant between RequestAddress and CreateEndpoint a stray
	// release can free the new request's address; CreateEndpoint then
	// claims it again, or fails when someone else was quicker: never two.
	ip2 := addr("10.122.0.2")
	mustAssign(t, a, ip2, hC)
	if ok, _ := a.Release(ctx, ip2); !ok {
		t.Fatal("release of an unbound allocation refused")
	}
	mustBind(t, a, hC, ip2, "epC")
	if h, _ := holder(t, s, ip2, 30); h != hC {
		t.Fatalf("%s held by %q, want %s claimed again at Bind", ip2, h, hC)
	}
	ip3 := addr("10.122.0.3")
	hD, hE := HandleFor("02:00:00:00:00:0d"), HandleFor("02:00:00:00:00:0e")
	mustAssign(t, a, ip3, hD)
	if ok, _ := a.Release(ctx, ip3); !ok {
		t.Fatal("release of an unbound allocation refused")
	}
	mustAssign(t, b, ip3, hE)
	if err := a.Bind(ctx, hD, []netip.Addr{ip3}, "epD"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Bind of an address another host took meanwhile: %v, want ErrInUse", err)
	}
	if h, _ := holder(t, s, ip3, 30); h != hE {
		t.Fatalf("%s held by %q, want host-b's %s", ip3, h, hE)
	}
}

// A transaction etcd did not confirm is resolved by reading back.
func TestUncertainCommitIsReadBack(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.123.0.0/24", BlockSize: 26})
	a := New(s, "host-a", quietLog())
	ctx := testCtx(t)
	ip := mustAlloc(t, a, "h1", v4)
	blk := readBlock(t, s, "10.123.0.0/26")
	owner := blk.Holder(ip)
	for _, tc := range []struct {
		name    string
		applied func(*api.Block) bool
		want    bool
	}{
		{"the write went through", holds(ip, owner), true},
		{"it did not", holds(ip, &api.Owner{Host: "host-a", Handle: "h1", Seq: owner.Seq + 1}), false},
	} {
		out, err := a.readBack(ctx, write{blk: blk, applied: tc.applied}, datastore.ErrUncertain)
		if err != nil || out.ok != tc.want {
			t.Errorf("%s: readBack = %+v, %v; want ok=%v", tc.name, out, err, tc.want)
		}
	}
}

func TestGarbageRules(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.124.0.0/24", BlockSize: 26})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := New(s, "host-a", quietLog())
	a.SetClock(func() time.Time { return t0 })
	b := New(s, "host-b", quietLog())
	b.SetClock(func() time.Time { return t0 })
	ctx := testCtx(t)
	live := func(host string) {
		if err := s.Put(ctx, api.NodeKey(host), api.Node{Name: host, LastSeen: t0}); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, api.NodeClaimKey(host), "x"); err != nil {
			t.Fatal(err)
		}
	}
	live("host-a")
	unclaimed, _ := a.AllocateOnce(ctx, "docker.1", v4)
	bound, _ := a.AllocateOnce(ctx, "docker.2", v4)
	mustBind(t, a, "docker.2", bound, "ep2")
	if err := s.Put(ctx, api.EndpointKey("host-a", "ep2"), api.Endpoint{ID: "ep2", Host: "host-a", IPv4: netip.PrefixFrom(bound, 32)}); err != nil {
		t.Fatal(err)
	}
	released, _ := a.AllocateOnce(ctx, "docker.3", v4)
	mustBind(t, a, "docker.3", released, "ep3")
	if err := a.Unbind(ctx, "docker.3", []netip.Addr{released}, "ep3"); err != nil {
		t.Fatal(err)
	}
	orphanBound, _ := a.AllocateOnce(ctx, "docker.4", v4)
	mustBind(t, a, "docker.4", orphanBound, "ep4") // its endpoint record never written
	gone, _ := b.AllocateOnce(ctx, "docker.5", v4) // host-b: no node record, no claim

	kinds := func(opt CollectOptions) map[netip.Addr]GarbageKind {
		snap, err := LoadSnapshot(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		out := map[netip.Addr]GarbageKind{}
		for _, f := range snap.Garbage(opt) {
			if f.IP.IsValid() && !f.Due.After(opt.Now) {
				out[f.IP] = f.Kind
			}
		}
		return out
	}
	seen := map[string]time.Time{}
	opt := CollectOptions{Now: t0.Add(5 * time.Minute), Grace: 10 * time.Minute,
		Seen: func(id string, now time.Time) time.Time {
			if _, ok := seen[id]; !ok {
				seen[id] = now
			}
			return seen[id]
		}}
	// Within the grace period only the gone node's records are due (its
	// age is unknown: first seen now, plus grace... so nothing yet).
	if got := kinds(opt); len(got) != 0 {
		t.Fatalf("within the grace period, due: %v; want nothing", got)
	}
	opt.Now = t0.Add(16 * time.Minute)
	got := kinds(opt)
	want := map[netip.Addr]GarbageKind{
		unclaimed: GarbageUnclaimed, released: GarbageUnreleased,
		orphanBound: GarbageEndpointGone, gone: GarbageNodeAllocation,
	}
	if len(got) != len(want) {
		t.Fatalf("past the grace period, due: %v; want %v", got, want)
	}
	for ip, k := range want {
		if got[ip] != k {
			t.Errorf("%s: %q, want %q", ip, got[ip], k)
		}
	}
	// Applying a finding frees exactly its allocation: one that changed
	// hands since the snapshot is left alone.
	snap, _ := LoadSnapshot(ctx, s)
	for _, f := range snap.Garbage(opt) {
		if f.IP != unclaimed {
			continue
		}
		if ok, err := a.ReleaseOwned(ctx, unclaimed, *f.Owner, "test"); !ok || err != nil {
			t.Fatal(ok, err)
		}
		mustAssign(t, a, unclaimed, "docker.new")
		if ok, err := Apply(ctx, s, f); ok || err != nil {
			t.Fatalf("Apply of a stale finding = %v, %v; want nothing done", ok, err)
		}
		if h, _ := holder(t, s, unclaimed, 26); h != "docker.new" {
			t.Fatalf("%s held by %q, want the new holder", unclaimed, h)
		}
	}
}

func mustAssign(t *testing.T, a *Allocator, ip netip.Addr, handle string) {
	t.Helper()
	if err := a.Assign(testCtx(t), ip, handle); err != nil {
		t.Fatalf("%s: Assign(%s, %s): %v", a.Host(), ip, handle, err)
	}
}

func mustBind(t *testing.T, a *Allocator, handle string, ip netip.Addr, ep string) {
	t.Helper()
	if err := a.Bind(testCtx(t), handle, []netip.Addr{ip}, ep); err != nil {
		t.Fatalf("%s: Bind(%s, %s, %s): %v", a.Host(), handle, ip, ep, err)
	}
}

func readBlockRev(t *testing.T, s *datastore.Store, cidr string) int64 {
	t.Helper()
	var b api.Block
	rev, err := s.Get(testCtx(t), api.BlockKey(netip.MustParsePrefix(cidr)), &b)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestUnreadableNodeIsNotGone: a node record that cannot be decoded (say,
// an address someone wrote by hand that is no address) is not taken for a
// deleted node: its addresses are not collected.
func TestUnreadableNodeIsNotGone(t *testing.T) {
	s := setup(t, api.IPPool{Name: "p", CIDR: "10.125.0.0/24", BlockSize: 26})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(s, "host-c", quietLog())
	c.SetClock(func() time.Time { return t0 })
	ctx := testCtx(t)
	ip, err := c.AllocateOnce(ctx, "docker.1", v4)
	if err != nil {
		t.Fatal(err)
	}
	mustBind(t, c, "docker.1", ip, "ep1")
	if err := s.Put(ctx, api.EndpointKey("host-c", "ep1"), api.Endpoint{ID: "ep1", Host: "host-c", IPv4: netip.PrefixFrom(ip, 32)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, api.NodeKey("host-c"), map[string]string{"name": "host-c", "ipv4Address": "not an address"}); err != nil {
		t.Fatal(err)
	}
	snap, err := LoadSnapshot(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Undecodable) != 1 {
		t.Fatalf("undecodable records %v, want the node's", snap.Undecodable)
	}
	for _, f := range snap.Garbage(CollectOptions{Now: t0.Add(48 * time.Hour), Grace: time.Minute, NodeGoneAfter: time.Hour}) {
		if f.Kind.NodeGone() {
			t.Errorf("the node whose record cannot be read is taken for gone: %s", f)
		}
	}
}
