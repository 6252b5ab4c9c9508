package ipam

// Allocation inside one block (api.Block): the FIFO queue of free
// ordinals, taken from the front and released to the back.

import (
	"math/big"
	"net/netip"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func newBlock(cidr netip.Prefix, host string) *api.Block {
	n := 1 << (cidr.Addr().BitLen() - cidr.Bits())
	b := &api.Block{CIDR: cidr, Affinity: host, Allocations: make([]*api.Owner, n), Unallocated: make([]int, n),
		Seq: uint64(time.Now().UnixNano())}
	for i := range b.Unallocated {
		b.Unallocated[i] = i
	}
	return b
}

// firstFree returns the queue position and ordinal of b's first free address
// inside within (any, when within is invalid), or -1.
func firstFree(b *api.Block, within netip.Prefix) (int, int) {
	whole := !within.IsValid() || within.Bits() <= b.CIDR.Bits() && within.Contains(b.CIDR.Addr())
	for i, o := range b.Unallocated {
		if whole || within.Contains(b.Addr(o)) {
			return i, o
		}
	}
	return -1, -1
}

// takeAt gives ordinal ord (at queuePos in the free queue) of b to host's
// handle and returns the new owner.
func takeAt(b *api.Block, queuePos, ord int, host, handle string) *api.Owner {
	b.Unallocated = append(b.Unallocated[:queuePos:queuePos], b.Unallocated[queuePos+1:]...)
	b.Seq++
	o := &api.Owner{Host: host, Handle: handle, Seq: b.Seq}
	b.Allocations[ord] = o
	return o
}

// takeOrdinal allocates a specific ordinal of b; nil if it is in use.
func takeOrdinal(b *api.Block, ord int, host, handle string) *api.Owner {
	for i, o := range b.Unallocated {
		if o == ord {
			return takeAt(b, i, ord, host, handle)
		}
	}
	return nil
}

// releaseOrdinal frees ord of b and returns who held it.
func releaseOrdinal(b *api.Block, ord int) *api.Owner {
	h := b.Allocations[ord]
	if h == nil {
		return nil
	}
	b.Allocations[ord] = nil
	b.Unallocated = append(b.Unallocated, ord)
	return h
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
