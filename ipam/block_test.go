package ipam

import (
	"math/big"
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func collectBlocks(pool netip.Prefix, bits int, within netip.Prefix, limit int) []string {
	var out []string
	blocksOf(pool, bits, within, func(b netip.Prefix) bool {
		out = append(out, b.String())
		return limit == 0 || len(out) < limit
	})
	return out
}

func TestBlocksOf(t *testing.T) {
	tests := []struct {
		name   string
		pool   string
		bits   int
		within string // "" = no restriction
		limit  int    // stop after this many (0 = all)
		want   []string
	}{
		{name: "v4 whole pool", pool: "10.0.0.0/24", bits: 26,
			want: []string{"10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"}},
		{name: "v4 pool is one block", pool: "10.0.0.0/26", bits: 26, want: []string{"10.0.0.0/26"}},
		{name: "v4 /32 blocks", pool: "10.0.0.0/30", bits: 32,
			want: []string{"10.0.0.0/32", "10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"}},
		{name: "v4 within upper half", pool: "10.0.0.0/24", bits: 26, within: "10.0.0.128/25",
			want: []string{"10.0.0.128/26", "10.0.0.192/26"}},
		{name: "v4 within one block exactly", pool: "10.0.0.0/24", bits: 26, within: "10.0.0.64/26",
			want: []string{"10.0.0.64/26"}},
		{name: "v4 within narrower than a block", pool: "10.0.0.0/24", bits: 26, within: "10.0.0.72/29",
			want: []string{"10.0.0.64/26"}},
		{name: "v4 within a single address", pool: "10.0.0.0/24", bits: 26, within: "10.0.0.255/32",
			want: []string{"10.0.0.192/26"}},
		{name: "v4 within wider than pool", pool: "10.0.0.0/25", bits: 26, within: "10.0.0.0/8",
			want: []string{"10.0.0.0/26", "10.0.0.64/26"}},
		{name: "v4 within disjoint, wider", pool: "10.0.0.0/24", bits: 26, within: "11.0.0.0/8", want: nil},
		{name: "v4 within disjoint, narrower", pool: "10.0.0.0/24", bits: 26, within: "10.0.1.0/25", want: nil},
		{name: "v4 stops when fn says so", pool: "10.0.0.0/16", bits: 26, limit: 2,
			want: []string{"10.0.0.0/26", "10.0.0.64/26"}},
		{name: "v4 end of address space", pool: "255.255.255.0/24", bits: 26,
			want: []string{"255.255.255.0/26", "255.255.255.64/26", "255.255.255.128/26", "255.255.255.192/26"}},
		{name: "v4 end of address space, /32", pool: "255.255.255.252/30", bits: 32,
			want: []string{"255.255.255.252/32", "255.255.255.253/32", "255.255.255.254/32", "255.255.255.255/32"}},
		{name: "v6 whole pool", pool: "fd00:1::/120", bits: 122,
			want: []string{"fd00:1::/122", "fd00:1::40/122", "fd00:1::80/122", "fd00:1::c0/122"}},
		{name: "v6 within upper half", pool: "fd00:1::/120", bits: 122, within: "fd00:1::80/121",
			want: []string{"fd00:1::80/122", "fd00:1::c0/122"}},
		{name: "v6 within narrower than a block", pool: "fd00:1::/120", bits: 122, within: "fd00:1::44/126",
			want: []string{"fd00:1::40/122"}},
		{name: "v6 within wider than pool", pool: "fd00:1::/121", bits: 122, within: "fd00::/16",
			want: []string{"fd00:1::/122", "fd00:1::40/122"}},
		{name: "v6 large pool, first blocks", pool: "fd12:3456:789a::/48", bits: 122, limit: 3,
			want: []string{"fd12:3456:789a::/122", "fd12:3456:789a::40/122", "fd12:3456:789a::80/122"}},
		{name: "v6 block crosses a 64-bit boundary", pool: "fd00::ffff:ffff:ffff:ff80/121", bits: 122,
			want: []string{"fd00::ffff:ffff:ffff:ff80/122", "fd00::ffff:ffff:ffff:ffc0/122"}},
		{name: "v6 end of address space", pool: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", bits: 122,
			want: []string{
				"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/122", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff40/122",
				"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/122", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var within netip.Prefix
			if tc.within != "" {
				within = pfx(tc.within)
			}
			got := collectBlocks(pfx(tc.pool), tc.bits, within, tc.limit)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("blocksOf(%s, /%d, within %q) = %v, want %v", tc.pool, tc.bits, tc.within, got, tc.want)
			}
		})
	}
}

