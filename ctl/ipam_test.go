package ctl

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// ipamScene: two pools, addresses on two hosts, endpoints for most of them.
type ipamScene struct {
	h                  *harness
	c1, c2, c3, leaked netip.Addr
	v6                 netip.Addr
}

func newIPAMScene(t *testing.T) *ipamScene {
	h := newHarness(t)
	h.addPool("new-pool-1", "10.10.0.0/16", 26)
	h.addPool("v6-pool", "fd00:10::/48", 122)
	sc := &ipamScene{h: h}
	sc.c1 = h.allocate("host-1", "docker.0242c0a80001", 4)
	sc.c2 = h.allocate("host-1", "docker.0242c0a80002", 4)
	sc.c3 = h.allocate("host-2", "docker.0242c0a80003", 4)
	sc.leaked = h.allocate("host-2", "docker.0242c0a80004", 4)
	sc.v6 = h.allocate("host-1", "docker.0242c0a80001", 6)
	h.addEndpoint("host-1", "ep1aaaaaaaaaaaaaaaaaaaa", "net1nnnnnnnnnnnnnnnn", sc.c1, "02:42:c0:a8:00:01")
	h.addEndpoint("host-1", "ep2bbbbbbbbbbbbbbbbbbbb", "net1nnnnnnnnnnnnnnnn", sc.c2, "02:42:c0:a8:00:02")
	h.addEndpoint("host-2", "ep3cccccccccccccccccccc", "net1nnnnnnnnnnnnnnnn", sc.c3, "02:42:c0:a8:00:03")
	h.addEndpoint("host-1", "ep5eeeeeeeeeeeeeeeeeeee", "net1nnnnnnnnnnnnnnnn", sc.v6, "02:42:c0:a8:00:01")
	return sc
}

func TestIPAMShow(t *testing.T) {
	sc := newIPAMScene(t)
	h := sc.h
	golden(t, "ipam_show", h.ok("", "ipam", "show"))
	golden(t, "ipam_show_blocks", h.ok("", "ipam", "show", "--show-blocks"))
	golden(t, "ipam_show_ip_in_use", h.ok("", "ipam", "show", "--ip", sc.c3.String()))
	golden(t, "ipam_show_ip_leaked", h.ok("", "ipam", "show", "--ip", sc.leaked.String()))
	golden(t, "ipam_show_ip_v6", h.ok("", "ipam", "show", "--ip", sc.v6.String()))
	golden(t, "ipam_show_ip_free", h.ok("", "ipam", "show", "--ip", "10.10.0.40"))
	golden(t, "ipam_show_ip_uncarved", h.ok("", "ipam", "show", "--ip", "10.10.200.1"))
	golden(t, "ipam_show_ip_outside", h.ok("", "ipam", "show", "--ip", "8.8.8.8"))

	// Counts follow releases.
	if _, err := newAllocator(h, "host-1").Release(context.Background(), sc.c1); err != nil {
		t.Fatal(err)
	}
	if out := h.ok("", "ipam", "show"); !strings.Contains(out, "| IP Pool  | 10.10.0.0/16 |                     65536 | 3 (0%)     | 65533 (100%)  ") {
		t.Errorf("after a release ipam show says:\n%s", out)
	}
}

