//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// TestZZNothingLeft runs last (files and tests run in name order): once
// every container and network of the suite is gone, no container or network
// of ours is left in Docker, no link carries our alias and no route carries
// our protocol number.
func TestZZNothingLeft(t *testing.T) {
	begin(t)
	if out := docker(t, "ps", "-aq", "--filter", "label="+labelArg()); out != "" {
		t.Errorf("containers of the suite left: %s", strings.Fields(out))
	}
	left := strings.Fields(docker(t, "network", "ls", "--format", "{{.Name}}", "--filter", "label="+labelArg()))
	var stale []string
	for _, name := range left {
		if !dockerStuck(name) {
			t.Errorf("network %s of the suite left", name)
			continue
		}
		stale = append(stale, name)
	}
	if len(stale) > 0 {
		// Docker's endpoint-count bug (see removeNetwork) goes away when the
		// engine restarts; then the networks must go too.
		t.Logf("networks %v are kept by Docker's stale endpoint count: restarting the engine to remove them", stale)
		restartEngine(t, "")
		for _, name := range stale {
			if _, errOut, err := dockerRun("network", "rm", name); err != nil {
				t.Errorf("network %s of the suite left even after an engine restart: %v: %s", name, err, errOut)
			}
		}
	}
	// No endpoint record of this host and no address in use: what tests
	// leaked on purpose (kill -9, a wiped datastore) the garbage collector
	// has released by now, once its grace period passed.
	s := openStore(t)
	if err := waitFor(2*suiteGCGrace+30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		snap, err := ipam.LoadSnapshot(ctx, s)
		if err != nil {
			return err
		}
		if len(snap.Endpoints) > 0 {
			return fmt.Errorf("%d endpoint records left (first %s)", len(snap.Endpoints), snap.Endpoints[0].Key)
		}
		r := snap.Check(ipam.CollectOptions{Now: time.Now(), Grace: suiteGCGrace})
		if r.InUse > 0 || len(snap.Handles) > 0 {
			return fmt.Errorf("%d addresses in use, %d handle records, garbage %v", r.InUse, len(snap.Handles), r.Garbage)
		}
		return nil
	}); err != nil {
		t.Errorf("datastore after the suite: %v", err)
	}
	links, err := ourLinks()
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range links {
		t.Errorf("link %s (alias %q) left behind", name, l.Alias)
	}
	routes, err := ourRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		t.Errorf("route %s dev %s proto %s left behind", r.Dst, r.Dev, routeProto)
	}
	// On a single host the only routes between hosts are the blackholes for
	// this host's blocks, which stay while the blocks are affine to it (the
	// suite removes them with its datastore at the very end).
	brs, err := blockRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range brs {
		if r.Type != "blackhole" {
			t.Errorf("route %s %s dev %s proto %s: a single host should have no routes to other hosts", r.Type, r.Dst, r.Dev, blockRouteProto)
		}
	}
	if !dmn.running() {
		t.Errorf("the daemon is not running at the end of the suite")
	}
}
