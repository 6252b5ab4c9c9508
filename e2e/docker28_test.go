//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// TestGwAllocCheck: Docker 28 asks the driver GwAllocCheck before IPAM;
// the answer (skip both) means no gateway address is reserved, with or
// without --subnet: the network shows none (or the unspecified address
// calico-ipam gives for "any pool") and calico-ipam, which refuses gateway
// requests, is never asked for one (the networks would not be created).
func TestGwAllocCheck(t *testing.T) {
	begin(t)
	needEngine(t, 28, "NetworkDriver.GwAllocCheck")
	off := logSize()
	for _, extra := range [][]string{nil, {"--subnet", "192.168.78.0/24"}, {"--ipv6"}} {
		net := newNetwork(t, extra...)
		for _, cfg := range inspectNetwork(t, net).IPAM.Config {
			if cfg.Gateway != "" && cfg.Gateway != "0.0.0.0" && cfg.Gateway != "::" {
				t.Errorf("network %s %v: Docker reserved gateway %s", net, extra, cfg.Gateway)
			}
		}
		c := runContainer(t, net)
		if ep := c.endpoint(t, net); ep.Gateway != gatewayV4 {
			t.Errorf("container gateway %q, want %s", ep.Gateway, gatewayV4)
		}
	}
	if n := strings.Count(logSince(off), "call=/NetworkDriver.GwAllocCheck"); n < 3 {
		t.Errorf("the daemon answered GwAllocCheck %d times for 3 networks", n)
	}
}

// TestIPv6Only: Docker 28's IPv6-only networks (--ipv4=false --ipv6): the
// container has an IPv6 address, an IPv6 default route and no IPv4 at all,
// reaches a peer and is reached; --ip6 picks its address on a subnet.
func TestIPv6Only(t *testing.T) {
	begin(t)
	needEngine(t, 28, "--ipv4=false")
	net := newNetwork(t, "--ipv4=false", "--ipv6")
	a, b := runContainer(t, net), runContainer(t, net)
	ea, eb := a.endpoint(t, net), b.endpoint(t, net)
	if ea.IPAddress != "" || ea.GlobalIPv6Address == "" {
		t.Fatalf("IPv6-only endpoint: IPv4 %q, IPv6 %q", ea.IPAddress, ea.GlobalIPv6Address)
	}
	if got := routeLines(t, a, "-4", "route"); len(got) != 0 {
		t.Errorf("IPv4 routes in an IPv6-only container: %v", got)
	}
	if got := strings.Join(routeLines(t, a, "-6", "route", "show", "default"), "\n"); !strings.Contains(got, "via "+gatewayV6) {
		t.Errorf("IPv6 default route %q, want via %s", got, gatewayV6)
	}
	assertHostSide(t, ea)
	a.mustPing(t, eb.GlobalIPv6Address)
	b.mustPing(t, ea.GlobalIPv6Address)

	sub := v6Subnet(t, 0x78)
	net6 := newNetwork(t, "--ipv4=false", "--ipv6", "--subnet", sub.String())
	want := sub.Addr().Next().Next().Next().String()
	c := runContainer(t, net6, "--ip6", want)
	if got := c.endpoint(t, net6).GlobalIPv6Address; got != want {
		t.Errorf("--ip6 %s gave %q", want, got)
	}
	d := runContainer(t, net6)
	d.mustPing(t, want)
}

// TestEndpointSysctls: per-endpoint sysctls (Docker 28:
// com.docker.network.endpoint.sysctls) are applied to the calico interface
// inside the container.
func TestEndpointSysctls(t *testing.T) {
	begin(t)
	needEngine(t, 28, "com.docker.network.endpoint.sysctls")
	net := newNetwork(t)
	c := runContainer(t, "name="+net+",driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.log_martians=1")
	dev := ifaceWith(t, c, c.ip(t, net))
	if got := c.exec(t, "cat", "/proc/sys/net/ipv4/conf/"+dev+"/log_martians"); got != "1" {
		t.Errorf("log_martians on %s = %q, want 1 (the endpoint sysctl)", dev, got)
	}
	peer := runContainer(t, net)
	c.mustPing(t, peer.ip(t, net))
}

// TestLiveRestore: with "live-restore": true the engine restarts under
// running containers: they keep running (same process) and reachable
// across the restart, and removing them afterwards leaves no veth, route,
// endpoint record or address behind (the engine may never send
// RevokeExternalConnectivity for them).
func TestLiveRestore(t *testing.T) {
	begin(t)
	restartEngine(t, `{"live-restore": true}`)
	t.Cleanup(func() { restartEngine(t, "{}") })
	net := newNetwork(t)
	netB := newNetwork(t)
	a, b := runContainer(t, net), runContainer(t, net)
	m := createOnNetworks(t, net, netB)
	ea, eb, em, emB := a.endpoint(t, net), b.endpoint(t, net), m.endpoint(t, net), m.endpoint(t, netB)
	pid := docker(t, "inspect", "-f", "{{.State.Pid}}", a.name)
	a.exec(t, "sh", "-c", fmt.Sprintf("ping -i 0.2 %s >/tmp/ping.log 2>&1 &", eb.IPAddress))

	restartEngine(t, "")
	if got := docker(t, "inspect", "-f", "{{.State.Pid}}", a.name); got != pid {
		t.Fatalf("container process %s became %s: it did not live through the engine restart", pid, got)
	}
	a.exec(t, "killall", "-INT", "ping")
	time.Sleep(300 * time.Millisecond)
	out := a.exec(t, "cat", "/tmp/ping.log")
	if sent, recv := pingCounts(out); sent < 5 || sent-recv > 1 {
		t.Errorf("ping across the engine restart: %d sent, %d received:\n%s", sent, recv, out)
	}
	a.mustPing(t, eb.IPAddress)
	m.mustPing(t, ea.IPAddress)
	for _, ep := range []endpoint{ea, eb, em, emB} {
		assertHostSide(t, ep)
	}
	// A container started after the restart works too.
	c := runContainer(t, net)
	c.mustPing(t, ea.IPAddress)

	for _, ct := range []*container{a, b, m} {
		docker(t, "rm", "-f", ct.name)
	}
	for _, ep := range []endpoint{ea, eb, em, emB} {
		assertHostSideGone(t, ep)
		assertNoRecord(t, ep)
	}
}

// assertNoRecord checks that the endpoint's record and its addresses are
// gone from the datastore.
func assertNoRecord(t *testing.T, ep endpoint) {
	t.Helper()
	st := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	items, err := datastore.List[api.Endpoint](ctx, st, api.EndpointsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Value.ID == ep.EndpointID {
			t.Errorf("endpoint record %s is still there", it.Key)
		}
		for _, a := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
			if a != "" && (strings.HasPrefix(api.PrefixText(it.Value.IPv4), a+"/") || strings.HasPrefix(api.PrefixText(it.Value.IPv6), a+"/")) {
				t.Errorf("address %s is still held by endpoint record %s", a, it.Key)
			}
		}
	}
}

func pingCounts(out string) (sent, recv int) {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "packets transmitted") {
			fmt.Sscanf(strings.TrimSpace(l), "%d packets transmitted, %d packets received", &sent, &recv)
		}
	}
	return sent, recv
}
