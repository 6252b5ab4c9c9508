package ipam

import (
	"math/big"
	"net/netip"
)

// Block is a fixed-size piece of a pool, usually owned (affine) to one host.
// Free ordinals form a FIFO queue so that a just-released address is the last
// to be handed out again.
type Block struct {
	CIDR        string   `json:"cidr"`
	Affinity    string   `json:"affinity,omitempty"`
	Allocations []string `json:"allocations"` // per ordinal: handle ID, "" when free
	Unallocated []int    `json:"unallocated"`
}

func newBlock(cidr netip.Prefix, host string) *Block {
	n := 1 << (cidr.Addr().BitLen() - cidr.Bits())
	b := &Block{CIDR: cidr.String(), Affinity: host, Allocations: make([]string, n), Unallocated: make([]int, n)}
	for i := range b.Unallocated {
		b.Unallocated[i] = i
	}
	return b
}

func (b *Block) prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(b.CIDR)
	return p
}

// addr returns the address at ordinal o.
func (b *Block) addr(o int) netip.Addr {
	return addrAdd(b.prefix().Addr(), big.NewInt(int64(o)))
}

// ordinal returns ip's position in the block, or -1 if outside.
func (b *Block) ordinal(ip netip.Addr) int {
	p := b.prefix()
	if !p.Contains(ip) {
		return -1
	}
	d := new(big.Int).Sub(new(big.Int).SetBytes(ip.AsSlice()), new(big.Int).SetBytes(p.Addr().AsSlice()))
	return int(d.Int64())
}

// firstFree returns the queue position and ordinal of the first free address
// inside within (any, when within is invalid), or -1.
func (b *Block) firstFree(within netip.Prefix) (int, int) {
	whole := !within.IsValid() || within.Bits() <= b.prefix().Bits() && within.Contains(b.prefix().Addr())
	for i, o := range b.Unallocated {
		if whole || within.Contains(b.addr(o)) {
			return i, o
		}
	}
	return -1, -1
}

func (b *Block) take(queuePos, ord int, handle string) {
	b.Unallocated = append(b.Unallocated[:queuePos:queuePos], b.Unallocated[queuePos+1:]...)
	b.Allocations[ord] = handle
}

// takeOrdinal allocates a specific ordinal; false if it is in use.
func (b *Block) takeOrdinal(ord int, handle string) bool {
	for i, o := range b.Unallocated {
		if o == ord {
			b.take(i, ord, handle)
			return true
		}
	}
	return false
}

func (b *Block) release(ord int) string {
	h := b.Allocations[ord]
	if h == "" {
		return ""
	}
	b.Allocations[ord] = ""
	b.Unallocated = append(b.Unallocated, ord)
	return h
}

func (b *Block) inUse() int { return len(b.Allocations) - len(b.Unallocated) }

func (b *Block) clone() *Block {
	c := *b
	c.Allocations = append([]string(nil), b.Allocations...)
	c.Unallocated = append([]int(nil), b.Unallocated...)
	return &c
}

// addrAdd returns a+n.
func addrAdd(a netip.Addr, n *big.Int) netip.Addr {
	v := new(big.Int).Add(new(big.Int).SetBytes(a.AsSlice()), n)
	buf := make([]byte, a.BitLen()/8)
	if v.BitLen() > len(buf)*8 {
		return netip.Addr{} // past the end of the address space
	}
	v.FillBytes(buf)
	out, _ := netip.AddrFromSlice(buf)
	return out
}

// blocksOf iterates the block CIDRs of size bits inside pool that overlap
// within, in address order, calling fn until it returns false.
func blocksOf(pool netip.Prefix, bits int, within netip.Prefix, fn func(netip.Prefix) bool) {
	start := pool.Addr()
	if within.IsValid() && within.Bits() > pool.Bits() {
		start = within.Masked().Addr()
	}
	cur := netip.PrefixFrom(start, bits).Masked()
	step := new(big.Int).Lsh(big.NewInt(1), uint(start.BitLen()-bits))
	for pool.Contains(cur.Addr()) {
		if within.IsValid() && !within.Overlaps(cur) {
			return
		}
		if !fn(cur) {
			return
		}
		next := addrAdd(cur.Addr(), step)
		if !next.IsValid() {
			return
		}
		cur = netip.PrefixFrom(next, bits)
	}
}
