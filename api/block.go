package api

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
)

// Block is a fixed-size piece of a pool, usually owned (affine) to one host,
// stored at BlockKey(CIDR). Free ordinals form a FIFO queue so that a
// just-released address is the last to be handed out again (package ipam
// allocates from it).
type Block struct {
	CIDR        netip.Prefix `json:"cidr"`
	Affinity    string       `json:"affinity,omitempty"`
	Allocations []*Owner     `json:"allocations"` // per ordinal: who holds it, nil when free
	Unallocated []int        `json:"unallocated"`
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
	p := b.CIDR
	if !p.IsValid() || p.Masked() != p {
		return fmt.Errorf("block cidr %q is not a network address", PrefixText(p))
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

// Addr returns the address at ordinal o (a block holds at most 65536).
func (b *Block) Addr(o int) netip.Addr {
	a := b.CIDR.Addr().As16()
	carry := uint(o)
	for i := 15; i >= 0 && carry > 0; i-- {
		sum := uint(a[i]) + carry&0xff
		a[i] = byte(sum)
		carry = carry>>8 + sum>>8
	}
	out := netip.AddrFrom16(a)
	if b.CIDR.Addr().Is4() {
		return out.Unmap()
	}
	return out
}

// Ordinal returns ip's position in the block, or -1 if outside.
func (b *Block) Ordinal(ip netip.Addr) int {
	if !b.CIDR.Contains(ip) || ip.BitLen()-b.CIDR.Bits() > 30 {
		return -1
	}
	x, base := ip.As16(), b.CIDR.Addr().As16()
	return int(int64(binary.BigEndian.Uint32(x[12:])) - int64(binary.BigEndian.Uint32(base[12:])))
}

// Holder returns who holds ip, nil when it is free or outside the block.
func (b *Block) Holder(ip netip.Addr) *Owner {
	o := b.Ordinal(ip)
	if o < 0 || o >= len(b.Allocations) {
		return nil
	}
	return b.Allocations[o]
}

// InUse counts the addresses held.
func (b *Block) InUse() int { return len(b.Allocations) - len(b.Unallocated) }

// Clone returns a deep copy.
func (b *Block) Clone() *Block {
	c := *b
	c.Allocations = make([]*Owner, len(b.Allocations))
	// The owners in one allocation: a block is cloned on every allocation
	// and release.
	owners := make([]Owner, 0, max(0, b.InUse()))
	for i, o := range b.Allocations {
		if o != nil {
			owners = append(owners, *o) // may outgrow the estimate (an invalid block): earlier copies stay valid
			c.Allocations[i] = &owners[len(owners)-1]
		}
	}
	c.Unallocated = append([]int(nil), b.Unallocated...)
	return &c
}