func TestIPAMCheck(t *testing.T) {
	sc := newIPAMScene(t)
	h := sc.h
	ctx := context.Background()
	golden(t, "ipam_check_no_nodes", h.ok("", "ipam", "check"))

	// Nodes: host-2 has none, so its blocks' host is gone.
	h.addNode(api.Node{Name: "host-1", IPv4Address: netip.MustParsePrefix("172.16.0.1/24"), LastSeen: testNow})
	// An endpoint with no allocation.
	h.addEndpoint("host-1", "ep6fffffffffffffffffffff", "net1nnnnnnnnnnnnnnnn", netip.MustParseAddr("10.10.0.50"), "02:42:c0:a8:00:06")
	// A stale handle record.
	if err := h.store.Put(ctx, api.HandleKey("host-1", "docker.stale", netip.MustParseAddr("10.10.0.51")), ""); err != nil {
		t.Fatal(err)
	}
	// A block in no pool: a pool deleted with --force while in use.
	h.addPool("old", "10.99.0.0/16", 26)
	if _, err := newAllocator(h, "host-1").Allocate(ctx, "docker.old", ipam.Selection{Family: 4, Within: netip.MustParsePrefix("10.99.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	golden(t, "ipam_check_problems", checkAfterForceDelete(t, h))

	// Once past the grace period the garbage is due; --fix releases it,
	// and what an endpoint holds stays.
	golden(t, "ipam_check_due", h.ok("", "ipam", "check", "--grace", "0s"))
	golden(t, "ipam_check_fix", h.ok("", "ipam", "check", "--grace", "0s", "--fix"))
	golden(t, "ipam_check_after_fix", h.ok("", "ipam", "check", "--grace", "0s"))
	snap, err := ipam.LoadSnapshot(ctx, h.store)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []netip.Addr{sc.c1, sc.c2, sc.v6} {
		if snap.Lookup(ip).Owner == nil {
			t.Errorf("--fix released %s, which an endpoint holds", ip)
		}
	}
	for _, ip := range []netip.Addr{sc.leaked, sc.c3} {
		if o := snap.Lookup(ip).Owner; o != nil {
			t.Errorf("--fix left %s held by %s (host-2 has no node record: it is gone)", ip, o)
		}
	}
}

// checkAfterForceDelete force-deletes pool "old" and returns ipam check.
func checkAfterForceDelete(t *testing.T, h *harness) string {
	t.Helper()
	r := h.run("", "delete", "ippool", "old", "--force")
	if r.code != 0 {
		t.Fatalf("delete --force: %s", r.err)
	}
	return h.ok("", "ipam", "check")
}

func TestDeletePoolInUse(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.addPool("new-pool-1", "10.10.0.0/16", 26)
	ip := h.allocate("host-1", "docker.0242c0a80001", 4)
	h.allocate("host-2", "docker.0242c0a80002", 4)
	// An empty block of the pool: host-3 took an address and gave it back.
	a3 := newAllocator(h, "host-3")
	ip3 := h.allocate("host-3", "docker.0242c0a80003", 4)
	if _, err := a3.Release(ctx, ip3); err != nil {
		t.Fatal(err)
	}

	h.fail("", []string{"delete", "ippool", "new-pool-1"},
		`IPPool "new-pool-1" (10.10.0.0/16) still has 2 addresses in use`,
		"disable it first", "remove the containers", "pass --force")
	h.fail("", []string{"delete", "ipPool", "10.10.0.0/16"}, "still has 2 addresses in use")
	if _, _, err := ipam.GetPool(ctx, h.store, "new-pool-1"); err != nil {
		t.Fatalf("refused delete removed the pool: %v", err)
	}

	r := h.run("", "delete", "ippool", "new-pool-1", "--force")
	if r.code != 0 || r.out != "Successfully deleted 1 'IPPool' resource(s)\n" {
		t.Fatalf("delete --force: exit %d, %q %q", r.code, r.out, r.err)
	}
	if want := "Warning: IPPool \"new-pool-1\" was deleted with 2 addresses still in use in 2 blocks: their containers keep them until removed; no new address comes from it\n"; r.err != want {
		t.Errorf("delete --force warned %q, want %q", r.err, want)
	}
	// The blocks in use stay (their containers keep routing and release as
	// usual); the empty one went with its affinity.
	snap, err := ipam.LoadSnapshot(ctx, h.store)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Blocks) != 2 || len(snap.Affinities) != 2 {
		t.Errorf("after delete --force: %d blocks, %d affinities; want 2 and 2", len(snap.Blocks), len(snap.Affinities))
	}
	if ok, err := newAllocator(h, "host-1").Release(ctx, ip); err != nil || !ok {
		t.Errorf("release from a deleted pool's block: %v %v", ok, err)
	}
	// No new address comes from it.
	if _, err := newAllocator(h, "host-1").Allocate(ctx, "docker.x", ipam.Selection{Family: 4}); err == nil {
		t.Error("allocated from a deleted pool")
	}
	// A new pool over the leftover block with another block size is refused.
	h.fail("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.10.0.0/16, blockSize: 24}\n",
		[]string{"create", "-f", "-"}, "spec.cidr 10.10.0.0/16 overlaps block", "left by a deleted pool", "does not fit spec.blockSize /24")
	// With the same block size it is fine: the blocks are reused.
	h.ok("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p2}\nspec: {cidr: 10.10.0.0/16}\n", "create", "-f", "-")
}

// TestDisablePoolStopsAllocations: a store write is enough, even for an
// allocator that cached the pool a moment ago.
func TestDisablePoolStopsAllocations(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.ok(poolV3, "create", "-f", "-")
	a := newAllocator(h, "host-1")
	if _, err := a.Allocate(ctx, "docker.1", ipam.Selection{Family: 4}); err != nil {
		t.Fatal(err)
	}
	h.ok(strings.Replace(poolV3, "natOutgoing: true", "natOutgoing: true\n  disabled: true", 1), "apply", "-f", "-")
	if ip, err := a.Allocate(ctx, "docker.2", ipam.Selection{Family: 4}); err == nil {
		t.Fatalf("allocated %s from a disabled pool", ip)
	}
	h.ok(poolV3, "apply", "-f", "-")
	if _, err := a.Allocate(ctx, "docker.3", ipam.Selection{Family: 4}); err != nil {
		t.Errorf("allocate after enabling again: %v", err)
	}
}

func TestIPAMRelease(t *testing.T) {
	sc := newIPAMScene(t)
	h := sc.h
	ctx := context.Background()

	if got := h.ok("", "ipam", "release", "--ip", sc.leaked.String()); got != "Successfully released IP address "+sc.leaked.String()+"\n" {
		t.Errorf("release printed %q", got)
	}
	h.fail("", []string{"ipam", "release", "--ip", sc.leaked.String()}, "IP address "+sc.leaked.String()+" is not assigned")
	h.fail("", []string{"ipam", "release", "--ip", "8.8.8.8"}, "IP address 8.8.8.8 is not assigned")
	h.fail("", []string{"ipam", "release", "--ip", sc.c1.String()},
		"IP address "+sc.c1.String()+" is held by endpoint ep1aaaaaaaaa on host host-1", "remove that container, or pass --force")
	h.ok("", "ipam", "release", "--ip", sc.c1.String(), "--force")
	snap, err := ipam.LoadSnapshot(ctx, h.store)
	if err != nil {
		t.Fatal(err)
	}
	if info := snap.Lookup(sc.c1); info.Handle != "" {
		t.Errorf("%s still held by %s", sc.c1, info.Handle)
	}
	for _, hr := range snap.Handles {
		if hr.IP == sc.c1 || hr.IP == sc.leaked {
			t.Errorf("handle record %s/%s left after release", hr.Handle, hr.IP)
		}
	}
	r := snap.Check(ipam.CollectOptions{Now: testNow, Grace: 10 * time.Minute})
	if len(r.Garbage) != 0 || len(r.EndpointsWithoutAllocation) != 1 || len(r.RecordIssues) != 0 {
		t.Errorf("after release, check: %+v", r)
	}
}

// TestReleaseLastAddressOfOrphanBlock: the block of a deleted pool goes
// when its last address is released through calicoctl.
func TestReleaseLastAddressOfOrphanBlock(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.addPool("old", "10.99.0.0/16", 26)
	ip := h.allocate("host-1", "docker.1", 4)
	h.run("", "delete", "ippool", "old", "--force")
	h.ok("", "ipam", "release", "--ip", ip.String())
	snap, err := ipam.LoadSnapshot(ctx, h.store)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Blocks) != 0 || len(snap.Affinities) != 0 || len(snap.Handles) != 0 {
		t.Errorf("left behind: %+v", snap)
	}
	var b api.Block
	if _, err := h.store.Get(ctx, api.BlockKey(netip.MustParsePrefix("10.99.0.0/26")), &b); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("orphan block still there: %v", err)
	}
}
