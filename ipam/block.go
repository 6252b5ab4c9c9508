package ipam

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/netip"
	"time"
)

// Block is a fixed-size piece of a pool, usually owned (affine) to one host.
// Free ordinals form a FIFO queue so that a just-released address is the last
// to be handed out again.
type Block struct {
	CIDR        string   `json:"cidr"`
	Affinity    string   `json:"affinity,omitempty"`
	Allocations []*Owner `json:"allocations"` // per ordinal: who holds it, nil when free
	Unallocated []int    `json:"unallocated"`
	// Seq is the last sequence number handed out in this block; every
	// allocation gets the next one, so a number is never reused while the
	// block lives. A new block starts from the clock, so neither is it
	// reused by a block carved again later.
	Seq uint64 `json:"seq,omitempty"`
}

// Owner is one allocation: the host that asked, its handle (for Docker, the
// endpoint's MAC) and the allocation's sequence number. A release names the
// owner it means and frees the address only while that owner still holds it.
type Owner struct {
	Host   string `json:"host,omitempty"` // "" only in blocks written before owners were recorded
	Handle string `json:"handle"`
	Seq    uint64 `json:"seq,omitempty"`
}

func (o *Owner) String() string {
	if o == nil {
		return "nobody"
	}
	return fmt.Sprintf("%s on %s (seq %d)", o.Handle, orUnknown(o.Host), o.Seq)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown host"
	}
	return s
}

// Same reports whether o and p are the same allocation.
func (o *Owner) Same(p *Owner) bool {
	return o != nil && p != nil && *o == *p
}

// UnmarshalJSON also reads blocks written before owners were recorded, whose
// allocations are plain handle strings ("" when free).
func (b *Block) UnmarshalJSON(data []byte) error {
	type plain Block
	var raw struct {
		plain
		Allocations []json.RawMessage `json:"allocations"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*b = Block(raw.plain)
	b.Allocations = make([]*Owner, len(raw.Allocations))
	for i, r := range raw.Allocations {
		if len(r) > 0 && r[0] == '"' {
			var h string
			if err := json.Unmarshal(r, &h); err != nil {
				return fmt.Errorf("allocation %d: %w", i, err)
			}
			if h != "" {
				b.Allocations[i] = &Owner{Handle: h}
			}
			continue
		}
		if err := json.Unmarshal(r, &b.Allocations[i]); err != nil {
			return fmt.Errorf("allocation %d: %w", i, err)
		}
		// The next sequence number must be new even for a block whose own
		// counter is behind its allocations' (written by hand, or older).
		if o := b.Allocations[i]; o != nil && o.Seq > b.Seq {
			b.Seq = o.Seq
		}
	}
	return nil
}

// Validate checks what every block must satisfy, so that a corrupted or
// foreign record is reported instead of being acted on.
func (b *Block) Validate() error {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || p.Masked() != p {
		return fmt.Errorf("block cidr %q is not a network address", b.CIDR)
	}
	host := p.Addr().BitLen() - p.Bits()
	if host > 16 {
		return fmt.Errorf("block %s is larger than 65536 addresses", b.CIDR)
	}
	n := 1 << host
	if len(b.Allocations) != n {
		return fmt.Errorf("block %s has %d allocation slots, want %d", b.CIDR, len(b.Allocations), n)
	}
	seen := make([]bool, n)
	for _, o := range b.Unallocated {
		if o < 0 || o >= n {
			return fmt.Errorf("block %s: free ordinal %d out of range", b.CIDR, o)
		}
		if seen[o] {
			return fmt.Errorf("block %s: ordinal %d is free twice", b.CIDR, o)
		}
		if b.Allocations[o] != nil {
			return fmt.Errorf("block %s: ordinal %d is both free and held by %s", b.CIDR, o, b.Allocations[o])
		}
		seen[o] = true
	}
	for o, a := range b.Allocations {
		if a == nil && !seen[o] {
			return fmt.Errorf("block %s: ordinal %d is neither free nor held", b.CIDR, o)
		}
		if a != nil && a.Handle == "" {
			return fmt.Errorf("block %s: ordinal %d is held by an empty handle", b.CIDR, o)
		}
	}
	return nil
}

func newBlock(cidr netip.Prefix, host string) *Block {
	n := 1 << (cidr.Addr().BitLen() - cidr.Bits())
	b := &Block{CIDR: cidr.String(), Affinity: host, Allocations: make([]*Owner, n), Unallocated: make([]int, n),
		Seq: uint64(time.Now().UnixNano())}
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

// holder returns who holds ip, nil when it is free or outside the block.
func (b *Block) holder(ip netip.Addr) *Owner {
	o := b.ordinal(ip)
	if o < 0 || o >= len(b.Allocations) {
		return nil
	}
	return b.Allocations[o]
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

// take gives ordinal ord (at queuePos in the free queue) to host's handle
// and returns the new owner.
func (b *Block) take(queuePos, ord int, host, handle string) *Owner {
	b.Unallocated = append(b.Unallocated[:queuePos:queuePos], b.Unallocated[queuePos+1:]...)
	b.Seq++
	o := &Owner{Host: host, Handle: handle, Seq: b.Seq}
	b.Allocations[ord] = o
	return o
}

// takeOrdinal allocates a specific ordinal; nil if it is in use.
func (b *Block) takeOrdinal(ord int, host, handle string) *Owner {
	for i, o := range b.Unallocated {
		if o == ord {
			return b.take(i, ord, host, handle)
		}
	}
	return nil
}

// release frees ord and returns who held it.
func (b *Block) release(ord int) *Owner {
	h := b.Allocations[ord]
	if h == nil {
		return nil
	}
	b.Allocations[ord] = nil
	b.Unallocated = append(b.Unallocated, ord)
	return h
}

func (b *Block) inUse() int { return len(b.Allocations) - len(b.Unallocated) }

func (b *Block) clone() *Block {
	c := *b
	c.Allocations = make([]*Owner, len(b.Allocations))
	for i, o := range b.Allocations {
		if o != nil {
			cp := *o
			c.Allocations[i] = &cp
		}
	}
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
