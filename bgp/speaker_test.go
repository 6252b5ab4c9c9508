package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// freePort finds a TCP port free on both loopback addresses.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func loopPlan(me, peer string, asn, peerASN uint32, port int, announce ...string) Plan {
	p := Plan{Enabled: true, ASN: asn, RouterID: netip.MustParseAddr(me), Listen: []netip.Addr{netip.MustParseAddr(me)}, ListenPort: port, LogLevel: "Info",
		Peers: []PeerSpec{{Name: "other", Type: TypeMesh, Addr: netip.MustParseAddr(peer), Port: uint16(port), ASN: peerASN, Keepalive: 3 * time.Second, RestartTime: 5 * time.Second}}}
	for _, a := range announce {
		p.Announce = append(p.Announce, Announcement{Prefix: netip.MustParsePrefix(a), NextHop: netip.MustParseAddr(me)})
	}
	return p
}

func waitPeer(t *testing.T, s *Speaker, what string, ok func(api.BGPPeerStatus) bool) api.BGPPeerStatus {
	t.Helper()
	return waitPeerAt(t, s, "", what, ok)
}

// waitPeerAt waits for the session with addr ("": the only one) to be ok.
func waitPeerAt(t *testing.T, s *Speaker, addr, what string, ok func(api.BGPPeerStatus) bool) api.BGPPeerStatus {
	t.Helper()
	var last api.BGPStatus
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		last = s.Status(context.Background())
		for _, p := range last.Peers {
			if (addr == "" && len(last.Peers) == 1 || p.Address == addr) && ok(p) {
				return p
			}
		}
	}
	t.Fatalf("%s: last status %+v", what, last)
	return api.BGPPeerStatus{}
}