func TestBlockOrdinalAddrRoundTrip(t *testing.T) {
	tests := []struct {
		block   string
		outside []string
	}{
		{block: "10.0.0.64/26", outside: []string{"10.0.0.63", "10.0.0.128", "::ffff:10.0.0.64", "fd00::40"}},
		{block: "255.255.255.252/30", outside: []string{"255.255.255.251"}},
		{block: "10.9.8.7/32", outside: []string{"10.9.8.6", "10.9.8.8"}},
		{block: "fd00:1::40/122", outside: []string{"fd00:1::3f", "fd00:1::80", "10.0.0.64"}},
		{block: "fd00::ffff:ffff:ffff:f000/116", outside: []string{"fd00::1:0:0:0:0", "fd00::ffff:ffff:ffff:efff"}},
		{block: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122", outside: []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffbf"}},
	}
	for _, tc := range tests {
		t.Run(tc.block, func(t *testing.T) {
			p := pfx(tc.block)
			b := newBlock(p, "h")
			n := 1 << (p.Addr().BitLen() - p.Bits())
			if len(b.Allocations) != n || len(b.Unallocated) != n {
				t.Fatalf("block %s has %d/%d slots, want %d", tc.block, len(b.Allocations), len(b.Unallocated), n)
			}
			// Consecutive ordinals are consecutive addresses, starting at the block's first address.
			prev := netip.Addr{}
			for o := 0; o < n; o++ {
				a := b.Addr(o)
				if !p.Contains(a) {
					t.Fatalf("addr(%d) = %s, outside %s", o, a, p)
				}
				if o == 0 && a != p.Addr() {
					t.Fatalf("addr(0) = %s, want %s", a, p.Addr())
				}
				if prev.IsValid() && prev.Next() != a {
					t.Fatalf("addr(%d) = %s does not follow addr(%d) = %s", o, a, o-1, prev)
				}
				if got := b.Ordinal(a); got != o {
					t.Fatalf("ordinal(addr(%d) = %s) = %d", o, a, got)
				}
				prev = a
			}
			for _, s := range tc.outside {
				if got := b.Ordinal(addr(s)); got != -1 {
					t.Errorf("ordinal(%s) = %d, want -1 (outside %s)", s, got, tc.block)
				}
			}
		})
	}
}

func TestAddrAdd(t *testing.T) {
	tests := []struct {
		a    string
		n    int64
		want string // "" = invalid (past the end)
	}{
		{"10.0.0.255", 1, "10.0.1.0"},
		{"255.255.255.254", 1, "255.255.255.255"},
		{"255.255.255.255", 1, ""},
		{"255.255.255.192", 64, ""},
		{"fd00::ffff:ffff:ffff:ffff", 1, "fd00:0:0:1::"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0", 64, ""},
	}
	for _, tc := range tests {
		got := addrAdd(addr(tc.a), big.NewInt(tc.n))
		if tc.want == "" {
			if got.IsValid() {
				t.Errorf("addrAdd(%s, %d) = %s, want invalid (past the end)", tc.a, tc.n, got)
			}
			continue
		}
		if got != addr(tc.want) {
			t.Errorf("addrAdd(%s, %d) = %s, want %s", tc.a, tc.n, got, tc.want)
		}
	}
}

func TestFirstFreeWithin(t *testing.T) {
	tests := []struct {
		name   string
		block  string
		taken  []int // ordinals taken before asking
		within string
		want   int // ordinal, -1 = none
	}{
		{name: "no restriction", block: "10.0.0.0/26", want: 0},
		{name: "no restriction, some taken", block: "10.0.0.0/26", taken: []int{0, 1}, want: 2},
		{name: "within equals block", block: "10.0.0.0/26", taken: []int{0}, within: "10.0.0.0/26", want: 1},
		{name: "within wider than block", block: "10.0.0.64/26", within: "10.0.0.0/16", want: 0},
		{name: "within narrower", block: "10.0.0.0/26", within: "10.0.0.16/28", want: 16},
		{name: "within narrower, partly taken", block: "10.0.0.0/26", taken: []int{16, 17}, within: "10.0.0.16/28", want: 18},
		{name: "within narrower, all taken", block: "10.0.0.0/30", taken: []int{2, 3}, within: "10.0.0.2/31", want: -1},
		{name: "within one address", block: "10.0.0.0/26", within: "10.0.0.63/32", want: 63},
		{name: "within disjoint", block: "10.0.0.0/26", within: "10.0.0.64/26", want: -1},
		{name: "within disjoint, wider", block: "10.0.0.0/26", within: "10.1.0.0/16", want: -1},
		{name: "full block", block: "10.0.0.0/31", taken: []int{0, 1}, want: -1},
		{name: "v6 within narrower", block: "fd00::/122", within: "fd00::20/123", want: 32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBlock(pfx(tc.block), "h")
			for _, o := range tc.taken {
				if takeOrdinal(b, o, "h", "x") == nil {
					t.Fatalf("takeOrdinal(%d) failed on a fresh block", o)
				}
			}
			var within netip.Prefix
			if tc.within != "" {
				within = pfx(tc.within)
			}
			qpos, ord := firstFree(b, within)
			if ord != tc.want {
				t.Fatalf("firstFree(%q) ordinal = %d, want %d", tc.within, ord, tc.want)
			}
			if ord >= 0 && b.Unallocated[qpos] != ord {
				t.Fatalf("firstFree queue position %d holds %d, not ordinal %d", qpos, b.Unallocated[qpos], ord)
			}
			if ord < 0 && qpos != -1 {
				t.Fatalf("firstFree found nothing but returned queue position %d", qpos)
			}
		})
	}
}

