//go:build e2e

package e2e

import (
	"strings"
	"testing"
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
	for _, name := range strings.Fields(docker(t, "network", "ls", "--format", "{{.Name}}", "--filter", "label="+labelArg())) {
		if dockerStuck(name) {
			t.Logf("network %s is left only because of Docker's endpoint-count bug (see removeNetwork)", name)
			continue
		}
		t.Errorf("network %s of the suite left", name)
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
