//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// routeLines returns `ip route` output inside c as trimmed lines.
func routeLines(t testing.TB, c *container, args ...string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(c.exec(t, append([]string{"ip"}, args...)...), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestContainerRoutes: inside the container there is cali0 with a /32 and
// exactly two IPv4 routes, the default via 169.254.1.1 and the on-link
// route to it; an IPv4-only network gives no IPv6 default route.
func TestContainerRoutes(t *testing.T) {
	begin(t)
	net := newNetwork(t)
	c := runContainer(t, net)
	ep := c.endpoint(t, net)

	want := []string{"default via " + gatewayV4 + " dev cali0", gatewayV4 + " dev cali0 scope link"}
	if got := routeLines(t, c, "-4", "route"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("routes inside the container:\n%s\nwant exactly:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := routeLines(t, c, "-6", "route", "show", "default"); len(got) != 0 {
		t.Errorf("IPv4-only container has an IPv6 default route: %q", got)
	}
	if ep.Gateway != gatewayV4 {
		t.Errorf("docker reports gateway %q, want %s", ep.Gateway, gatewayV4)
	}
	ifaces := strings.Fields(c.exec(t, "ls", "/sys/class/net"))
	sort.Strings(ifaces)
	if strings.Join(ifaces, " ") != "cali0 lo" {
		t.Errorf("container interfaces %v, want cali0 and lo", ifaces)
	}
	if got := c.exec(t, "ip", "-o", "-4", "addr", "show", "dev", "cali0"); !strings.Contains(got, "inet "+ep.IPAddress+"/32 ") {
		t.Errorf("cali0 address: %q, want %s/32", got, ep.IPAddress)
	}
	if got := c.exec(t, "cat", "/sys/class/net/cali0/address"); got != ep.MacAddress {
		t.Errorf("cali0 MAC %s, docker reports %s", got, ep.MacAddress)
	}
	// The gateway is answered by proxy ARP with the host side's MAC.
	// Nothing answers ICMP for 169.254.1.1, but sending to it resolves it.
	dockerRun("exec", c.name, "ping", "-c", "1", "-W", "1", gatewayV4)
	if got := c.exec(t, "ip", "neigh", "show", gatewayV4); !strings.Contains(got, hostMAC) {
		t.Errorf("neighbour entry for %s inside the container: %q, want lladdr %s (proxy ARP)", gatewayV4, got, hostMAC)
	}
}

// TestHostSide: on the host, each container has a `cali` + 11 characters of
// the endpoint ID veth with MAC ee:ee:ee:ee:ee:ee, our alias, proxy_arp=1
// and a proto 77 scope link route to the container's /32; forwarding is on
// and FORWARD jumps to our chain.
func TestHostSide(t *testing.T) {
	begin(t)
	net := newNetwork(t)
	c := runContainer(t, net)
	ep := c.endpoint(t, net)
	assertHostSide(t, ep)
	name := ep.hostIface()
	if got := sysctl(t, "net/ipv4/conf/"+name+"/proxy_arp"); got != "1" {
		t.Errorf("%s proxy_arp = %s, want 1", name, got)
	}
	if got := sysctl(t, "net/ipv4/ip_forward"); got != "1" {
		t.Errorf("net.ipv4.ip_forward = %s, want 1", got)
	}
	if hl, mtu := hostLink(t, name), c.exec(t, "cat", "/sys/class/net/cali0/mtu"); hl != nil && fmt.Sprint(hl.MTU) != mtu {
		t.Errorf("MTU: host side %d, container side %s", hl.MTU, mtu)
	}
	if rules := runOut(t, "iptables", "-S", "FORWARD"); !strings.Contains(rules, "-j CALICO-LIBNETWORK-FWD") {
		t.Errorf("FORWARD does not jump to CALICO-LIBNETWORK-FWD:\n%s", rules)
	}
}

// TestPing: two containers on one network ping each other and the host
// reaches them; a container on another calico network does not (networks
// are isolated by default), in either direction, by ICMP or TCP, unless its
// network is open (-o open=true), which lets others in but not it out.
func TestPing(t *testing.T) {
	begin(t)
	net1 := newNetwork(t)
	net2 := newNetwork(t, "--subnet", "192.168.202.0/24")
	a, b := runContainer(t, net1), runContainer(t, net1)
	c := runContainer(t, net2)
	aIP, bIP, cIP := a.ip(t, net1), b.ip(t, net1), c.ip(t, net2)
	a.mustPing(t, bIP)
	b.mustPing(t, aIP)
	c.mustNotPing(t, aIP)
	a.mustNotPing(t, cIP)
	if err := hostPing(bIP); err != nil {
		t.Error(err)
	}
	if err := hostPing(cIP); err != nil {
		t.Error(err)
	}
	docker(t, "exec", "-d", c.name, "sh", "-c", "while true; do echo hello | nc -l -p 8081; done")
	if a.tcpReach(cIP, 8081) {
		t.Errorf("TCP from %s (%s) reached %s:8081 on another network", a.name, net1, cIP)
	}
	open := newNetwork(t, "--subnet", "192.168.203.0/24", "-o", "open=true")
	o := runContainer(t, open)
	oIP := o.ip(t, open)
	a.mustPing(t, oIP) // into the open network: allowed
	o.mustNotPing(t, aIP)
	docker(t, "exec", "-d", o.name, "sh", "-c", "while true; do echo hello | nc -l -p 8082; done")
	reached := false
	for i := 0; i < 10 && !reached; i++ {
		reached = c.tcpReach(oIP, 8082)
	}
	if !reached {
		t.Errorf("TCP from %s into the open network's %s:8082 failed", c.name, oIP)
	}
	// TCP too, not just ICMP.
	docker(t, "exec", "-d", b.name, "sh", "-c", "echo hello-from-b | nc -l -p 8080")
	var got string
	for i := 0; i < 20 && got != "hello-from-b"; i++ {
		got, _, _ = dockerRun("exec", a.name, "sh", "-c", "nc -w 2 "+bIP+" 8080 </dev/null")
	}
	if got != "hello-from-b" {
		t.Errorf("TCP from %s to %s:8080 read %q, want hello-from-b", a.name, bIP, got)
	}
}

// TestStaticIP: --ip on a --subnet network gives exactly that address; the
// same address for a second container fails with a clear message and
// leaves nothing behind; an address outside the subnet is refused.
func TestStaticIP(t *testing.T) {
	begin(t)
	net := newNetwork(t, "--subnet", "192.168.203.0/24")
	const ip = "192.168.203.10"
	a := runContainer(t, net, "--ip", ip)
	ep := a.endpoint(t, net)
	if ep.IPAddress != ip {
		t.Fatalf("docker run --ip %s got %s", ip, ep.IPAddress)
	}
	if got := a.exec(t, "ip", "-o", "-4", "addr", "show", "dev", "cali0"); !strings.Contains(got, "inet "+ip+"/32 ") {
		t.Errorf("cali0 inside: %q, want %s/32", got, ip)
	}
	assertHostSide(t, ep)

	linksBefore, err := ourLinks()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ip string
		want     []string
	}{
		{"address in use", ip, []string{ip, "already in use"}},
		{"address outside the subnet", "192.168.99.10", []string{"192.168.99.10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := tryRunContainer(t, net, "--ip", tc.ip)
			if err == nil {
				t.Fatalf("docker run --ip %s succeeded, want an error", tc.ip)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("docker run --ip %s: error %q does not say %q", tc.ip, stderr, w)
				}
			}
		})
	}
	linksAfter, err := ourLinks()
	if err != nil {
		t.Fatal(err)
	}
	if len(linksAfter) != len(linksBefore) {
		t.Errorf("failed docker runs left links behind: before %v, after %v", keys(linksBefore), keys(linksAfter))
	}
	// The first container is unharmed.
	b := runContainer(t, net)
	b.mustPing(t, ip)
	if b.ip(t, net) == ip {
		t.Errorf("second container was also given %s", ip)
	}
}

// TestMACAddress: --mac-address is what the container's cali0 carries, and
// the container is reachable with it.
func TestMACAddress(t *testing.T) {
	begin(t)
	net := newNetwork(t)
	const mac = "02:e2:e0:12:34:56"
	a := runWithMAC(t, net, mac)
	ep := a.endpoint(t, net)
	if ep.MacAddress != mac {
		t.Errorf("docker reports MAC %s, want %s", ep.MacAddress, mac)
	}
	if got := a.exec(t, "cat", "/sys/class/net/cali0/address"); got != mac {
		t.Errorf("cali0 inside has MAC %s, want %s", got, mac)
	}
	assertHostSide(t, ep) // host side keeps ee:ee:ee:ee:ee:ee
	b := runContainer(t, net)
	b.mustPing(t, ep.IPAddress)
	a.mustPing(t, b.ip(t, net))
}

// runWithMAC starts a container on network with a fixed MAC. A docker CLI
// newer than the engine (CLI >= 25 against an engine with API < 1.44, as
// with Docker 20.10) refuses `--mac-address` together with `--net`; then the
// container is created through the engine API, where the MAC goes in the
// container config as older CLIs sent it.
func runWithMAC(t *testing.T, network, mac string) *container {
	t.Helper()
	c, stderr, err := tryRunContainer(t, network, "--mac-address", mac)
	if err == nil {
		return c
	}
	if !strings.Contains(stderr, "requires API version") {
		t.Fatalf("docker run --mac-address %s: %v: %s", mac, err, stderr)
	}
	t.Logf("the docker CLI refused --mac-address (%s); using the engine API", stderr)
	removeContainer(t, c.name)
	api := unixClient(dockerSocket())
	var ver struct {
		APIVersion string `json:"ApiVersion"`
	}
	if err := getJSON(api, "/version", &ver); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{
		"Image":      Image,
		"Cmd":        []string{"sleep", "3600"},
		"MacAddress": mac,
		"Labels":     map[string]string{Label: runID},
		"HostConfig": map[string]any{"NetworkMode": network},
	})
	resp, err := api.Post("http://docker/v"+ver.APIVersion+"/containers/create?name="+c.name, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("engine API container create: HTTP %d: %s", resp.StatusCode, out)
	}
	docker(t, "start", c.name)
	return c
}