// checkBlock verifies the invariants every block must keep: each ordinal is
// either allocated or queued as free exactly once.
func checkBlock(t *testing.T, b *api.Block) {
	t.Helper()
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	seqs := map[uint64]bool{}
	for o, a := range b.Allocations {
		if a == nil {
			continue
		}
		if a.Seq > b.Seq || seqs[a.Seq] {
			t.Fatalf("ordinal %d: sequence number %d reused or beyond the block's %d", o, a.Seq, b.Seq)
		}
		seqs[a.Seq] = true
	}
}

func allocNext(t *testing.T, b *api.Block, handle string) int {
	t.Helper()
	qpos, ord := firstFree(b, netip.Prefix{})
	if ord < 0 {
		t.Fatalf("block %s is full", b.CIDR)
	}
	takeAt(b, qpos, ord, "h", handle)
	checkBlock(t, b)
	return ord
}

func TestBlockFIFOAfterRelease(t *testing.T) {
	b := newBlock(pfx("10.0.0.0/29"), "h") // 8 addresses
	for want := 0; want < 3; want++ {
		if got := allocNext(t, b, "a"); got != want {
			t.Fatalf("fresh block handed out ordinal %d, want %d", got, want)
		}
	}
	if h := releaseOrdinal(b, 1); h == nil || h.Handle != "a" {
		t.Fatalf("release(1) returned handle %q, want \"a\"", h)
	}
	if h := releaseOrdinal(b, 0); h == nil || h.Handle != "a" {
		t.Fatalf("release(0) returned handle %q, want \"a\"", h)
	}
	if h := releaseOrdinal(b, 0); h != nil {
		t.Fatalf("second release(0) returned %q, want \"\" (already free)", h)
	}
	checkBlock(t, b)
	if got := b.InUse(); got != 1 {
		t.Fatalf("inUse() = %d, want 1", got)
	}
	// Never-used addresses first, then the released ones in release order.
	want := []int{3, 4, 5, 6, 7, 1, 0}
	for _, w := range want {
		if got := allocNext(t, b, "b"); got != w {
			t.Fatalf("after releasing 1 then 0, allocation order gave %d, want %d (full order %v)", got, w, want)
		}
	}
	if _, ord := firstFree(b, netip.Prefix{}); ord != -1 {
		t.Fatalf("full block still offers ordinal %d", ord)
	}
	if got := b.InUse(); got != 8 {
		t.Fatalf("inUse() = %d, want 8", got)
	}
}

func TestBlockTakeOrdinal(t *testing.T) {
	b := newBlock(pfx("10.0.0.0/30"), "h")
	if takeOrdinal(b, 2, "h", "x") == nil {
		t.Fatal("takeOrdinal(2) on a free ordinal failed")
	}
	if takeOrdinal(b, 2, "h", "y") != nil {
		t.Fatal("takeOrdinal(2) succeeded twice")
	}
	if b.Allocations[2].Handle != "x" {
		t.Fatalf("ordinal 2 held by %q, want the first taker \"x\"", b.Allocations[2])
	}
	checkBlock(t, b)
	if got := []int{allocNext(t, b, "z"), allocNext(t, b, "z"), allocNext(t, b, "z")}; !slices.Equal(got, []int{0, 1, 3}) {
		t.Fatalf("remaining ordinals handed out as %v, want [0 1 3]", got)
	}
}

func TestBlockCloneIsIndependent(t *testing.T) {
	b := newBlock(pfx("10.0.0.0/30"), "h")
	c := b.Clone()
	allocNext(t, c, "x")
	releaseOrdinal(c, 0)
	if b.Allocations[0] != nil || len(b.Unallocated) != 4 || !slices.Equal(b.Unallocated, []int{0, 1, 2, 3}) {
		t.Fatalf("changing a clone changed the original: %+v", b)
	}
	// take must not write through a shared backing array either.
	b2 := newBlock(pfx("10.0.0.0/30"), "h")
	q := b2.Unallocated
	takeAt(b2, 0, 0, "h", "x")
	if !slices.Equal(q, []int{0, 1, 2, 3}) {
		t.Fatalf("take rewrote the previous free queue in place: %v", q)
	}
}
