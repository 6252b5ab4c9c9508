//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// TestDatastoreWipe: the embedded etcd's data is lost while containers run
// and the daemon restarts. The containers keep their network (they reach
// each other, the host reaches them), calicoctl ipam show counts them, a new
// container never gets one of their addresses, and new containers start on
// the network again (its record rebuilt from the engine).
func TestDatastoreWipe(t *testing.T) {
	begin(t)
	t.Cleanup(ensureDaemon(t))
	nw := newNetwork(t)
	a, b := runContainer(t, nw), runContainer(t, nw)
	ipA, ipB := a.ip(t, nw), b.ip(t, nw)
	a.mustPing(t, ipB)

	if err := dmn.stop(syscall.SIGKILL); err != nil {
		t.Logf("daemon kill: %v", err)
	}
	for _, f := range []string{"etcd", "etcd-endpoint"} {
		if err := os.RemoveAll(filepath.Join(dmn.dataDir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := dmn.start(); err != nil {
		t.Fatal(err)
	}
	// Straight after the restart, before anything else: both still there.
	a.mustPing(t, ipB)
	b.mustPing(t, ipA)
	for _, ip := range []string{ipA, ipB} {
		if err := hostPing(ip); err != nil {
			t.Errorf("the host cannot reach %s after the wipe: %v", ip, err)
		}
	}
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap, err := ipam.LoadSnapshot(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{ipA, ipB} {
		info := snap.Lookup(netip.MustParseAddr(ip))
		if info.Owner == nil || info.State != api.StateBound || len(info.Endpoints) != 1 {
			t.Errorf("%s after the wipe: %+v; want claimed again, bound to its adopted endpoint", ip, info)
		}
	}
	// calicoctl ipam show counts them in the (recreated) default pool.
	show := mustCalicoctl(t, buildCalicoctl(t), "", "ipam", "show")
	if !regexp.MustCompile(`IP Pool\s+\|\s+\S+\s+\|\s+\d+\s+\|\s+2 \(`).MatchString(show) {
		t.Errorf("calicoctl ipam show after the wipe, want 2 in use in the IPv4 pool:\n%s", show)
	}
	// The engine fills in the adopted records and rebuilds the network's.
	netID := docker(t, "network", "inspect", "-f", "{{.Id}}", nw)
	if err := waitFor(30*time.Second, func() error {
		var rec api.Network
		if _, err := s.Get(ctx, api.NetworkKey(netID), &rec); err != nil {
			return fmt.Errorf("network record: %w", err)
		}
		snap, err := ipam.LoadSnapshot(ctx, s)
		if err != nil {
			return err
		}
		for _, e := range snap.Endpoints {
			if e.Value.NetworkID != netID {
				return fmt.Errorf("endpoint %s not yet completed from the engine", e.Value.ID)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// New containers start on the network and never get a running one's
	// address; they reach the old ones (same network: same profile).
	for i := 0; i < 3; i++ {
		c := runContainer(t, nw)
		ip := c.ip(t, nw)
		if ip == ipA || ip == ipB {
			t.Fatalf("a new container got %s, a running container's address", ip)
		}
		c.mustPing(t, ipA)
	}
}

// waitFor polls cond until it returns nil or d passes.
func waitFor(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}
