package netdriver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	dipam "github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
	"github.com/calico-libnetwork/calico-libnetwork/policysync"
)

type nftEnforcer struct{ *nftpolicy.Enforcer }

func (e nftEnforcer) Apply(ds *policy.DesiredState) (fmt.Stringer, error) {
	return e.Enforcer.Apply(ds)
}
func (e nftEnforcer) Resync(ds *policy.DesiredState) (fmt.Stringer, error) {
	return e.Enforcer.Resync(ds)
}

// TestDockerRunCallsBench times the plugin calls one `docker run --rm`
// makes, in Docker's order, against the real parts (embedded etcd, the
// nftables policy table and the veths in a throwaway namespace), without
// Docker: the plugin's own share of a docker run. It prints the median of
// each call and of their sum. It runs only with CALICO_BENCH=1:
//
//	CALICO_BENCH=1 CALICO_REQUIRE_ROOT_TESTS=1 go test -count=1 -v -run TestDockerRunCallsBench ./docker/netdriver/
func TestDockerRunCallsBench(t *testing.T) {
	if os.Getenv("CALICO_BENCH") != "1" {
		t.Skip("benchmark: set CALICO_BENCH=1 to run it")
	}
	runs := 60
	if n, err := strconv.Atoi(os.Getenv("CALICO_BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	host := testns.New(t)
	s := testetcd.Start(t)
	ctx := context.Background()
	p := api.IPPool{Name: "p4", CIDR: "10.9.0.0/16"}
	p.Normalize()
	if err := s.Put(ctx, api.PoolKey(p.Name), p); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var dlog io.Writer = io.Discard
	if os.Getenv("CALICO_BENCH_LOG") == "1" {
		dlog = os.Stderr // each call's steps
	}
	enf, err := nftpolicy.New(nftpolicy.Config{NetNS: int(host.Fd()), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ps := policysync.New(s, nftEnforcer{enf}, "host-a", log, policysync.Options{})
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ps.Run(pctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })
	<-ps.Ready()
	alloc := ipam.New(s, "host-a", nil)
	im := ipamdriver.New(alloc, log)
	d := netdriver.New(netdriver.Config{Store: s, Dataplane: dataplane.New(log, "host-a"), IPAM: alloc, Host: "host-a",
		MTU: func() int { return 1500 }, Log: slog.New(slog.NewTextHandler(dlog, nil)), Policy: ps})
	startBackground(t, pctx, d, host)
	pool, err := im.RequestPool(&dipam.RequestPoolRequest{AddressSpace: ipamdriver.LocalAddressSpace})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: "net1",
		IPv4Data: []*network.IPAMData{{AddressSpace: ipamdriver.LocalAddressSpace, Pool: pool.Pool, Gateway: "0.0.0.0/0"}}}); err != nil {
		t.Fatal(err)
	}
	calls := []string{"RequestAddress", "CreateEndpoint", "Join", "Leave", "DeleteEndpoint", "ReleaseAddress", "all"}
	took := map[string][]time.Duration{}
	err = host.Do(func(ns.NetNS) error {
		for i := 0; i < runs+3; i++ {
			one, err := dockerRun(d, im, pool.PoolID, i)
			if err != nil {
				return err
			}
			if i >= 3 { // warm-up: the first block claim, connections
				for k, v := range one {
					took[k] = append(took[k], v)
				}
			}
			// The container runs: what one run left in the background
			// (the veth's deletion) is done before the next starts, as
			// between two docker runs.
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| call | median | p90 |\n|---|---:|---:|\n")
	for _, c := range calls {
		v := append([]time.Duration(nil), took[c]...)
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		fmt.Fprintf(&b, "| %s | %.2f ms | %.2f ms |\n", c, ms(v[len(v)/2]), ms(v[len(v)*9/10]))
	}
	fmt.Printf("\nplugin calls of one docker run --rm, %d runs:\n\n%s\n", runs, b.String())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// dockerRun makes the calls of one docker run --rm and times each.
func dockerRun(d *netdriver.Driver, im *ipamdriver.Driver, poolID string, i int) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	start := time.Now()
	last := start
	mark := func(call string) {
		now := time.Now()
		out[call] = now.Sub(last)
		last = now
	}
	mac := fmt.Sprintf("02:42:0a:09:%02x:%02x", i/256, i%256)
	ra, err := im.RequestAddress(&dipam.RequestAddressRequest{PoolID: poolID, Options: map[string]string{"com.docker.network.endpoint.macaddress": mac}})
	if err != nil {
		return nil, err
	}
	mark("RequestAddress")
	id := fmt.Sprintf("%012x%052x", i+1, 0) // the veth is named after the first 11 characters
	if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "net1", EndpointID: id,
		Interface: &network.EndpointInterface{Address: ra.Address, MacAddress: mac}}); err != nil {
		return nil, err
	}
	mark("CreateEndpoint")
	if _, err := d.Join(&network.JoinRequest{NetworkID: "net1", EndpointID: id, SandboxKey: "/var/run/docker/netns/" + id[:12]}); err != nil {
		return nil, err
	}
	mark("Join")
	if err := d.Leave(&network.LeaveRequest{NetworkID: "net1", EndpointID: id}); err != nil {
		return nil, err
	}
	mark("Leave")
	if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: "net1", EndpointID: id}); err != nil {
		return nil, err
	}
	mark("DeleteEndpoint")
	addr, err := netip.ParsePrefix(ra.Address)
	if err != nil {
		return nil, err
	}
	if err := im.ReleaseAddress(&dipam.ReleaseAddressRequest{PoolID: poolID, Address: addr.Addr().String()}); err != nil {
		return nil, err
	}
	mark("ReleaseAddress")
	out["all"] = time.Since(start)
	return out, nil
}

// startBackground runs what the daemon runs beside the driver, in the
// test's namespace: the veth reaper.
func startBackground(t *testing.T, ctx context.Context, d *netdriver.Driver, host ns.NetNS) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = host.Do(func(ns.NetNS) error { d.RunReaper(ctx); return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
}
