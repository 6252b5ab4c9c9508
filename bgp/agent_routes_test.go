package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

// agentChildEnv is set in the re-run test binary: BIRD's control socket.
const agentChildEnv = "CALICO_BGP_AGENT_CHILD"

// TestAgentInstallsLearnedRoutes: the agent of node h1, with a real etcd
// and its speaker meshed with BIRD playing node h2 (iBGP), installs h2's
// block as a protocol-79 route when BIRD announces it (and not BIRD's
// route outside the pools), removes it when BIRD withdraws it, puts it back
// when it returns, and removes it when BGP is turned off.
func TestAgentInstallsLearnedRoutes(t *testing.T) {
	if sock := os.Getenv(agentChildEnv); sock != "" {
		agentChild(t, sock)
		return
	}
	cfg := fmt.Sprintf(`protocol static h2block { ipv4; route 10.230.2.0/26 blackhole; }
protocol static foreign { ipv4; route 10.99.0.0/24 blackhole; }
protocol bgp node {
  local 10.0.6.2 as %d;
  neighbor 10.0.6.1 as %d;
  error wait time 1, 5; connect retry time 1; connect delay time 1;
  ipv4 { import all; export all; next hop self; };
}
`, api.DefaultASNumber, api.DefaultASNumber)
	runBesideBIRD(t, "TestAgentInstallsLearnedRoutes", agentChildEnv, t.TempDir(), cfg)
}

// kernelRoutes is the Installer the daemon has (plugin's learnedRoutes).
type kernelRoutes struct{}

func (kernelRoutes) ApplyLearned(rs []Route) ([]string, error) {
	var want []carrier.BlockRoute
	for _, r := range rs {
		want = append(want, carrier.BlockRoute{Dst: r.Dst, Via: r.Via, Mode: carrier.ModeDirect})
	}
	if _, err := dataplane.ApplyBGPRoutes(want); err != nil {
		return nil, err
	}
	return dataplane.BGPRoutesInKernel()
}

// agentChild is node h1's side, run inside its namespace.
func agentChild(t *testing.T, sock string) {
	store := testetcd.Start(t)
	ctx := context.Background()
	put := func(key string, v any) {
		t.Helper()
		if err := store.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	put(api.BGPConfigKey, api.BGPConfig{})
	put(api.PoolKey("p"), api.IPPool{Name: "p", CIDR: "10.230.0.0/16", BlockSize: 26})
	for name, a := range map[string]string{"h1": "10.0.6.1/24", "h2": "10.0.6.2/24"} {
		put(api.NodeKey(name), api.Node{Name: name, IPv4Address: mustPrefix(a)})
	}
	put(api.BlockKey(mustPrefix("10.230.2.0/26")), api.Block{CIDR: mustPrefix("10.230.2.0/26"), Affinity: "h2"})
	a := New(store, "h1", t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	a.Routes = kernelRoutes{}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		wg.Wait()
		_, _ = dataplane.ApplyBGPRoutes(nil)
	})
	const h2Route = "10.230.2.0/26 via 10.0.6.2 dev v0 metric 2000"
	inKernel := func(what, want string) {
		t.Helper()
		waitFor(t, what, func() (bool, string) {
			in, err := dataplane.BGPRoutesInKernel()
			return err == nil && strings.Join(in, "; ") == want, fmt.Sprintf("learned routes in the kernel: %q (%v), want %q; status %+v", in, err, want, a.Status())
		})
	}
	inKernel("BIRD's block for h2 reaches the kernel", h2Route)
	// BIRD's route outside the pools was learned, and left out.
	st := a.Status()
	if fmt.Sprint(st.Installed) != "["+h2Route+"]" || st.LearnedOff != "" || len(st.Peers) != 1 || fmt.Sprint(st.Peers[0].Prefixes) != "[10.230.2.0/26 10.99.0.0/24]" {
		t.Errorf("status: installed %v, off %q, peers %+v", st.Installed, st.LearnedOff, st.Peers)
	}
	if _, err := birdc(sock, "disable", "h2block"); err != nil {
		t.Fatal(err)
	}
	inKernel("the withdrawal removes it", "")
	if _, err := birdc(sock, "enable", "h2block"); err != nil {
		t.Fatal(err)
	}
	inKernel("announced again, it is back", h2Route)
	if err := store.Delete(ctx, api.BGPConfigKey); err != nil {
		t.Fatal(err)
	}
	inKernel("BGP off removes it", "")
	if st := a.Status(); st.Enabled || st.LearnedOff != "BGP is off" {
		t.Errorf("status with BGP off: %+v", st)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
