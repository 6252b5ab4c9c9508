package nftpolicy

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// udpSink records the source of every datagram it receives.
type udpSink struct {
	mu   sync.Mutex
	from map[netip.Addr]int
}

func (s *udpSink) got(a string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.from[netip.MustParseAddr(a)]
}

func listenUDP(t *testing.T, n ns.NetNS, addr string) *udpSink {
	t.Helper()
	var pc net.PacketConn
	testns.Do(t, n, func() {
		var err error
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { _ = pc.Close() })
	s := &udpSink{from: map[netip.Addr]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.from[from.(*net.UDPAddr).AddrPort().Addr().Unmap()]++
			s.mu.Unlock()
		}
	}()
	return s
}

// sendUDP sends one datagram from src (an address of n) to dst.
func sendUDP(t *testing.T, n ns.NetNS, src, dst string, payload []byte) {
	t.Helper()
	testns.Do(t, n, func() {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)),
			net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
	})
}

// vxlanHeader is a VXLAN header (flags: VNI present) for vni, and an
// arbitrary inner frame.
func vxlanHeader(vni uint32) []byte {
	b := make([]byte, 8, 64)
	b[0] = 0x08
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	return append(b, make([]byte, 42)...)
}

// TestHostProtection: in a namespace host with an endpoint namespace
// attached as the daemon attaches containers, and the policy table in
// place with the network's default profile (egress open):
//   - by default the endpoint opens no connection to the host (a service
//     and the etcd port), while the host opens connections to it;
//   - an allowed port opens; Accept opens the host but not etcd's port;
//     listing etcd's port opens it;
//   - a source address that is not routed to the endpoint's interface
//     never arrives, with or without the policy table;
//   - VXLAN packets of our VNI arrive only from registered nodes.
func TestHostProtection(t *testing.T) {
	nftAvailable(t)
	h := newTestHost(t)
	a := h.addEndpoint("a", "caliaaaa", "10.65.0.1", "fd65::1", "net1", nil)
	h.apply()
	serveOKOn(t, h.ns, "2379")
	hp := NewHostProtection(HostConfig{NetNS: int(h.ns.Fd())})
	t.Cleanup(func() { _ = hp.Remove() })
	last := hostRuleSteps(t, h, hp)
	verifyHostTable(t, h, hp, last)
	t.Run("anti-spoofing with policy on and off", func(t *testing.T) { hostAntiSpoofing(t, h, a, hp) })
	t.Run("VXLAN from registered nodes only", func(t *testing.T) { hostVXLANFromNodesOnly(t, h, hp) })
	t.Run("IPIP from registered nodes only", func(t *testing.T) { hostIPIPFromNodesOnly(t, h, hp) })
}

