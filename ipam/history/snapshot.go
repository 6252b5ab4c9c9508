package history

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// Take reads the IPAM records at one revision and returns them as the
// checker sees them. Call it only while no client has a call in flight.
func Take(ctx context.Context, s *datastore.Store) (Snapshot, error) {
	snap, err := ipam.LoadSnapshot(ctx, s)
	if err != nil {
		return Snapshot{}, err
	}
	if len(snap.Undecodable) > 0 {
		return Snapshot{}, fmt.Errorf("undecodable IPAM records: %v", snap.Undecodable)
	}
	out := FromIPAM(snap)
	out.Time = Now()
	return out, nil
}

// FromIPAM lists the blocks' allocations, each with the state of its handle
// record, and the handle records no allocation matches.
func FromIPAM(snap *ipam.Snapshot) Snapshot {
	type recKey struct {
		host, handle string
		ip           netip.Addr
	}
	records := map[recKey]ipam.HandleItem{}
	for _, h := range snap.Handles {
		records[recKey{h.Host, h.Handle, h.IP}] = h
	}
	matched := map[recKey]bool{}
	var out Snapshot
	for _, it := range snap.Blocks {
		b := it.Value
		base := b.CIDR.Addr()
		for ord, o := range b.Allocations {
			if o == nil {
				continue
			}
			ip := addOrdinal(base, ord)
			sl := Slot{IP: ip, Host: o.Host, Handle: o.Handle, Seq: o.Seq, Borrowed: b.Affinity != o.Host}
			k := recKey{o.Host, o.Handle, ip}
			if r, ok := records[k]; ok && r.Record.Seq == o.Seq {
				sl.State, sl.Record = string(r.Record.State), true
				matched[k] = true
			}
			out.Slots = append(out.Slots, sl)
		}
	}
	for _, h := range snap.Handles {
		k := recKey{h.Host, h.Handle, h.IP}
		if !matched[k] {
			out.Dangling = append(out.Dangling, Slot{IP: h.IP, Host: h.Host, Handle: h.Handle, Seq: h.Record.Seq, State: string(h.Record.State), Record: true})
		}
	}
	return out
}

// addOrdinal returns the address n places after base.
func addOrdinal(base netip.Addr, n int) netip.Addr {
	b := base.As16()
	carry := n
	for i := 15; i >= 0 && carry > 0; i-- {
		v := int(b[i]) + carry
		b[i] = byte(v)
		carry = v >> 8
	}
	ip := netip.AddrFrom16(b)
	if base.Is4() {
		ip = ip.Unmap()
	}
	return ip
}
