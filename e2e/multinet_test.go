//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// ifaceWith returns the container interface holding ip.
func ifaceWith(t testing.TB, c *container, ip string) string {
	t.Helper()
	for _, l := range strings.Split(c.exec(t, "ip", "-o", "addr"), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && strings.HasPrefix(f[3], ip+"/") {
			return strings.TrimSuffix(f[1], ":")
		}
	}
	t.Fatalf("no interface of %s holds %s:\n%s", c.name, ip, c.exec(t, "ip", "-o", "addr"))
	return ""
}

// routeDev is the interface the container's kernel picks for dst.
func routeDev(t testing.TB, c *container, dst string) string {
	t.Helper()
	f := strings.Fields(c.exec(t, "ip", "route", "get", dst))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	t.Fatalf("ip route get %s in %s: no dev in %v", dst, c.name, f)
	return ""
}

func defaultDev(t testing.TB, c *container) string {
	t.Helper()
	for _, l := range routeLines(t, c, "-4", "route") {
		if f := strings.Fields(l); len(f) >= 5 && f[0] == "default" {
			return f[4]
		}
	}
	return ""
}

// waitRouteDev waits for the route to dst in c to leave through dev (the
// routes to a network's peers are added just after the interface appears).
func waitRouteDev(t testing.TB, c *container, dst, dev string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := routeDev(t, c, dst)
		if got == dev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s routes %s through %s, want %s (the network's own interface); routes:\n%s",
				c.name, dst, got, dev, strings.Join(routeLines(t, c, "route"), "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createOnNetworks makes a stopped container on the first network and
// connects the others before it starts (how Compose attaches a service to
// several networks on an engine older than API 1.44), then starts it.
func createOnNetworks(t testing.TB, nets ...string) *container {
	t.Helper()
	name := uniqueName(t, "m")
	t.Cleanup(func() { removeContainer(t, name) })
	docker(t, "create", "--label", labelArg(), "--name", name, "--net", nets[0], Image, "sleep", "3600")
	for _, n := range nets[1:] {
		docker(t, "network", "connect", n, name)
	}
	docker(t, "start", name)
	return &container{name: name}
}

// TestMultiNetwork: a container on several calico networks (two drawing
// from the same default pool, one with a subnet of its own): each
// network's interface works with its own gateway, the default route is on
// one of them, traffic to each network's peers leaves through that
// network's interface (each network's policy lets it in, another's would
// not), a network connected while running works at once, and disconnect
// removes exactly that interface, its address, its routes and its host
// side, also when it held the default route.
func TestMultiNetwork(t *testing.T) {
	begin(t)
	netA, netB := newNetwork(t), newNetwork(t)
	netC := newNetwork(t, "--subnet", "192.168.77.0/24")
	pa, pb, pc := runContainer(t, netA), runContainer(t, netB), runContainer(t, netC)
	ipA, ipB, ipC := pa.ip(t, netA), pb.ip(t, netB), pc.ip(t, netC)

	m := createOnNetworks(t, netA, netB)
	mA, mB := m.endpoint(t, netA), m.endpoint(t, netB)
	devA, devB := ifaceWith(t, m, mA.IPAddress), ifaceWith(t, m, mB.IPAddress)
	if devA == devB {
		t.Fatalf("both networks' addresses on %s", devA)
	}
	checkGatewaysAndDefault(t, m, netA, netB, mA, mB, devA, devB)

	waitRouteDev(t, m, ipA, devA)
	waitRouteDev(t, m, ipB, devB)
	m.mustPing(t, ipA)
	m.mustPing(t, ipB)
	pa.mustPing(t, mA.IPAddress)
	pb.mustPing(t, mB.IPAddress)
	// Isolation holds around the container on both networks.
	pa.mustNotPing(t, mB.IPAddress)
	pa.mustNotPing(t, ipB)

	// A peer that appears later gets its route too.
	pa2 := runContainer(t, netA)
	waitRouteDev(t, m, pa2.ip(t, netA), devA)
	m.mustPing(t, pa2.ip(t, netA))

	// Connected while running: works at once.
	docker(t, "network", "connect", netC, m.name)
	mC := m.endpoint(t, netC)
	devC := ifaceWith(t, m, mC.IPAddress)
	if !inPrefix(t, mC.IPAddress, "192.168.77.0/24") {
		t.Errorf("address %s on %s is outside its subnet", mC.IPAddress, netC)
	}
	waitRouteDev(t, m, ipC, devC)
	m.mustPing(t, ipC)
	pc.mustPing(t, mC.IPAddress)

	goneNet := disconnectNonDefault(t, m, netA, netB, mA, mB, devB, ipA, ipB)
	disconnectDefaultHolder(t, m, goneNet, netA, netB, netC, mA, mB, mC, ipA, ipB, ipC)
}

// checkGatewaysAndDefault checks the container m on netA and netB: a
// gateway of its own per network (one 169.254.1.1), reached through its
// network's interface; host sides in place; the default route on one of
// the two interfaces.
func checkGatewaysAndDefault(t *testing.T, m *container, netA, netB string, mA, mB endpoint, devA, devB string) {
	gws := map[string]bool{mA.Gateway: true, mB.Gateway: true}
	if len(gws) != 2 || !gws[gatewayV4] {
		t.Errorf("gateways %s (%s) and %s (%s): want 169.254.1.1 and another of its own", mA.Gateway, netA, mB.Gateway, netB)
	}
	for _, ep := range []endpoint{mA, mB} {
		assertHostSide(t, ep)
		if got := routeDev(t, m, ep.Gateway); got != ifaceWith(t, m, ep.IPAddress) {
			t.Errorf("gateway %s is reached through %s, not through its network's interface %s", ep.Gateway, got, ifaceWith(t, m, ep.IPAddress))
		}
	}
	if d := defaultDev(t, m); d != devA && d != devB {
		t.Fatalf("default route on %q, want one of %s, %s:\n%s", d, devA, devB, strings.Join(routeLines(t, m, "-4", "route"), "\n"))
	}
	t.Logf("%s: %s on %s (gateway %s), %s on %s (gateway %s), default via %s", m.name, mA.IPAddress, devA, mA.Gateway, mB.IPAddress, devB, mB.Gateway, defaultDev(t, m))
}

// disconnectNonDefault disconnects whichever of netA and netB does not
// hold m's default route and checks that exactly its interface went, the
// default stayed, and traffic to the gone network's peer now leaves
// through the other (whose policy turns it away). It returns the network
// it disconnected.
func disconnectNonDefault(t *testing.T, m *container, netA, netB string, mA, mB endpoint, devB, ipA, ipB string) string {
	def := defaultDev(t, m)
	gone, goneNet := mB, netB
	if def == devB {
		gone, goneNet = mA, netA
	}
	goneDev := ifaceWith(t, m, gone.IPAddress)
	docker(t, "network", "disconnect", goneNet, m.name)
	assertDisconnected(t, m, gone, goneDev)
	if got := defaultDev(t, m); got != def {
		t.Errorf("default route moved from %s to %s when another network was disconnected", def, got)
	}
	if goneNet == netB {
		m.mustNotPing(t, ipB) // left through A now: B's policy turns it away
		m.mustPing(t, ipA)
	} else {
		m.mustNotPing(t, ipA)
		m.mustPing(t, ipB)
	}
	return goneNet
}

// attachment is a network and the container's endpoint on it.
type attachment struct {
	net string
	ep  endpoint
}

// disconnectDefaultHolder disconnects the remaining network holding m's
// default route: the default moves to the other remaining interface,
// which keeps working; removing m then leaves no host side.
func disconnectDefaultHolder(t *testing.T, m *container, goneNet, netA, netB, netC string, mA, mB, mC endpoint, ipA, ipB, ipC string) {
	left := []attachment{{netC, mC}}
	if goneNet == netB {
		left = append(left, attachment{netA, mA})
	} else {
		left = append(left, attachment{netB, mB})
	}
	def := defaultDev(t, m)
	var holder, other attachment
	for _, l := range left {
		if ifaceWith(t, m, l.ep.IPAddress) == def {
			holder = l
		} else {
			other = l
		}
	}
	if holder.net == "" {
		t.Fatalf("default route on %s, which holds none of the remaining networks' addresses", def)
	}
	docker(t, "network", "disconnect", holder.net, m.name)
	assertDisconnected(t, m, holder.ep, def)
	otherDev := ifaceWith(t, m, other.ep.IPAddress)
	if got := defaultDev(t, m); got != otherDev {
		t.Fatalf("after disconnecting the default route's network the default is on %q, want %s:\n%s", got, otherDev, strings.Join(routeLines(t, m, "-4", "route"), "\n"))
	}
	peer := map[string]string{netA: ipA, netB: ipB, netC: ipC}[other.net]
	m.mustPing(t, peer)
	docker(t, "rm", "-f", m.name)
	assertHostSideGone(t, other.ep)
}

// assertDisconnected checks that the disconnected endpoint left nothing in
// the container (interface, address, routes through it) or on the host.
func assertDisconnected(t *testing.T, c *container, ep endpoint, dev string) {
	t.Helper()
	if out := c.exec(t, "ip", "-o", "addr"); strings.Contains(out, " "+dev+" ") || strings.Contains(out, ep.IPAddress+"/") {
		t.Errorf("after disconnect %s still has %s or %s:\n%s", c.name, dev, ep.IPAddress, out)
	}
	for _, l := range routeLines(t, c, "route") {
		if strings.Contains(l, "dev "+dev+" ") || strings.HasSuffix(l, "dev "+dev) || strings.Contains(l, ep.Gateway+" ") && ep.Gateway != gatewayV4 {
			t.Errorf("route left through the disconnected %s: %s", dev, l)
		}
	}
	assertHostSideGone(t, ep)
}

// TestMultiNetworkAtRun: Docker 28 attaches several networks at `docker
// run` (--network twice), and --gw-priority picks the one holding the
// default route.
func TestMultiNetworkAtRun(t *testing.T) {
	begin(t)
	needEngine(t, 28, "--network given twice and --gw-priority")
	netA, netB := newNetwork(t), newNetwork(t)
	pb := runContainer(t, netB)
	for _, prio := range []struct{ a, b int }{{0, 10}, {10, 0}} {
		t.Run(fmt.Sprintf("gw-priority A=%d B=%d", prio.a, prio.b), func(t *testing.T) {
			c := runContainer(t, fmt.Sprintf("name=%s,gw-priority=%d", netA, prio.a), "--network", fmt.Sprintf("name=%s,gw-priority=%d", netB, prio.b))
			devA, devB := ifaceWith(t, c, c.ip(t, netA)), ifaceWith(t, c, c.ip(t, netB))
			want := devB
			if prio.a > prio.b {
				want = devA
			}
			if got := defaultDev(t, c); got != want {
				t.Errorf("default route on %s, want %s (the higher --gw-priority):\n%s", got, want, strings.Join(routeLines(t, c, "-4", "route"), "\n"))
			}
			waitRouteDev(t, c, pb.ip(t, netB), devB)
			c.mustPing(t, pb.ip(t, netB))
		})
	}
}
