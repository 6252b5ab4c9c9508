// Package api is the home of every record the daemon and calicoctl store or
// exchange: the resources with their validation and documents (pools,
// nodes, IPAM and Felix configuration, and the policy kinds with their
// rules and selectors), the IPAM records (blocks, owners, handles), the
// endpoint, network and node records, the daemon's status, and every
// datastore key (keys.go).
package api

import (
	"fmt"
	"net/netip"
	"strings"
)

// EncapMode says when traffic to another host's block is encapsulated.
type EncapMode string

const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// IPPool is a range that IPAM carves into per-host blocks.
type IPPool struct {
	Name         string    `json:"name"`
	CIDR         string    `json:"cidr"`
	BlockSize    int       `json:"blockSize"`
	IPIPMode     EncapMode `json:"ipipMode"`
	VXLANMode    EncapMode `json:"vxlanMode"`
	NATOutgoing  bool      `json:"natOutgoing"`
	Disabled     bool      `json:"disabled"`
	NodeSelector string    `json:"nodeSelector,omitempty"`
}

// Default block sizes, as in Calico.
const (
	DefaultBlockSizeV4 = 26
	DefaultBlockSizeV6 = 122
)

// Prefix returns the pool's CIDR, parsed. Call Validate first.
func (p *IPPool) Prefix() netip.Prefix {
	pfx, _ := netip.ParsePrefix(p.CIDR)
	return pfx
}

// Normalize fills defaults and canonicalises the CIDR.
func (p *IPPool) Normalize() {
	if pfx, err := netip.ParsePrefix(strings.TrimSpace(p.CIDR)); err == nil {
		p.CIDR = pfx.Masked().String()
		if p.BlockSize == 0 {
			p.BlockSize = DefaultBlockSizeV4
			if pfx.Addr().Is6() {
				p.BlockSize = DefaultBlockSizeV6
			}
		}
	}
	if p.IPIPMode == "" {
		p.IPIPMode = EncapNever
	}
	if p.VXLANMode == "" {
		p.VXLANMode = EncapNever
	}
	if p.NodeSelector == "" {
		p.NodeSelector = "all()"
	}
}

// Validate checks one pool on its own; overlap with other pools is checked by
// ValidateAgainst.
func (p *IPPool) Validate() error {
	if p.Name == "" {
		return fmt.Errorf("metadata.name: a pool needs a name")
	}
	if strings.ContainsAny(p.Name, "/ ") {
		return fmt.Errorf("metadata.name %q: use letters, digits, '-' and '.' only", p.Name)
	}
	pfx, err := netip.ParsePrefix(strings.TrimSpace(p.CIDR))
	if err != nil {
		return fmt.Errorf("spec.cidr %q is not a valid CIDR (e.g. 10.10.0.0/16 or fd00:10::/48)", p.CIDR)
	}
	if pfx.Addr().Is4In6() || pfx.Addr().Zone() != "" {
		return fmt.Errorf("spec.cidr %q: use a plain IPv4 or IPv6 CIDR", p.CIDR)
	}
	min, max := 20, 32
	if pfx.Addr().Is6() {
		min, max = 116, 128
	}
	if p.BlockSize < min || p.BlockSize > max {
		return fmt.Errorf("spec.blockSize %d is out of range: use %d to %d for this address family", p.BlockSize, min, max)
	}
	if p.BlockSize < pfx.Bits() {
		return fmt.Errorf("spec.blockSize /%d is larger than the pool %s: use a block size of at least %d", p.BlockSize, pfx, pfx.Bits())
	}
	for field, m := range map[string]EncapMode{"spec.ipipMode": p.IPIPMode, "spec.vxlanMode": p.VXLANMode} {
		switch m {
		case EncapNever, EncapAlways, EncapCrossSubnet:
		default:
			return fmt.Errorf("%s %q: use Always, CrossSubnet or Never", field, m)
		}
	}
	if p.IPIPMode != EncapNever && p.VXLANMode != EncapNever {
		return fmt.Errorf("spec.ipipMode and spec.vxlanMode are both on: a pool uses at most one encapsulation, set one to Never")
	}
	if pfx.Addr().Is6() && p.IPIPMode != EncapNever {
		return fmt.Errorf("spec.ipipMode: IPIP carries IPv4 only, set it to Never for an IPv6 pool")
	}
	return nil
}

// ValidateAgainst rejects a pool that overlaps any other pool.
func (p *IPPool) ValidateAgainst(others []IPPool) error {
	me := p.Prefix()
	for _, o := range others {
		if o.Name == p.Name {
			continue
		}
		if op := o.Prefix(); op.IsValid() && op.Overlaps(me) {
			return fmt.Errorf("spec.cidr %s overlaps pool %q (%s): pools must not overlap", me, o.Name, op)
		}
	}
	return nil
}
