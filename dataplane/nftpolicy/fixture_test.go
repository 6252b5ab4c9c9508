package nftpolicy

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// The test host: a namespace with an uplink (so proxy ARP answers for
// 169.254.1.1), forwarding on, and container-like namespaces attached the
// way the daemon attaches them: host veth cali…, MAC ee:ee:ee:ee:ee:ee,
// proxy_arp, a /32 (and /128) host route; inside, cali0 with a /32 and a
// default route via 169.254.1.1 (IPv6: via the host veth's link-local).

const (
	node        = "node-a"
	hostAddr4   = "10.99.99.1"
	hostAddr6   = "fd99::1"
	gateway6    = "fe80::ecee:eeff:feee:eeee"
	listenPorts = "80,5432"
	tcpTimeout  = time.Second
)

type testEP struct {
	policy.Endpoint
	ns       ns.NetNS
	ip4, ip6 netip.Addr
}

type testHost struct {
	t     *testing.T
	ns    ns.NetNS
	eps   map[string]*testEP
	model *policy.Model
	enf   *Enforcer
}

func run(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	out, err := testns.Run(n, args[0], args[1:]...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func writeSysctl(t *testing.T, n ns.NetNS, path, v string) {
	t.Helper()
	testns.Do(t, n, func() {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			t.Fatalf("sysctl %s: %v", path, err)
		}
	})
}

func newTestHost(t *testing.T) *testHost {
	t.Helper()
	host := testns.New(t)
	writeSysctl(t, host, "/proc/sys/net/ipv6/conf/default/accept_dad", "0")
	writeSysctl(t, host, "/proc/sys/net/ipv6/conf/all/accept_dad", "0")
	for _, args := range [][]string{
		{"ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"},
		{"ip", "addr", "add", hostAddr4 + "/24", "dev", "uplink0"},
		{"ip", "-6", "addr", "add", hostAddr6 + "/64", "dev", "uplink0", "nodad"},
		{"ip", "link", "set", "uplink0", "up"},
		{"ip", "link", "set", "uplink1", "up"},
		{"ip", "route", "add", "default", "via", "10.99.99.2"},
	} {
		run(t, host, args...)
	}
	writeSysctl(t, host, "/proc/sys/net/ipv4/ip_forward", "1")
	writeSysctl(t, host, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
	serveOK(t, host)
	enf, err := New(Config{NetNS: int(host.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	return &testHost{t: t, ns: host, eps: map[string]*testEP{}, enf: enf,
		model: &policy.Model{Profiles: []api.Profile{
			policy.DefaultProfile("net1", "calico/network", "net1", false),
			policy.DefaultProfile("net2", "calico/network", "net2", false),
		}}}
}

// addEndpoint makes the namespace and veth of an endpoint and adds it to the
// model (not yet to the kernel's policy: call apply).
func (h *testHost) addEndpoint(name, iface, ip4, ip6, network string, labels map[string]string) *testEP {
	t := h.t
	t.Helper()
	c := testns.New(t)
	ep := &testEP{ns: c, ip4: netip.MustParseAddr(ip4)}
	ep.Endpoint = policy.Endpoint{Name: name, Node: node, Iface: iface, Labels: labels, Profiles: []string{network}, IPs: []netip.Addr{ep.ip4}}
	if ip6 != "" {
		ep.ip6 = netip.MustParseAddr(ip6)
		ep.IPs = append(ep.IPs, ep.ip6)
	}
	tmp := "tmp" + iface[len(iface)-4:]
	for _, args := range [][]string{
		{"ip", "link", "add", iface, "type", "veth", "peer", "name", tmp},
		{"ip", "link", "set", iface, "address", "ee:ee:ee:ee:ee:ee"},
	} {
		run(t, h.ns, args...)
	}
	writeSysctl(t, h.ns, "/proc/sys/net/ipv4/conf/"+iface+"/proxy_arp", "1")
	writeSysctl(t, h.ns, "/proc/sys/net/ipv4/neigh/"+iface+"/proxy_delay", "0")
	for _, args := range [][]string{
		{"ip", "link", "set", iface, "up"},
		{"ip", "link", "set", tmp, "netns", c.Path()},
		{"ip", "route", "add", ip4 + "/32", "dev", iface},
	} {
		run(t, h.ns, args...)
	}
	steps := [][]string{
		{"ip", "link", "set", tmp, "name", "cali0"},
		{"ip", "addr", "add", ip4 + "/32", "dev", "cali0"},
		{"ip", "link", "set", "cali0", "up"},
		{"ip", "route", "add", "169.254.1.1", "dev", "cali0", "scope", "link"},
		{"ip", "route", "add", "default", "via", "169.254.1.1", "dev", "cali0"},
	}
	if ip6 != "" {
		run(t, h.ns, "ip", "-6", "route", "add", ip6+"/128", "dev", iface)
		steps = append(steps,
			[]string{"ip", "-6", "addr", "add", ip6 + "/128", "dev", "cali0", "nodad"},
			[]string{"ip", "-6", "route", "add", "default", "via", gateway6, "dev", "cali0"})
	}
	for _, args := range steps {
		run(t, c, args...)
	}
	serveOK(t, c)
	h.eps[name] = ep
	h.model.Endpoints = append(h.model.Endpoints, ep.Endpoint)
	return ep
}

// serveOK answers "ok" on every listen port, IPv4 and IPv6, in n.
func serveOK(t *testing.T, n ns.NetNS) {
	for _, p := range strings.Split(listenPorts, ",") {
		ln := listen(t, n, p)
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = conn.Write([]byte("ok\n"))
				_ = conn.Close()
			}
		}()
	}
}

func listen(t *testing.T, n ns.NetNS, port string) net.Listener {
	var ln net.Listener
	testns.Do(t, n, func() {
		var err error
		if ln, err = net.Listen("tcp", ":"+port); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// serveEcho echoes lines on port in n, keeping connections open.
func serveEcho(t *testing.T, n ns.NetNS, port string) {
	ln := listen(t, n, port)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := conn.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// echoConn is a connection to serveEcho.
type echoConn struct {
	net.Conn
	r *bufio.Reader
}

func dialEcho(t *testing.T, n ns.NetNS, addr string) (*echoConn, error) {
	var conn net.Conn
	var err error
	testns.Do(t, n, func() { conn, err = net.DialTimeout("tcp", addr, tcpTimeout) })
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &echoConn{conn, bufio.NewReader(conn)}, nil
}

// roundTrip sends a line and waits for it to come back.
func (c *echoConn) roundTrip(line string) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo %q, want %q", got, line)
	}
	return nil
}

func (h *testHost) removeFromModel(name string) {
	h.model.Endpoints = slices.DeleteFunc(h.model.Endpoints, func(e policy.Endpoint) bool { return e.Name == name })
}

func (h *testHost) desired() *policy.DesiredState {
	h.t.Helper()
	ds, err := policy.Compute(h.model, node)
	if err != nil {
		h.t.Fatal(err)
	}
	return ds
}

func (h *testHost) apply() Stats {
	h.t.Helper()
	st, err := h.enf.Apply(h.desired())
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// listTable is our table as nft prints it.
func (h *testHost) listTable() string {
	h.t.Helper()
	return run(h.t, h.ns, "nft", "list", "table", "inet", DefaultTable)
}

// snapshot is our table as the kernel holds it (chains with their rules'
// hashes, sets with their elements), read through netlink.
func (h *testHost) snapshot() string {
	h.t.Helper()
	return snapshotOf(h.t, h.enf)
}

// snapshotOf is e's table as the kernel holds it.
func snapshotOf(t *testing.T, e *Enforcer) string {
	t.Helper()
	s, err := e.read()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table exists: %v\n", s.tableExists)
	for _, name := range sortedKeys(s.chains) {
		c := s.chains[name]
		fmt.Fprintf(&b, "chain %s hook=%v %s\n", name, c.hook != nil, strings.Join(c.ruleHashes(), " "))
	}
	for _, name := range sortedKeys(s.sets) {
		fmt.Fprintf(&b, "set %s %s %s\n", name, s.sets[name].signature(), strings.Join(sortedKeys(s.sets[name].elems), " "))
	}
	return b.String()
}

func (h *testHost) counts() Counts {
	h.t.Helper()
	c, err := h.enf.Counts()
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// A probe is one new connection attempt: src and dst are endpoint names,
// "host" (this host's own address) or "remote" (an address outside the
// cluster, reached through the uplink — only as a destination).
type probe struct {
	src, dst string
	proto    uint8 // api.ProtoTCP or ICMP (ICMPv6 when v6)
	port     uint16
	v6       bool
}

func (p probe) String() string {
	fam := "v4"
	if p.v6 {
		fam = "v6"
	}
	what := "icmp"
	if p.proto == api.ProtoTCP {
		what = fmt.Sprintf("tcp/%d", p.port)
	}
	return fmt.Sprintf("%s -> %s %s %s", p.src, p.dst, what, fam)
}

func (h *testHost) addrOf(who string, v6 bool) netip.Addr {
	if who == "host" {
		if v6 {
			return netip.MustParseAddr(hostAddr6)
		}
		return netip.MustParseAddr(hostAddr4)
	}
	ep := h.eps[who]
	if v6 {
		return ep.ip6
	}
	return ep.ip4
}

// do runs the probe in the kernel.
func (h *testHost) do(p probe) bool {
	h.t.Helper()
	return h.doTimeout(p, tcpTimeout)
}

// doTimeout is do with a TCP connect timeout (ICMP waits 2s).
func (h *testHost) doTimeout(p probe, tcpTimeout time.Duration) bool {
	h.t.Helper()
	from := h.ns
	if p.src != "host" {
		from = h.eps[p.src].ns
	}
	dst := h.addrOf(p.dst, p.v6)
	if p.proto == api.ProtoTCP {
		ok := false
		testns.Do(h.t, from, func() {
			conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, p.port).String(), tcpTimeout)
			if err != nil {
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(tcpTimeout))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			ok = line == "ok\n"
		})
		return ok
	}
	_, err := testns.Run(from, "busybox", "ping", "-c", "1", "-W", "2", dst.String())
	return err == nil
}

// want is what the reference model says about the probe.
func (h *testHost) want(p probe) policy.Verdict {
	h.t.Helper()
	e, err := policy.NewEvaluator(h.model)
	if err != nil {
		h.t.Fatal(err)
	}
	var src, dst *policy.Endpoint
	if ep := h.eps[p.src]; ep != nil {
		src = &ep.Endpoint
	}
	if ep := h.eps[p.dst]; ep != nil {
		dst = &ep.Endpoint
	}
	proto := p.proto
	if proto == api.ProtoICMP && p.v6 {
		proto = api.ProtoICMPv6
	}
	pkt := policy.Packet{Proto: proto, Src: h.addrOf(p.src, p.v6), Dst: h.addrOf(p.dst, p.v6), DstPort: p.port, FromHost: p.src == "host"}
	return e.Path(src, dst, pkt)
}

// check runs probes in parallel and compares each with the reference model
// and, when given, with an explicit expectation ("allow"/"deny" by probe).
func (h *testHost) check(probes []probe, explicit map[probe]bool) {
	h.t.Helper()
	type result struct {
		p   probe
		got bool
	}
	res := make([]result, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = result{p, h.do(p)}
		}()
	}
	wg.Wait()
	for _, r := range res {
		w := h.want(r.p)
		if r.got != w.Allow {
			h.t.Errorf("%v: kernel allow=%v, model: %v", r.p, r.got, w)
		}
		if e, ok := explicit[r.p]; ok && e != w.Allow {
			h.t.Errorf("%v: model says %v, the test expects allow=%v", r.p, w, e)
		}
	}
	for p := range explicit {
		if !slices.ContainsFunc(probes, func(q probe) bool { return q == p }) {
			h.t.Errorf("expectation %v is not among the probes", p)
		}
	}
}

// matrix is every ordered pair of the given endpoints (and the host as a
// source and destination), ICMP and TCP on each port, IPv4 and (when both
// ends have it) IPv6.
func (h *testHost) matrix(names []string, ports ...uint16) []probe {
	var out []probe
	all := append([]string{"host"}, names...)
	for _, s := range all {
		for _, d := range all {
			if s == d || (s == "host" && d == "host") {
				continue
			}
			for _, v6 := range []bool{false, true} {
				if v6 && ((s != "host" && !h.eps[s].ip6.IsValid()) || (d != "host" && !h.eps[d].ip6.IsValid())) {
					continue
				}
				out = append(out, probe{s, d, api.ProtoICMP, 0, v6})
				for _, port := range ports {
					out = append(out, probe{s, d, api.ProtoTCP, port, v6})
				}
			}
		}
	}
	return out
}

func nftAvailable(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("SKIPPED: the nft command is not installed")
	}
}
