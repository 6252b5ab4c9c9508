package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	gobgpapi "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// runningMark, in the data dir, says the speaker was running: a daemon
// that finds it at start-up is restarting (after kill -9 too) and tells
// its peers so (graceful restart), so they keep its routes meanwhile.
const runningMark = "bgp-running"

// deferral bounds how long a restarting speaker waits for its peers'
// End-of-RIB before it announces.
const deferral = 10

// stopTimeout bounds stopping the server (it tells each peer).
const stopTimeout = 5 * time.Second

// global is what a running server was started with; a change restarts it.
type global struct {
	asn      uint32
	routerID netip.Addr
	listen   string
	port     int
}

// applied is a configured peer and the spec it came from.
type applied struct {
	spec     PeerSpec
	password string
}

// Speaker applies Plans to an embedded GoBGP server, starting it when BGP
// is turned on and stopping it when it is turned off.
type Speaker struct {
	dataDir string
	log     *slog.Logger

	mu       sync.Mutex
	srv      *server.BgpServer
	served   chan struct{}      // closed when srv's Serve returns
	unwatch  context.CancelFunc // ends the session watch
	cur      global
	level    *slog.LevelVar
	peers    map[netip.Addr]applied
	peerErr  map[netip.Addr]string // why a wanted peer is not configured
	paths    map[netip.Prefix]uuid.UUID
	plan     Plan
	restarts bool // the first peers are told we are restarting
	// exportKey is the external peers the export policy was set for.
	exportKey string

	// events: what the session watch saw last of each peer (the server's
	// peer list does not keep why a session went down).
	evMu sync.Mutex
	down map[string]downEvent

	changed chan struct{} // the best paths changed (ribChanged)
}

// downEvent is why and when a session last went down.
type downEvent struct {
	why string
	at  time.Time
}

// NewSpeaker returns a stopped speaker.
func NewSpeaker(dataDir string, log *slog.Logger) *Speaker {
	return &Speaker{dataDir: dataDir, log: log, level: new(slog.LevelVar), changed: make(chan struct{}, 1)}
}

// Apply makes the server match p.
func (s *Speaker) Apply(ctx context.Context, p Plan) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plan = p
	if !p.Enabled {
		if s.srv != nil {
			s.log.Info("BGP turned off", "reason", p.Off)
			s.stopLocked(false)
			_ = os.Remove(filepath.Join(s.dataDir, runningMark))
		}
		return nil
	}
	s.level.Set(level(p.LogLevel))
	g := global{asn: p.ASN, routerID: p.RouterID, listen: listenList(p.Listen), port: p.ListenPort}
	if s.srv != nil && s.cur != g {
		s.log.Info("BGP settings changed: restarting the speaker", "as", p.ASN, "routerID", p.RouterID)
		s.stopLocked(false)
	}
	if s.srv == nil {
		if err := s.startLocked(ctx, g, p); err != nil {
			return err
		}
	}
	if err := s.applyExportLocked(ctx, p.Peers); err != nil {
		return err // before any peer: none may get what it should not
	}
	return errors.Join(s.applyPeersLocked(ctx, p.Peers), s.applyPathsLocked(p.Announce))
}

func listenList(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}

func level(sev string) slog.Level {
	switch sev {
	case "Debug":
		return slog.LevelDebug
	case "Warning":
		return slog.LevelWarn
	case "Error", "Fatal":
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (s *Speaker) startLocked(ctx context.Context, g global, p Plan) error {
	catcher := &notifyCatcher{next: s.log.With("component", "gobgp").Handler(), level: s.level, saw: s.sawDown}
	srv := server.NewBgpServer(server.LoggerOption(slog.New(catcher), s.level))
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve() }()
	var listen []string
	for _, a := range p.Listen {
		listen = append(listen, a.String())
	}
	err := srv.StartBgp(ctx, &gobgpapi.StartBgpRequest{Global: &gobgpapi.Global{
		Asn: g.asn, RouterId: g.routerID.String(), ListenPort: int32(g.port), ListenAddresses: listen,
		GracefulRestart: &gobgpapi.GracefulRestart{Enabled: true, RestartTime: uint32(meshRestart.Seconds()), DeferralTime: deferral},
	}})
	if err != nil {
		srv.Stop()
		<-served
		return fmt.Errorf("start BGP on %s port %d: %w (is another BGP daemon, e.g. BIRD, listening there?)", g.listen, g.port, err)
	}
	mark := filepath.Join(s.dataDir, runningMark)
	_, statErr := os.Stat(mark)
	s.restarts = statErr == nil
	if err := os.WriteFile(mark, nil, 0o600); err != nil {
		s.log.Warn("cannot record that BGP runs; a restart will not be announced as graceful", "err", err)
	}
	s.srv, s.served, s.cur = srv, served, g
	s.peers, s.peerErr, s.paths = map[netip.Addr]applied{}, map[netip.Addr]string{}, map[netip.Prefix]uuid.UUID{}
	// The watch lives as long as this server (not the apply that started it).
	watchCtx, unwatch := context.WithCancel(context.WithoutCancel(ctx))
	s.unwatch = unwatch
	if err := srv.WatchEvent(watchCtx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.logPeer, OnBestPath: s.ribChanged},
		server.WatchPeer(), server.WatchBestPath(false)); err != nil {
		s.log.Warn("cannot follow BGP session and route changes", "err", err)
	}
	s.log.Info("BGP speaker started", "as", g.asn, "routerID", g.routerID, "listen", g.listen, "port", g.port, "restarting", s.restarts)
	return nil
}