// TestSpeakersOverLoopback: two speakers on 127.0.0.1 and 127.0.0.2 (no
// root needed) peer, one's announcements reach the other and go when
// withdrawn, and a wrong AS is reported in the status.
func TestSpeakersOverLoopback(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	port := freePort(t)
	a, b := NewSpeaker(t.TempDir(), log), NewSpeaker(t.TempDir(), log)
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	ctx := context.Background()
	if err := a.Apply(ctx, loopPlan("127.0.0.1", "127.0.0.2", 64512, 64512, port, "10.99.0.0/26", "10.99.1.7/32")); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, loopPlan("127.0.0.2", "127.0.0.1", 64512, 64512, port)); err != nil {
		if strings.Contains(err.Error(), "assign requested address") {
			t.Skipf("SKIP (loudly): 127.0.0.2 is not usable here: %v", err)
		}
		t.Fatal(err)
	}
	got := waitPeer(t, b, "b receives a's two routes", func(p api.BGPPeerStatus) bool { return p.State == "up" && p.Received == 2 })
	if fmt.Sprint(got.Prefixes) != "[10.99.0.0/26 10.99.1.7/32]" || got.Info != "Established" || got.Since.IsZero() {
		t.Errorf("b's view of a: %+v", got)
	}
	if st := a.Status(ctx); fmt.Sprint(st.Announced) != "[10.99.0.0/26 10.99.1.7/32]" || st.RouterID != "127.0.0.1" || st.Listen != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Errorf("a's status: %+v", st)
	}
	// The block goes: its route is withdrawn.
	if err := a.Apply(ctx, loopPlan("127.0.0.1", "127.0.0.2", 64512, 64512, port, "10.99.1.7/32")); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, b, "the withdrawal reaches b", func(p api.BGPPeerStatus) bool { return p.Received == 1 && fmt.Sprint(p.Prefixes) == "[10.99.1.7/32]" })
	// b now expects another AS of a: the session fails and says why.
	if err := b.Apply(ctx, loopPlan("127.0.0.2", "127.0.0.1", 64512, 65000, port)); err != nil {
		t.Fatal(err)
	}
	bad := waitPeer(t, b, "a wrong AS is reported", func(p api.BGPPeerStatus) bool { return p.State != "up" && strings.Contains(p.Info, "AS") })
	if bad.ASNumber != 65000 {
		t.Errorf("status of the misconfigured peer: %+v", bad)
	}
	// Turned off: the server stops, the status says why.
	if err := b.Apply(ctx, Plan{Off: "no BGPConfiguration named default"}); err != nil {
		t.Fatal(err)
	}
	if st := b.Status(ctx); st.Enabled || st.Off != "no BGPConfiguration named default" {
		t.Errorf("off: %+v", st)
	}
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	s := NewSpeaker(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, tc := range []struct {
		name, content, want string
		mode                uint32
	}{
		{"missing", "", "no such file", 0},
		{"readable by others", "secret\n", "chmod 600", 0o644},
		{"empty", "\n", "1 to 80 characters", 0o600},
		{"good", "secret\n", "", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := dir + "/" + strings.ReplaceAll(tc.name, " ", "-")
			if tc.mode != 0 {
				writeFile(t, f, tc.content, tc.mode)
			}
			pw, err := s.password(PeerSpec{Name: "tor", Addr: netip.MustParseAddr("10.0.0.254"), PasswordFile: f})
			if tc.want == "" {
				if err != nil || pw != "secret" {
					t.Errorf("password %q, %v", pw, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, content string, mode uint32) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), os.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, os.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
}

// TestExternalPeerGetsOwnRoutes: a router peering with node a learns only
// a's own routes, not those a heard over the mesh from b (it learns those
// from b itself); with keepOriginalNextHop it gets them all.
func TestExternalPeerGetsOwnRoutes(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	port := freePort(t)
	a, b, tor := NewSpeaker(t.TempDir(), log), NewSpeaker(t.TempDir(), log), NewSpeaker(t.TempDir(), log)
	for _, s := range []*Speaker{a, b, tor} {
		t.Cleanup(s.Close)
	}
	ctx := context.Background()
	torPeer := PeerSpec{Name: "tor", Type: TypeGlobal, Addr: netip.MustParseAddr("127.0.0.3"), Port: uint16(port), ASN: 65000, Keepalive: 3 * time.Second, RestartTime: 5 * time.Second}
	planA := loopPlan("127.0.0.1", "127.0.0.2", 64512, 64512, port, "10.98.1.0/26")
	planA.Peers = append(planA.Peers, torPeer)
	torPlan := loopPlan("127.0.0.3", "127.0.0.1", 65000, 64512, port)
	for _, step := range []struct {
		s *Speaker
		p Plan
	}{{a, planA}, {b, loopPlan("127.0.0.2", "127.0.0.1", 64512, 64512, port, "10.98.2.0/26")}, {tor, torPlan}} {
		if err := step.s.Apply(ctx, step.p); err != nil {
			if strings.Contains(err.Error(), "assign requested address") {
				t.Skipf("SKIP (loudly): 127.0.0.x is not usable here: %v", err)
			}
			t.Fatal(err)
		}
	}
	waitPeer(t, b, "b hears a", func(p api.BGPPeerStatus) bool { return p.State == "up" && p.Received == 1 })
	waitPeerAt(t, a, "127.0.0.2", "a hears b", func(p api.BGPPeerStatus) bool { return p.State == "up" && p.Received == 1 })
	got := waitPeer(t, tor, "the router hears a's own route", func(p api.BGPPeerStatus) bool { return p.State == "up" && p.Received >= 1 })
	time.Sleep(2 * time.Second) // b's route would have followed by now
	got = waitPeer(t, tor, "the router hears a's own route only", func(p api.BGPPeerStatus) bool { return p.State == "up" })
	if fmt.Sprint(got.Prefixes) != "[10.98.1.0/26]" {
		t.Errorf("the router got %v from a, want only a's own block", got.Prefixes)
	}
	planA.Peers[1].KeepOriginalNextHop = true
	if err := a.Apply(ctx, planA); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, tor, "with keepOriginalNextHop the router hears both", func(p api.BGPPeerStatus) bool {
		return p.State == "up" && fmt.Sprint(p.Prefixes) == "[10.98.1.0/26 10.98.2.0/26]"
	})
}
