package policysync

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

type hostRecorder struct {
	mu sync.Mutex
	r  nftpolicy.HostRules
	n  int
}

func (h *hostRecorder) Apply(r nftpolicy.HostRules, _ bool) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.r, h.n = r, h.n+1
	return true, nil
}

func (h *hostRecorder) last() nftpolicy.HostRules {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.r
}

// TestHostSync: the host protection rules follow the registered nodes'
// IPv4 addresses and the FelixConfiguration; an invalid FelixConfiguration
// keeps the last good one in force (Drop at first) and is logged once; its
// deletion brings back the defaults.
func TestHostSync(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	putJSON(t, s, api.NodeKey("h1"), api.Node{Name: "h1", IPv4Address: netip.MustParsePrefix("10.0.0.1/24")})
	putRaw(t, s, api.NodeKey("broken"), `{"name":`)
	rec := &hostRecorder{}
	lb := &logBuf{}
	static := nftpolicy.HostRules{ClosedPorts: []nftpolicy.HostPort{{Proto: unix.IPPROTO_TCP, Port: 2379}}, VXLANPort: 4789, VXLANVNI: 4096}
	hs := NewHostSync(s, rec, static, slog.New(slog.NewTextHandler(lb, nil)))
	c, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); hs.Run(c, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })
	<-hs.Ready()
	nodes := func() string {
		var out []string
		for _, a := range rec.last().Nodes {
			out = append(out, a.String())
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	r := rec.last()
	if !r.DropToHost || nodes() != "10.0.0.1" || len(r.ClosedPorts) != 1 || r.VXLANVNI != 4096 {
		t.Fatalf("first rules %+v", r)
	}
	if !strings.Contains(lb.String(), `node record ignored: VXLAN from it is not accepted" node=broken`) {
		t.Errorf("the undecodable node record is not logged:\n%s", lb.String())
	}
	putJSON(t, s, api.NodeKey("h2"), api.Node{Name: "h2", IPv4Address: netip.MustParsePrefix("10.0.0.2/24"), IPv6Address: netip.MustParsePrefix("fd00::2/64")})
	waitFor(t, "h2's address in the rules", func() bool { return nodes() == "10.0.0.1,10.0.0.2" })
	putJSON(t, s, api.FelixConfigKey, api.FelixConfig{DefaultEndpointToHostAction: api.ActionAccept,
		EndpointToHostAllowedPorts: []api.ProtoPort{{Protocol: "UDP", Port: 53}}})
	waitFor(t, "Accept and udp/53 in force", func() bool {
		r := rec.last()
		return !r.DropToHost && len(r.AllowedPorts) == 1 && r.AllowedPorts[0] == nftpolicy.HostPort{Proto: unix.IPPROTO_UDP, Port: 53}
	})
	putRaw(t, s, api.FelixConfigKey, `{"defaultEndpointToHostAction":"Open"}`)
	putRaw(t, s, api.FelixConfigKey, `{"defaultEndpointToHostAction":"Open"}`)
	waitFor(t, "the invalid configuration logged", func() bool { return strings.Contains(lb.String(), "FelixConfiguration default is invalid") })
	time.Sleep(100 * time.Millisecond)
	if r := rec.last(); r.DropToHost || len(r.AllowedPorts) != 1 {
		t.Errorf("an invalid FelixConfiguration changed the rules: %+v", r)
	}
	if n := strings.Count(lb.String(), "FelixConfiguration default is invalid"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	if err := s.Delete(ctx, api.FelixConfigKey); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, api.NodeKey("h1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the defaults back and h1 gone", func() bool {
		r := rec.last()
		return r.DropToHost && len(r.AllowedPorts) == 0 && nodes() == "10.0.0.2"
	})
	if a := netip.MustParseAddr("10.0.0.2"); !slices.Contains(rec.last().Nodes, a) {
		t.Errorf("nodes %v", rec.last().Nodes)
	}
}
