package bgp

import (
	"net/netip"
	"time"

	gobgpapi "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// ribChanged tells the agent that the best paths changed (GoBGP's watch):
// it works out the learned routes again. Never blocks: one pending
// notice covers any number of changes.
func (s *Speaker) ribChanged([]*apiutil.Path, time.Time) {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Changed is notified when the speaker's best paths change.
func (s *Speaker) Changed() <-chan struct{} { return s.changed }

// Learned lists the best path of every prefix in the speaker's table that
// a peer sent (stale ones too: a restarting peer's routes still forward);
// none while the speaker is stopped.
func (s *Speaker) Learned() []Learned {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	var out []Learned
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: gobgpapi.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(prefix bgp.NLRI, paths []*apiutil.Path) {
				pfx, err := netip.ParsePrefix(prefix.String())
				if err != nil {
					return
				}
				for _, p := range paths {
					if !p.Best || p.Withdrawal || p.IsNexthopInvalid || !p.PeerAddress.IsValid() {
						continue // our own paths have no peer
					}
					if nh, ok := nextHop(p); ok {
						out = append(out, Learned{Prefix: pfx, NextHop: nh})
					}
					return
				}
			})
		if err != nil {
			s.log.Debug("list BGP routes", "family", fam, "err", err) // a family no session has
		}
	}
	return out
}

// nextHop is p's next hop: the NEXT_HOP attribute (IPv4) or MP_REACH's.
func nextHop(p *apiutil.Path) (netip.Addr, bool) {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value.Unmap(), a.Value.IsValid()
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop.Unmap(), a.Nexthop.IsValid()
		}
	}
	return netip.Addr{}, false
}
