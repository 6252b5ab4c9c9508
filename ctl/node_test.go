package ctl

import (
	"context"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

func TestNodes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.addPool("p1", "10.10.0.0/16", 26)
	h.addNode(api.Node{Name: "host-1", IPv4Address: netip.MustParsePrefix("172.16.0.1/24"), IPv6Address: netip.MustParsePrefix("fd00:172::1/64"), LastSeen: testNow.Add(-7 * time.Second), Version: "v0.1.0"})
	// Calico's spelling (spec.bgp) and the legacy form are read too.
	h.ok(`apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: host-2}
spec:
  bgp: {ipv4Address: 172.16.0.2/24}
---
apiVersion: v1
kind: node
metadata: {name: host-3}
spec:
  bgp: {ipv4Address: 172.16.0.3, ipv6Address: "fd00:172::3/64"}
`, "create", "-f", "-")
	golden(t, "nodes_ps", h.ok("", "get", "nodes"))
	h.allocate("host-1", "docker.0", 4) // host-1 claims a block: BLOCKS shows it
	h.addClaim("host-1")                // host-1's daemon runs: DAEMON says live
	golden(t, "nodes_wide", h.ok("", "get", "nodes", "-o", "wide"))
	golden(t, "node_yaml", h.ok("", "get", "node", "host-1", "-o", "yaml"))

	// apply by the user keeps what the daemon reported.
	h.ok("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: host-1}\nspec: {ipv4Address: 172.16.0.11/24}\n", "apply", "-f", "-")
	var n api.Node
	if _, err := h.store.Get(ctx, api.NodeKey("host-1"), &n); err != nil {
		t.Fatal(err)
	}
	if api.PrefixText(n.IPv4Address) != "172.16.0.11/24" || n.IPv6Address.IsValid() || n.Version != "v0.1.0" || !n.LastSeen.Equal(testNow.Add(-7*time.Second)) {
		t.Errorf("node after apply: %+v", n)
	}
	// get -o yaml | apply round trips (status is accepted and ignored).
	h.ok(h.ok("", "get", "node", "host-1", "-o", "yaml"), "apply", "-f", "-")

	// Deleting a node frees its empty blocks and keeps those in use.
	ip := h.allocate("host-2", "docker.1", 4)
	h.allocate("host-2", "docker.2", 4)
	h.allocate("host-3", "docker.3", 4)
	if _, err := (newAllocator(h, "host-3")).Release(ctx, h.allocate("host-3", "docker.4", 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := newAllocator(h, "host-3").ReleaseByHandle(ctx, "docker.3"); err != nil {
		t.Fatal(err)
	}
	r := h.run("", "delete", "node", "host-2")
	if r.code != 0 || !strings.Contains(r.err, `Warning: Node "host-2" was deleted; its 1 blocks with 2 addresses in use are kept`) {
		t.Errorf("delete node host-2: exit %d, %q %q", r.code, r.out, r.err)
	}
	if got := h.ok("", "ipam", "show", "--ip", ip.String()); !strings.Contains(got, "is in use") {
		t.Errorf("address of a deleted node's container lost:\n%s", got)
	}
	r = h.run("", "delete", "node", "host-3")
	if r.code != 0 || r.err != "" {
		t.Errorf("delete node host-3: exit %d, %q %q", r.code, r.out, r.err)
	}
	if got := h.ok("", "ipam", "show", "--show-blocks"); strings.Contains(got, "host-3") {
		t.Errorf("host-3's empty block survived its node:\n%s", got)
	}
	golden(t, "nodes_after_delete", h.ok("", "get", "nodes", "-o", "wide"))
}

func TestNodeStatus(t *testing.T) {
	h := newHarness(t)
	h.addPool("p1", "10.10.0.0/16", 26)
	h.addNode(api.Node{Name: "host-1", IPv4Address: netip.MustParsePrefix("172.16.0.1/24"), LastSeen: testNow.Add(-4 * time.Second), Version: "v0.1.0"})
	h.allocate("host-1", "docker.1", 4)
	h.allocate("host-1", "docker.2", 4)
	h.allocate("host-2", "docker.3", 4)

	// No daemon: exit 1 with Calico's words, and the rest still reported.
	r := h.run("", "node", "status")
	if r.code != 1 || r.err != "" {
		t.Errorf("node status without a daemon: exit %d, stderr %q", r.code, r.err)
	}
	golden(t, "node_status_not_running", maskDirs(h, r.out))

	fakeDaemon(t, h.pluginDir, "v0.1.0", api.NetworkSocket, api.IPAMSocket)
	h.addClaim("host-1")
	golden(t, "node_status_running", maskDirs(h, h.ok("", "node", "status")))

	// Another name, with no record and no blocks.
	golden(t, "node_status_other", maskDirs(h, h.ok("", "node", "status", "--nodename", "host-9")))
	h.env["NODENAME"] = "host-2"
	if out := h.ok("", "node", "status"); !strings.Contains(out, "Blocks owned by host-2:") {
		t.Errorf("NODENAME not used:\n%s", out)
	}
}

func TestNodeStatusAgents(t *testing.T) {
	h := newHarness(t)
	fakeDaemon(t, h.pluginDir, "", api.IPAMSocket)
	st := api.DaemonStatus{Node: "host-1", Agents: []api.AgentStatus{
		{Name: "policy", LastPass: testNow.Add(-3 * time.Second), TookMillis: 12, Passes: 7},
		{Name: "routing", LastPass: testNow.Add(-2 * time.Second), TookMillis: 4, Passes: 9, Failures: 2, LastError: "add route 10.1.0.0/26: no such device"},
	}, Readiness: &api.Readiness{Checks: []api.ReadyCheck{
		{Name: "datastore", OK: true, Detail: "etcd at unix:///x answers"},
		{Name: "dataplane", Detail: "routing: add route 10.1.0.0/26: no such device"},
	}}}
	fakeStatusDaemon(t, filepath.Join(h.pluginDir, api.NetworkSocket), st)
	out := h.ok("", "node", "status")
	for _, want := range []string{"Agents:", "AGENT", "policy", "ok", "routing", "failing: add route 10.1.0.0/26: no such device",
		"Readiness (as /readyz answers): NOT READY", "datastore  ok       etcd at unix:///x answers", "dataplane  FAILING  routing: add route"} {
		if !strings.Contains(out, want) {
			t.Errorf("node status does not show %q:\n%s", want, out)
		}
	}
}

// A pool carried by another encapsulation is noted under the route sync,
// next to what this host's kernel lacks.
func TestNodeStatusEncapsulationFallback(t *testing.T) {
	h := newHarness(t)
	fakeDaemon(t, h.pluginDir, "", api.IPAMSocket)
	note := "pool default asks for IPIP to node host-3, but host-3's kernel has no ipip: carried by VXLAN instead"
	st := api.DaemonStatus{Node: "host-1",
		Routing:  api.RoutingStatus{LastApply: testNow.Add(-time.Second), Routes: 3, Synced: true, Notes: []string{note}},
		Carriers: []api.CarrierSupport{{Mode: "vxlan", Available: true}, {Mode: "ipip", Available: true}}}
	fakeStatusDaemon(t, filepath.Join(h.pluginDir, api.NetworkSocket), st)
	out := h.ok("", "node", "status")
	for _, want := range []string{"3 routes to other hosts' blocks", "  note: " + note, "ipip   available"} {
		if !strings.Contains(out, want) {
			t.Errorf("node status does not show %q:\n%s", want, out)
		}
	}
}

// The data path in use is shown: the eBPF redirect path with its counts,
// or the kernel's path with the reason.
func TestNodeStatusDataPath(t *testing.T) {
	for _, tc := range []struct {
		name string
		dp   *api.DataPathStatus
		want string
	}{
		{"on", &api.DataPathStatus{Redirect: true, Endpoints: 4, Uplinks: 2, ToEndpoint: 900, Out: 800, Passed: 12},
			"Data path:\n  eBPF redirect on 4 endpoints and 2 uplinks/tunnels; packets redirected into containers 900, out 800, left to the kernel 12\n"},
		{"on, with VXLAN", &api.DataPathStatus{Redirect: true, Endpoints: 1, Uplinks: 2, ToEndpoint: 50, Decapsulated: 40, Out: 70, Encapsulated: 60},
			"left to the kernel 0\n  VXLAN done by the eBPF path: 60 packets encapsulated, 40 taken apart\n"},
		{"off", &api.DataPathStatus{Reason: "turned off (--bpf-redirect off)"},
			"Data path:\n  kernel forwarding only (nftables): turned off (--bpf-redirect off)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			fakeDaemon(t, h.pluginDir, "", api.IPAMSocket)
			st := api.DaemonStatus{Node: "host-1", Routing: api.RoutingStatus{LastApply: testNow.Add(-time.Second), Synced: true}, DataPath: tc.dp}
			fakeStatusDaemon(t, filepath.Join(h.pluginDir, api.NetworkSocket), st)
			if out := h.ok("", "node", "status"); !strings.Contains(out, tc.want) {
				t.Errorf("node status does not show %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestNodeStatusHalfRunning(t *testing.T) {
	h := newHarness(t)
	fakeDaemon(t, h.pluginDir, "", api.NetworkSocket)
	r := h.run("", "node", "status")
	if r.code != 1 || !strings.HasPrefix(r.out, "Calico process is not running: it serves only one of its plugin sockets.") ||
		!strings.Contains(r.out, "calico-ipam.sock: not serving: socket does not exist") {
		t.Errorf("half-running daemon: exit %d\n%s", r.code, r.out)
	}
}

func TestNodeStatusDatastoreDown(t *testing.T) {
	h := newHarness(t)
	fakeDaemon(t, h.pluginDir, "", api.NetworkSocket, api.IPAMSocket)
	delete(h.env, "ETCD_ENDPOINTS")
	r := h.run("", "node", "status")
	if r.code != 0 || !strings.Contains(r.out, "Datastore:\n  not reachable: no datastore configured") {
		t.Errorf("node status without a datastore: exit %d\n%s%s", r.code, r.out, r.err)
	}
}

func TestVersion(t *testing.T) {
	h := newHarness(t)
	golden(t, "version_no_daemon", maskDirs(h, h.ok("", "version")))
	fakeDaemon(t, h.pluginDir, "", api.NetworkSocket, api.IPAMSocket)
	if out := h.ok("", "version"); !strings.Contains(out, "does not report its version") {
		t.Errorf("version, daemon without Calico.Version:\n%s", out)
	}
	// The version the daemon put in this node's record.
	h.addNode(api.Node{Name: "host-1", Version: "v0.0.9"})
	if out := h.ok("", "version"); !strings.Contains(out, "Daemon Version:    v0.0.9 (from node host-1's record)") {
		t.Errorf("version from the node record:\n%s", out)
	}
	h2 := newHarness(t)
	fakeDaemon(t, h2.pluginDir, "v0.2.0", api.NetworkSocket, api.IPAMSocket)
	golden(t, "version_daemon", maskDirs(h2, h2.ok("", "version")))
}

var commitRE = regexp.MustCompile(`(?m)^(Git commit: +)\S+`)

func maskDirs(h *harness, s string) string {
	s = strings.ReplaceAll(s, h.pluginDir, "<plugin-dir>")
	s = strings.ReplaceAll(s, h.store.Endpoints()[0], "<etcd>")
	s = strings.ReplaceAll(s, h.dataDir, "<data-dir>")
	return commitRE.ReplaceAllString(s, "${1}<commit>")
}

// TestGetShowsUndecodableNode: a node record someone wrote by hand with an
// address that is no address is listed, marked invalid, beside the valid
// ones; node status says its record cannot be read.
func TestGetShowsUndecodableNode(t *testing.T) {
	h := newHarness(t)
	h.addNode(api.Node{Name: "host-1", IPv4Address: netip.MustParsePrefix("172.16.0.1/24"), LastSeen: testNow})
	if _, err := h.store.CAS(context.Background(), nil, []datastore.Op{datastore.PutRaw(api.NodeKey("host-2"), `{"name":"host-2","ipv4Address":"ten"}`)}); err != nil {
		t.Fatal(err)
	}
	r := h.run("", "get", "nodes", "-o", "wide")
	if r.code != 0 {
		t.Fatalf("get nodes: exit %d: %s", r.code, r.err)
	}
	for _, want := range []string{"host-1", "172.16.0.1/24", "Valid", "host-2", `Invalid: undecodable: ipv4Address: "ten" is not an IP address`} {
		if !strings.Contains(r.out, want) {
			t.Errorf("get nodes -o wide lacks %q:\n%s", want, r.out)
		}
	}
	if !strings.Contains(r.err, `Warning: Node "host-2" is invalid`) {
		t.Errorf("no warning for the invalid node:\n%s", r.err)
	}
}
