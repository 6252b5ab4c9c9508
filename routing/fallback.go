package routing

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
)

// fallback carries an IPIP route by VXLAN when either end's kernel lacks
// ipip (both must have VXLAN), so that a pool asking for IPIP works between
// every pair of nodes. Both ends decide the same way from the same two Node
// records, so traffic goes out and comes back in the same encapsulation.
// The note says so, once per pool and peer.
func (st *State) fallback(mode carrier.Mode, dst netip.Prefix, me, peer api.Node) (carrier.Mode, string) {
	if mode != carrier.ModeIPIP {
		return mode, ""
	}
	meIPIP, peerIPIP := me.HasEncapsulation(api.EncapsulationIPIP), peer.HasEncapsulation(api.EncapsulationIPIP)
	if meIPIP && peerIPIP {
		return mode, ""
	}
	if !me.HasEncapsulation(api.EncapsulationVXLAN) || !peer.HasEncapsulation(api.EncapsulationVXLAN) {
		return mode, "" // neither works: the route is reported as not installed, with the reason
	}
	why := "this node's kernel has no ipip"
	switch {
	case !meIPIP && !peerIPIP:
		why = "neither this node's kernel nor " + peer.Name + "'s has ipip"
	case meIPIP:
		why = peer.Name + "'s kernel has no ipip"
	}
	pool := "?"
	if p, ok := st.poolFor(dst.Addr()); ok {
		pool = p.Name
	}
	return carrier.ModeVXLAN, fmt.Sprintf("pool %s asks for IPIP to node %s, but %s: carried by VXLAN instead", pool, peer.Name, why)
}

// anyLacksIPIP reports whether some node's kernel cannot carry IPIP, so an
// IPIP pool may be carried by VXLAN somewhere.
func (st *State) anyLacksIPIP() bool {
	for _, n := range st.Nodes {
		if !n.HasEncapsulation(api.EncapsulationIPIP) {
			return true
		}
	}
	return false
}

// UsesIPIP reports whether any pool may send traffic through IPIP (and is
// not carried by VXLAN instead), so container MTUs must leave room for its
// header.
func (s *Syncer) UsesIPIP() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.st.Pools {
		if p.IPIPMode == api.EncapAlways || p.IPIPMode == api.EncapCrossSubnet {
			return true
		}
	}
	return false
}

// logNotes logs each note not reported before: one line per pool and peer
// carried by another encapsulation, not one per resync.
func (s *Syncer) logNotes(notes []string, reported map[string]bool) {
	for _, n := range notes {
		if !reported[n] {
			s.log.Info("encapsulation fallback", "note", n)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