// hostRuleSteps applies a sequence of host rules and probes, after each,
// which connections to and from the host open; it returns the last rules.
func hostRuleSteps(t *testing.T, h *testHost, hp *HostProtection) HostRules {
	tcp := func(p uint16) HostPort { return HostPort{Proto: unix.IPPROTO_TCP, Port: p} }
	base := HostRules{DropToHost: true, ClosedPorts: []HostPort{tcp(2379), tcp(2380)}, VXLANPort: 4789, VXLANVNI: 4096}
	toHost := func(port uint16, v6 bool) probe { return probe{"a", "host", api.ProtoTCP, port, v6} }
	fromHost := probe{"host", "a", api.ProtoTCP, 80, false}
	steps := []struct {
		name  string
		rules func(HostRules) HostRules
		want  map[probe]bool
	}{
		{"default: Drop", func(r HostRules) HostRules { return r }, map[probe]bool{
			toHost(80, false): false, toHost(80, true): false, toHost(2379, false): false, {"a", "host", api.ProtoICMP, 0, false}: false, fromHost: true}},
		{"port 5432 allowed", func(r HostRules) HostRules { r.AllowedPorts = []HostPort{tcp(5432)}; return r }, map[probe]bool{
			toHost(5432, false): true, toHost(5432, true): true, toHost(80, false): false, toHost(2379, false): false, fromHost: true}},
		{"Accept", func(r HostRules) HostRules { r.DropToHost = false; return r }, map[probe]bool{
			toHost(80, false): true, toHost(80, true): true, toHost(2379, false): false, fromHost: true}},
		{"Accept, etcd's port listed", func(r HostRules) HostRules {
			r.DropToHost, r.AllowedPorts = false, []HostPort{tcp(2379)}
			return r
		}, map[probe]bool{toHost(2379, false): true, toHost(80, false): true}},
		{"Drop, etcd's port listed", func(r HostRules) HostRules { r.AllowedPorts = []HostPort{tcp(2379)}; return r }, map[probe]bool{
			toHost(2379, false): true, toHost(80, false): false}},
	}
	for _, s := range steps {
		changed, err := hp.Apply(s.rules(base), false)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !changed {
			t.Errorf("%s: Apply wrote nothing", s.name)
		}
		var wg sync.WaitGroup
		for p, want := range s.want {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := h.do(p); got != want {
					t.Errorf("%s: %v allowed=%v, want %v", s.name, p, got, want)
				}
			}()
		}
		wg.Wait()
	}
	return steps[len(steps)-1].rules(base)
}

// verifyHostTable checks that unchanged rules are not rewritten, and that
// a verify finds the table intact and restores it when someone removed it.
func verifyHostTable(t *testing.T, h *testHost, hp *HostProtection, last HostRules) {
	if changed, err := hp.Apply(last, true); err != nil || changed {
		t.Errorf("re-apply of the same rules: changed=%v err=%v", changed, err)
	}
	run(t, h.ns, "nft", "delete", "table", "inet", DefaultHostTable)
	if changed, err := hp.Apply(last, true); err != nil || !changed {
		t.Errorf("verify after the table was deleted: changed=%v err=%v", changed, err)
	}
	if out := run(t, h.ns, "nft", "list", "table", "inet", DefaultHostTable); !strings.Contains(out, "defaultEndpointToHostAction Drop") {
		t.Errorf("restored table:\n%s", out)
	}
}

