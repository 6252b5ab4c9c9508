package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	gobgpapi "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// maxPrefixes bounds the prefixes listed per peer in the status.
const maxPrefixes = 32

// Status reports the speaker as calicoctl node status shows it.
func (s *Speaker) Status(ctx context.Context) api.BGPStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.plan
	st := api.BGPStatus{Enabled: p.Enabled && s.srv != nil, Off: p.Off, MD5: md5Support()}
	if !st.Enabled {
		if st.Off == "" {
			st.Off = "not started yet"
		}
		return st
	}
	st.ASNumber, st.RouterID = p.ASN, p.RouterID.String()
	var ls []string
	for _, a := range p.Listen {
		ls = append(ls, netip.AddrPortFrom(a, uint16(p.ListenPort)).String())
	}
	st.Listen = strings.Join(ls, ", ")
	for _, a := range p.Announce {
		st.Announced = append(st.Announced, a.Prefix.String())
	}
	live := map[string]*gobgpapi.Peer{}
	err := s.srv.ListPeer(ctx, &gobgpapi.ListPeerRequest{}, func(p *gobgpapi.Peer) {
		if p.GetState() != nil {
			live[p.GetState().GetNeighborAddress()] = p
		}
	})
	if err != nil {
		st.Error = err.Error()
	}
	for _, ps := range p.Peers {
		row := api.BGPPeerStatus{Address: ps.Addr.String(), Type: ps.Type, Name: ps.Name, ASNumber: ps.ASN, State: "start", Info: "not configured"}
		if msg, bad := s.peerErr[ps.Addr]; bad {
			row.Info = msg
		} else if lp, ok := live[ps.Addr.String()]; ok {
			fillPeer(&row, lp, s.lastDown(ps.Addr))
			if row.Received > 0 {
				row.Prefixes = s.received(ctx, ps.Addr)
			}
			if ps.PasswordFile != "" && row.State != "up" && !strings.Contains(row.Info, ":") {
				row.Info += " (a password that differs on the two sides looks like this: the kernel drops the peer's segments)"
			}
		}
		st.Peers = append(st.Peers, row)
	}
	return st
}

// lastDown is why the session to a last went down ("" none known).
func (s *Speaker) lastDown(a netip.Addr) downEvent {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	return s.down[a.String()]
}

func fillPeer(row *api.BGPPeerStatus, p *gobgpapi.Peer, down downEvent) {
	ps := p.GetState()
	state := bgp.FSMState(int(ps.GetSessionState()) - 1)
	row.State = "start"
	if state == bgp.BGP_FSM_ESTABLISHED {
		row.State = "up"
	}
	row.Info = stateWord(state)
	if state != bgp.BGP_FSM_ESTABLISHED {
		switch {
		case ps.GetDisconnectReason() != gobgpapi.PeerState_DISCONNECT_REASON_UNSPECIFIED:
			row.Info += ": " + reasonWord(ps.GetDisconnectReason(), ps.GetDisconnectMessage())
		case down.why != "":
			row.Info += ": " + down.why
			row.Since = down.at
		}
	}
	if t := p.GetTimers().GetState(); t != nil {
		if state == bgp.BGP_FSM_ESTABLISHED && t.GetUptime() != nil && t.GetUptime().AsTime().Unix() > 0 {
			row.Since = t.GetUptime().AsTime()
		} else if t.GetDowntime() != nil && row.Since.IsZero() && t.GetDowntime().AsTime().Unix() > 0 {
			row.Since = t.GetDowntime().AsTime()
		}
	}
	for _, af := range p.GetAfiSafis() {
		if as := af.GetState(); as != nil {
			row.Received += int(as.GetReceived())
			row.Accepted += int(as.GetAccepted())
			row.Advertised += int(as.GetAdvertised())
		}
	}
}

// received lists the prefixes a peer sent (its Adj-RIB-In).
func (s *Speaker) received(ctx context.Context, peer netip.Addr) []string {
	var out []string
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		_ = s.srv.ListPath(apiutil.ListPathRequest{TableType: gobgpapi.TableType_TABLE_TYPE_ADJ_IN, Name: peer.String(), Family: fam},
			func(prefix bgp.NLRI, _ []*apiutil.Path) {
				if len(out) < maxPrefixes {
					out = append(out, prefix.String())
				}
			})
		if ctx.Err() != nil {
			break
		}
	}
	sort.Strings(out)
	return out
}

// stateWord is BIRD's word for a session state, as Calico showed it.
func stateWord(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "Idle"
	case bgp.BGP_FSM_CONNECT:
		return "Connect"
	case bgp.BGP_FSM_ACTIVE:
		return "Active"
	case bgp.BGP_FSM_OPENSENT:
		return "OpenSent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "OpenConfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "Established"
	}
	return fmt.Sprintf("state %d", st)
}

// reasonWord says why a session went down, in words a user can act on.
func reasonWord(r gobgpapi.PeerState_DisconnectReason, msg string) string {
	var w string
	switch r {
	case gobgpapi.PeerState_DISCONNECT_REASON_BAD_PEER_AS:
		w = "bad peer AS (the peer's AS number differs from the one configured: check asNumber on both sides)"
	case gobgpapi.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED:
		w = "hold timer expired (the peer stopped answering)"
	case gobgpapi.PeerState_DISCONNECT_REASON_NOTIFICATION_RECEIVED:
		w = "the peer closed the session"
	case gobgpapi.PeerState_DISCONNECT_REASON_NOTIFICATION_SENT:
		w = "closed the session"
	case gobgpapi.PeerState_DISCONNECT_REASON_READ_FAILED, gobgpapi.PeerState_DISCONNECT_REASON_WRITE_FAILED:
		w = "connection lost"
	case gobgpapi.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART:
		w = "graceful restart"
	default:
		w = strings.ToLower(strings.TrimPrefix(r.String(), "DISCONNECT_REASON_"))
	}
	if msg != "" {
		w += ": " + msg
	}
	return w
}