// logPeer logs each session's state changes, with the reason a session
// went down (a wrong AS, a notification, a timer).
func (s *Speaker) logPeer(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	attrs := []any{"peer", st.NeighborAddress, "as", st.PeerASN, "state", stateWord(st.SessionState)}
	if st.SessionState == bgp.BGP_FSM_ESTABLISHED {
		s.log.Info("BGP session established", attrs...)
		s.evMu.Lock()
		delete(s.down, st.NeighborAddress.String())
		s.evMu.Unlock()
		return
	}
	// The idle timer expiring is the retry after a failure: keep the failure.
	if r := st.DisconnectReason; r != gobgpapi.PeerState_DISCONNECT_REASON_UNSPECIFIED && r != gobgpapi.PeerState_DISCONNECT_REASON_IDLE_TIMER_EXPIRED {
		why := reasonWord(st.DisconnectReason, st.DisconnectMessage)
		attrs = append(attrs, "reason", why)
		s.log.Warn("BGP session down", attrs...)
		s.sawDown(st.NeighborAddress.String(), why, at)
		return
	}
	s.log.Debug("BGP session state", attrs...)
}

// sawDown records why the session to peer went down.
func (s *Speaker) sawDown(peer, why string, at time.Time) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if s.down == nil {
		s.down = map[string]downEvent{}
	}
	if d, ok := s.down[peer]; !ok || d.why != why {
		s.log.Warn("BGP peer refused", "peer", peer, "reason", why)
	}
	s.down[peer] = downEvent{why: why, at: at}
}

// forgetDown drops what is known of peer's last failure.
func (s *Speaker) forgetDown(peer string) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	delete(s.down, peer)
}

// stopLocked stops the server; graceful leaves the peers holding our
// routes for the restart time (the daemon is restarting), otherwise they
// are told the sessions are gone.
func (s *Speaker) stopLocked(graceful bool) {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := s.srv.StopBgp(ctx, &gobgpapi.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil {
		s.log.Warn("stop BGP", "err", err)
	}
	<-s.served
	s.unwatch()
	s.srv, s.served, s.cur, s.unwatch = nil, nil, global{}, nil
	s.peers, s.paths, s.exportKey = nil, nil, ""
}

// Close stops the speaker as the daemon stops: gracefully, so that peers
// keep forwarding to this node's containers while it restarts.
func (s *Speaker) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(true)
}

func (s *Speaker) applyPeersLocked(ctx context.Context, want []PeerSpec) error {
	wanted := map[netip.Addr]bool{}
	var errs []error
	clear(s.peerErr)
	for _, ps := range want {
		wanted[ps.Addr] = true
		pw, err := s.password(ps)
		if err != nil {
			s.peerErr[ps.Addr] = err.Error()
			errs = append(errs, err)
			if _, ok := s.peers[ps.Addr]; ok {
				s.deletePeer(ctx, ps.Addr)
			}
			continue
		}
		cur, ok := s.peers[ps.Addr]
		if ok && cur.spec == ps && cur.password == pw {
			continue
		}
		if ok {
			s.deletePeer(ctx, ps.Addr)
		}
		if err := s.srv.AddPeer(ctx, &gobgpapi.AddPeerRequest{Peer: s.peerConf(ps, pw)}); err != nil {
			err = fmt.Errorf("BGP peer %s (%s): %w", ps.Addr, ps.Name, err)
			s.peerErr[ps.Addr] = err.Error()
			errs = append(errs, err)
			continue
		}
		s.peers[ps.Addr] = applied{spec: ps, password: pw}
		s.forgetDown(ps.Addr.String()) // a new configuration: the old failure no longer says anything
		s.log.Info("BGP peer configured", "peer", ps.Addr, "name", ps.Name, "type", ps.Type, "as", ps.ASN)
	}
	for a := range s.peers {
		if !wanted[a] {
			s.deletePeer(ctx, a)
		}
	}
	return errors.Join(errs...)
}