func dockerSocket() string {
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		return strings.TrimPrefix(h, "unix://")
	}
	return "/var/run/docker.sock"
}

func getJSON(c *http.Client, path string, v any) error {
	resp, err := c.Get("http://docker" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestIPv6DualStack: an --ipv6 network gives each container an IPv4 /32 and
// an IPv6 /128 from the default pools, an IPv6 default route via
// fe80::ecee:eeff:feee:eeee, host routes and proxy_ndp for both; containers
// ping each other over IPv6 and IPv4. --ip6 works on a network with an IPv6
// --subnet.
func TestIPv6DualStack(t *testing.T) {
	begin(t)
	if sysctl(t, "net/ipv6/conf/all/disable_ipv6") == "1" {
		t.Fatal("IPv6 is disabled on this host (net.ipv6.conf.all.disable_ipv6=1)")
	}
	t.Run("default pools", func(t *testing.T) {
		net := newNetwork(t, "--ipv6")
		if !inspectNetwork(t, net).EnableIPv6 {
			t.Errorf("network %s is not IPv6-enabled", net)
		}
		a, b := runContainer(t, net), runContainer(t, net)
		for _, c := range []*container{a, b} {
			ep := c.endpoint(t, net)
			if !inPrefix(t, ep.IPAddress, defaultPool) {
				t.Errorf("%s IPv4 %s not in %s", c.name, ep.IPAddress, defaultPool)
			}
			if ep.GlobalIPv6Address == "" {
				t.Fatalf("%s has no IPv6 address", c.name)
			}
			if defaultV6 != "" && !inPrefix(t, ep.GlobalIPv6Address, defaultV6) {
				t.Errorf("%s IPv6 %s not in the default IPv6 pool %s", c.name, ep.GlobalIPv6Address, defaultV6)
			}
			if ep.GlobalIPv6PrefixLen != 128 {
				t.Errorf("%s IPv6 prefix length %d, want 128", c.name, ep.GlobalIPv6PrefixLen)
			}
			assertIPv6Endpoint(t, c, ep)
		}
		epA, epB := a.endpoint(t, net), b.endpoint(t, net)
		a.mustPing(t, epB.GlobalIPv6Address)
		b.mustPing(t, epA.GlobalIPv6Address)
		a.mustPing(t, epB.IPAddress)
		if err := hostPing(epA.GlobalIPv6Address); err != nil {
			t.Error(err)
		}
	})
	t.Run("--ip6 on an IPv6 --subnet", func(t *testing.T) {
		sub := v6Subnet(t, 0x204)
		net := newNetwork(t, "--ipv6", "--subnet", "192.168.204.0/24", "--subnet", sub.String())
		ip6 := netip.AddrFrom16(func() [16]byte { b := sub.Addr().As16(); b[15] = 5; return b }()).String()
		a := runContainer(t, net, "--ip", "192.168.204.5", "--ip6", ip6)
		ep := a.endpoint(t, net)
		if ep.IPAddress != "192.168.204.5" || ep.GlobalIPv6Address != ip6 {
			t.Errorf("got %s and %s, want 192.168.204.5 and %s", ep.IPAddress, ep.GlobalIPv6Address, ip6)
		}
		assertIPv6Endpoint(t, a, ep)
		b := runContainer(t, net)
		epB := b.endpoint(t, net)
		if !inPrefix(t, epB.GlobalIPv6Address, sub.String()) {
			t.Errorf("second container's IPv6 %s is not in --subnet %s", epB.GlobalIPv6Address, sub)
		}
		b.mustPing(t, ip6)
		a.mustPing(t, epB.GlobalIPv6Address)
	})
}

func assertIPv6Endpoint(t *testing.T, c *container, ep endpoint) {
	t.Helper()
	assertHostSide(t, ep)
	if got := c.exec(t, "ip", "-o", "-6", "addr", "show", "dev", "cali0", "scope", "global"); !strings.Contains(got, "inet6 "+ep.GlobalIPv6Address+"/128 ") {
		t.Errorf("cali0 inside %s: %q, want %s/128", c.name, got, ep.GlobalIPv6Address)
	}
	if got := routeLines(t, c, "-6", "route", "show", "default"); len(got) != 1 || !strings.HasPrefix(got[0], "default via "+gatewayV6+" dev cali0") {
		t.Errorf("IPv6 default route inside %s: %q, want default via %s dev cali0", c.name, got, gatewayV6)
	}
	if got := sysctl(t, "net/ipv6/conf/"+ep.hostIface()+"/proxy_ndp"); got != "1" {
		t.Errorf("%s proxy_ndp = %s, want 1", ep.hostIface(), got)
	}
}

// TestRemoveCleansUp: `docker rm` removes the veth, the host route and the
// address allocation: the same address can be taken again with --ip. A
// `docker stop`/`docker start` cycle brings the networking back.
func TestRemoveCleansUp(t *testing.T) {
	begin(t)
	net := newNetwork(t, "--subnet", "192.168.205.0/24")
	const ip = "192.168.205.20"
	a := runContainer(t, net, "--ip", ip)
	epA := a.endpoint(t, net)
	assertHostSide(t, epA)
	removeContainer(t, a.name)
	assertHostSideGone(t, epA)

	b := runContainer(t, net, "--ip", ip)
	epB := b.endpoint(t, net)
	if epB.IPAddress != ip {
		t.Fatalf("after docker rm, --ip %s gave %s", ip, epB.IPAddress)
	}
	assertHostSide(t, epB)
	c := runContainer(t, net)
	c.mustPing(t, ip)

	t.Run("stop and start", func(t *testing.T) {
		docker(t, "stop", "-t", "0", b.name)
		assertHostSideGone(t, epB)
		docker(t, "start", b.name)
		ep := b.endpoint(t, net)
		if ep.IPAddress != ip {
			t.Errorf("after docker start, address %s, want %s", ep.IPAddress, ip)
		}
		assertHostSide(t, ep)
		c.mustPing(t, ip)
		b.mustPing(t, c.ip(t, net))
	})
}

// TestConcurrentStart16: 16 containers started at once get 16 distinct
// addresses, and every one of them works (each pings the next).
func TestConcurrentStart16(t *testing.T) {
	begin(t)
	const n = 16
	net := newNetwork(t)
	cs := make([]*container, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, stderr, err := tryRunContainer(t, net)
			cs[i] = c
			if err != nil {
				errs[i] = fmt.Errorf("docker run #%d: %v: %s", i, err, stderr)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	eps := make([]endpoint, n)
	owner := map[string]string{}
	for i, c := range cs {
		eps[i] = c.endpoint(t, net)
		if o, dup := owner[eps[i].IPAddress]; dup {
			t.Errorf("address %s given to both %s and %s", eps[i].IPAddress, o, c.name)
		}
		owner[eps[i].IPAddress] = c.name
		if !inPrefix(t, eps[i].IPAddress, defaultPool) {
			t.Errorf("%s got %s, not in %s", c.name, eps[i].IPAddress, defaultPool)
		}
		assertHostSide(t, eps[i])
	}
	pingErrs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pingErrs[i] = cs[i].ping(eps[(i+1)%n].IPAddress)
		}()
	}
	wg.Wait()
	for _, err := range pingErrs {
		if err != nil {
			t.Error(err)
		}
	}
	// Removing them at once leaves nothing behind.
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			removeContainer(t, cs[i].name)
		}()
	}
	wg.Wait()
	for _, ep := range eps {
		assertHostSideGone(t, ep)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestForwardJumpAfterDockerUser: after Docker makes a bridge network
// (which inserts its rules at the top of FORWARD and puts DOCKER-USER
// first again, on 20.10; on 28 they go to DOCKER-FORWARD), the daemon's
// repair pass (every 30 s) puts our jump right after DOCKER-USER, so cali
// traffic walks none of Docker's rules; containers still reach each other.
func TestForwardJumpAfterDockerUser(t *testing.T) {
	begin(t)
	net := newNetwork(t)
	a, b := runContainer(t, net), runContainer(t, net)
	bridge := uniqueName(t, "bridge")
	docker(t, "network", "create", "--driver", "bridge", "--subnet", "172.31.250.0/24", bridge)
	t.Cleanup(func() { removeNetwork(t, bridge) })
	position := func() (string, int, int) {
		rules := runOut(t, "iptables", "-S", "FORWARD")
		user, ours, n := 0, 0, 0
		for _, l := range strings.Split(rules, "\n") {
			if !strings.HasPrefix(l, "-A FORWARD ") {
				continue
			}
			n++
			switch {
			case l == "-A FORWARD -j DOCKER-USER" && user == 0:
				user = n
			case strings.HasSuffix(l, "-j "+forwardChain) && strings.Contains(l, "calico-libnetwork"):
				ours = n
			}
		}
		return rules, user, ours
	}
	rules, user, ours := position()
	t.Logf("FORWARD right after docker network create (DOCKER-USER at %d, ours at %d):\n%s", user, ours, rules)
	if user == 0 {
		t.Fatalf("no jump to DOCKER-USER in FORWARD: this engine does not lay FORWARD out as the test expects:\n%s", rules)
	}
	eventually(t, 40*time.Second, "our FORWARD jump right after DOCKER-USER", func() bool {
		rules, user, ours = position()
		return ours == user+1
	})
	if n := strings.Count(rules, "-j "+forwardChain); n != 1 {
		t.Errorf("FORWARD holds %d jumps to %s, want 1:\n%s", n, forwardChain, rules)
	}
	a.mustPing(t, b.ip(t, net))
}