// hostAntiSpoofing checks that a source address that is not routed to the
// endpoint's interface never arrives, with or without the policy table.
func hostAntiSpoofing(t *testing.T, h *testHost, a *testEP, hp *HostProtection) {
	if _, err := hp.Apply(HostRules{VXLANPort: 4789, VXLANVNI: 4096}, false); err != nil {
		t.Fatal(err)
	}
	sink := listenUDP(t, h.ns, hostAddr4+":9999")
	run(t, a.ns, "ip", "addr", "add", "10.65.0.99/32", "dev", "cali0")
	send := func() {
		for _, src := range []string{"10.65.0.1", "10.65.0.99"} {
			sendUDP(t, a.ns, src, hostAddr4+":9999", []byte("x"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	send()
	if sink.got("10.65.0.1") != 1 || sink.got("10.65.0.99") != 0 {
		t.Errorf("policy on: from its own address %d, from a forged one %d datagrams; want 1 and 0", sink.got("10.65.0.1"), sink.got("10.65.0.99"))
	}
	if err := h.enf.Remove(); err != nil {
		t.Fatal(err)
	}
	send()
	if sink.got("10.65.0.1") != 2 || sink.got("10.65.0.99") != 0 {
		t.Errorf("policy off: from its own address %d, from a forged one %d datagrams; want 2 and 0", sink.got("10.65.0.1"), sink.got("10.65.0.99"))
	}
	// The control: without the host table too, the forged one arrives.
	if err := hp.Remove(); err != nil {
		t.Fatal(err)
	}
	send()
	if sink.got("10.65.0.99") != 1 {
		t.Errorf("without our tables the forged datagram did not arrive either (%d): the test proves nothing", sink.got("10.65.0.99"))
	}
}

// hostVXLANFromNodesOnly checks that VXLAN packets of our VNI arrive only
// from registered nodes.
func hostVXLANFromNodesOnly(t *testing.T, h *testHost, hp *HostProtection) {
	out := testns.New(t)
	run(t, h.ns, "ip", "link", "add", "vxo0", "type", "veth", "peer", "name", "vxo1")
	run(t, h.ns, "ip", "link", "set", "vxo1", "netns", out.Path())
	run(t, h.ns, "ip", "addr", "add", "198.51.100.1/24", "dev", "vxo0")
	run(t, h.ns, "ip", "link", "set", "vxo0", "up")
	run(t, out, "ip", "link", "set", "vxo1", "up")
	run(t, out, "ip", "addr", "add", "198.51.100.2/24", "dev", "vxo1")
	run(t, out, "ip", "addr", "add", "198.51.100.3/24", "dev", "vxo1")
	sink := listenUDP(t, h.ns, "198.51.100.1:4789")
	rules := HostRules{VXLANPort: 4789, VXLANVNI: 4096, Nodes: []netip.Addr{netip.MustParseAddr("198.51.100.2")}}
	if _, err := hp.Apply(rules, false); err != nil {
		t.Fatal(err)
	}
	sendUDP(t, out, "198.51.100.2", "198.51.100.1:4789", vxlanHeader(4096))
	sendUDP(t, out, "198.51.100.3", "198.51.100.1:4789", vxlanHeader(4096))
	sendUDP(t, out, "198.51.100.3", "198.51.100.1:4789", vxlanHeader(5000)) // not our VNI: left alone
	time.Sleep(200 * time.Millisecond)
	if sink.got("198.51.100.2") != 1 || sink.got("198.51.100.3") != 1 {
		t.Errorf("from the node %d datagrams (want 1), from 198.51.100.3 %d (want only the one of another VNI)", sink.got("198.51.100.2"), sink.got("198.51.100.3"))
	}
	if tbl := run(t, h.ns, "nft", "list", "table", "inet", DefaultHostTable); !strings.Contains(tbl, "198.51.100.2") || !strings.Contains(tbl, "packets 1 ") {
		t.Errorf("the table does not show the node and one dropped packet:\n%s", tbl)
	}
}

// hostIPIPFromNodesOnly checks that IPIP packets (IP protocol 4) reach the
// host only from registered nodes: a raw socket in the host sees what passed
// the input hook, with or without the kernel's ipip module.
func hostIPIPFromNodesOnly(t *testing.T, h *testHost, hp *HostProtection) {
	out := testns.New(t)
	run(t, h.ns, "ip", "link", "add", "ipo0", "type", "veth", "peer", "name", "ipo1")
	run(t, h.ns, "ip", "link", "set", "ipo1", "netns", out.Path())
	run(t, h.ns, "ip", "addr", "add", "203.0.113.1/24", "dev", "ipo0")
	run(t, h.ns, "ip", "link", "set", "ipo0", "up")
	run(t, out, "ip", "link", "set", "ipo1", "up")
	run(t, out, "ip", "addr", "add", "203.0.113.2/24", "dev", "ipo1")
	run(t, out, "ip", "addr", "add", "203.0.113.3/24", "dev", "ipo1")
	var pc net.PacketConn
	testns.Do(t, h.ns, func() {
		var err error
		if pc, err = net.ListenPacket("ip4:4", "203.0.113.1"); err != nil {
			t.Errorf("raw IPIP socket: %v", err)
		}
	})
	if pc == nil {
		t.FailNow()
	}
	defer pc.Close()
	rules := HostRules{VXLANPort: 4789, VXLANVNI: 4096, IPIP: true, Nodes: []netip.Addr{netip.MustParseAddr("203.0.113.2")}}
	// The same number of nodes as the VXLAN step's, other addresses: the
	// table must follow (its fingerprint covers the addresses). The IPIP
	// rule is asked for, as on a kernel with ipip; the raw socket sees
	// protocol 4 whether or not the kernel has the module.
	if changed, err := hp.Apply(rules, false); err != nil || !changed {
		t.Fatalf("apply with other nodes: changed=%v err=%v, want the table replaced", changed, err)
	}
	for _, src := range []string{"203.0.113.2", "203.0.113.3", "203.0.113.2"} {
		testns.Do(t, out, func() {
			c, err := net.DialIP("ip4:4", &net.IPAddr{IP: net.ParseIP(src)}, &net.IPAddr{IP: net.ParseIP("203.0.113.1")})
			if err != nil {
				t.Errorf("send IPIP from %s: %v", src, err)
				return
			}
			defer c.Close()
			_, _ = c.Write(make([]byte, 40)) // the inner packet's bytes do not matter here
		})
	}
	from := map[string]int{}
	_ = pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 2048)
	for {
		_, a, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		from[a.String()]++
	}
	if from["203.0.113.2"] != 2 || from["203.0.113.3"] != 0 {
		t.Errorf("IPIP packets seen by the host: %v; want 2 from the node 203.0.113.2 and none from 203.0.113.3\n%s", from, run(t, h.ns, "nft", "list", "table", "inet", DefaultHostTable))
	}
}

func serveOKOn(t *testing.T, n ns.NetNS, port string) {
	ln := listen(t, n, port)
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

func TestHostRulesNormalized(t *testing.T) {
	tcp := func(p uint16) HostPort { return HostPort{Proto: unix.IPPROTO_TCP, Port: p} }
	r := HostRules{
		AllowedPorts:    []HostPort{tcp(2379), tcp(80), tcp(80)},
		ClosedPorts:     []HostPort{tcp(2380), tcp(2379)},
		ClosedEndpoints: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:2379"), netip.MustParseAddrPort("10.0.0.1:2380"), netip.MustParseAddrPort("10.0.0.2:2379")},
		Nodes:           []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.2")},
	}.normalized()
	if len(r.AllowedPorts) != 2 || len(r.ClosedPorts) != 1 || r.ClosedPorts[0] != tcp(2380) {
		t.Errorf("ports: allowed %v closed %v", r.AllowedPorts, r.ClosedPorts)
	}
	if len(r.ClosedEndpoints) != 1 || r.ClosedEndpoints[0].String() != "10.0.0.1:2380" {
		t.Errorf("closed endpoints %v: an allowed port opens its endpoints too", r.ClosedEndpoints)
	}
	if len(r.Nodes) != 2 || r.Nodes[0].String() != "10.0.0.1" {
		t.Errorf("nodes %v: IPv4 only, unmapped, sorted, once", r.Nodes)
	}
}

// The fingerprint decides whether the table is rewritten: it must change
// with any field, a node's address included (same count, other nodes).
func TestHostRulesFingerprint(t *testing.T) {
	base := HostRules{VXLANPort: 4789, VXLANVNI: 4096, Nodes: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}
	changes := map[string]func(r *HostRules){
		"another node, same count": func(r *HostRules) { r.Nodes = []netip.Addr{netip.MustParseAddr("10.0.0.3")} },
		"VXLAN port":               func(r *HostRules) { r.VXLANPort = 4790 },
		"VXLAN VNI":                func(r *HostRules) { r.VXLANVNI = 1 },
		"drop to host":             func(r *HostRules) { r.DropToHost = true },
		"IPIP filtered":            func(r *HostRules) { r.IPIP = true },
	}
	for name, change := range changes {
		r := base
		change(&r)
		if r.normalized().fingerprint() == base.normalized().fingerprint() {
			t.Errorf("%s: fingerprint unchanged, so the kernel's table would not follow", name)
		}
	}
	if base.normalized().fingerprint() != base.normalized().fingerprint() {
		t.Error("fingerprint of equal rules differs")
	}
}