func (s *Speaker) deletePeer(ctx context.Context, a netip.Addr) {
	if err := s.srv.DeletePeer(ctx, &gobgpapi.DeletePeerRequest{Address: a.String()}); err != nil {
		s.log.Warn("delete BGP peer", "peer", a, "err", err)
	}
	delete(s.peers, a)
	s.log.Info("BGP peer removed", "peer", a)
}

// password reads the peer's MD5 password file; it must be root's alone.
func (s *Speaker) password(ps PeerSpec) (string, error) {
	if ps.PasswordFile == "" {
		return "", nil
	}
	fi, err := os.Stat(ps.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("BGP peer %s (%s): password file: %w: write the password there (mode 0600)", ps.Addr, ps.Name, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("BGP peer %s (%s): password file %s can be read by others (mode %v): chmod 600 it", ps.Addr, ps.Name, ps.PasswordFile, fi.Mode().Perm())
	}
	b, err := os.ReadFile(ps.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("BGP peer %s (%s): password file: %w", ps.Addr, ps.Name, err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" || len(pw) > 80 {
		return "", fmt.Errorf("BGP peer %s (%s): password file %s: give a password of 1 to 80 characters", ps.Addr, ps.Name, ps.PasswordFile)
	}
	return pw, nil
}

func (s *Speaker) peerConf(ps PeerSpec, pw string) *gobgpapi.Peer {
	fam := &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP, Safi: gobgpapi.Family_SAFI_UNICAST}
	local := s.plan.RouterID
	if ps.Addr.Is6() {
		fam = &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP6, Safi: gobgpapi.Family_SAFI_UNICAST}
		for _, a := range s.plan.Listen {
			if a.Is6() {
				local = a
			}
		}
	}
	p := &gobgpapi.Peer{
		Conf: &gobgpapi.PeerConf{NeighborAddress: ps.Addr.String(), PeerAsn: ps.ASN, AuthPassword: pw, Description: ps.Type + " " + ps.Name},
		Timers: &gobgpapi.Timers{Config: &gobgpapi.TimersConfig{
			KeepaliveInterval: uint64(ps.Keepalive.Seconds()), HoldTime: 3 * uint64(ps.Keepalive.Seconds()), ConnectRetry: 5,
		}},
		Transport: &gobgpapi.Transport{LocalAddress: local.String(), RemotePort: uint32(ps.Port)},
		GracefulRestart: &gobgpapi.GracefulRestart{Enabled: true, RestartTime: uint32(ps.RestartTime.Seconds()),
			DeferralTime: deferral, LocalRestarting: s.restarts},
		AfiSafis: []*gobgpapi.AfiSafi{{
			Config:            &gobgpapi.AfiSafiConfig{Family: fam, Enabled: true},
			MpGracefulRestart: &gobgpapi.MpGracefulRestart{Config: &gobgpapi.MpGracefulRestartConfig{Enabled: true}},
		}},
	}
	if ps.RRClient {
		p.RouteReflector = &gobgpapi.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: ps.ClusterID}
	}
	return p
}

func (s *Speaker) applyPathsLocked(want []Announcement) error {
	wanted := map[netip.Prefix]bool{}
	var errs []error
	for _, a := range want {
		wanted[a.Prefix] = true
		if _, ok := s.paths[a.Prefix]; ok {
			continue
		}
		path, err := originate(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		if err != nil || len(res) != 1 {
			errs = append(errs, fmt.Errorf("announce %s: %w", a.Prefix, err))
			continue
		}
		s.paths[a.Prefix] = res[0].UUID
		s.log.Info("BGP announces", "prefix", a.Prefix, "nextHop", a.NextHop)
	}
	for p, id := range s.paths {
		if wanted[p] {
			continue
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{id}}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.paths, p)
		s.log.Info("BGP withdraws", "prefix", p)
	}
	return errors.Join(errs...)
}

// originate is the path for a: origin IGP, next hop this node.
func originate(a Announcement) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(a.Prefix)
	if err != nil {
		return nil, fmt.Errorf("announce %s: %w", a.Prefix, err)
	}
	fam := bgp.RF_IPv4_UC
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if a.Prefix.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(a.NextHop)
		if err != nil {
			return nil, fmt.Errorf("announce %s: %w", a.Prefix, err)
		}
		attrs = append(attrs, nh)
	} else {
		fam = bgp.RF_IPv6_UC
		mp, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, a.NextHop)
		if err != nil {
			return nil, fmt.Errorf("announce %s: %w", a.Prefix, err)
		}
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}
