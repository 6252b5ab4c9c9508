//go:build e2e

package multihost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
	"github.com/calico-libnetwork/calico-libnetwork/node"
)

const (
	poolName = "mh-pool"
	poolCIDR = "10.210.0.0/16"
	netName  = "net1"
	// net2's subnet: inside the pool, where no host has a block before.
	net2Subnet = "10.210.200.0/24"
	// A pool of a single block, to make hosts borrow addresses.
	smallPool = "mh-small"
	smallCIDR = "10.220.0.0/26"
)

// TestMultiHost is item 7's scenario on three hosts sharing a three-member
// etcd cluster over TLS:
//
//   - a CrossSubnet VXLAN pool with natOutgoing is created (no default pools);
//   - net1, created on host 1, appears on hosts 2 and 3;
//   - containers on every host ping every other;
//   - a steady cluster (nothing changing for 30 s) writes nothing to etcd
//     (node liveness is the claims' leases) and changes no route in any host;
//   - host 1 <-> host 2 (same subnet) travels unencapsulated, host 1 <->
//     host 3 (across the router, which has no route to the pool) through
//     vxlan.calico;
//   - an IPIP CrossSubnet pool works on every kernel (ipip_test.go);
//   - a container reaches the outside host through NAT, which sees the
//     host's address; pool-to-pool traffic keeps its container source;
//   - with the etcd leader stopped, a new container starts and reaches the
//     others;
//   - with two of three etcd members stopped (no quorum), every host keeps
//     its routes and its containers' traffic; once etcd is back, a new
//     network is shared and a container in a new block reaches the others;
//   - a daemon killed with -9 and restarted leaves its routes (no flap) and
//     its containers' traffic intact;
//   - in a pool of one block, hosts 2 and 3 borrow addresses from host 1's
//     block and every host routes each borrowed /32 to the host using it;
//   - removing containers, net1 (on a host that did not create it) and the
//     pool leaves no route (protocol 77/78), cali veth or VXLAN device in any
//     host.
func TestMultiHost(t *testing.T) {
	begin(t)
	started := time.Now()
	// A short grace period, so that what the etcd outage leaks (an
	// endpoint removed while nothing could be written) is collected before
	// the final check that nothing is left.
	tb := New(t, Options{DaemonEnv: []string{"CALICO_IPAM_GC_GRACE=15s", "CALICO_IPAM_GC_INTERVAL=3s"}})
	s := &scenario{tb: tb, h1: tb.Hosts[0], h2: tb.Hosts[1], h3: tb.Hosts[2], ctx: context.Background()}
	st := newSteps(t, started)
	st.run("nodes registered", s.nodesRegistered)
	st.run("pool", s.createPool)
	st.run("net1 shared to every host", s.net1Shared)
	st.run("containers on every host", s.containersOnEveryHost)
	st.run("ping every pair", s.pingEveryPair)
	st.run("same MAC and --ip on two hosts: the second is refused", s.sameMACRefused)
	st.run("a network is usable where it is listed", s.networkUsableWhereListed)
	st.run("routes and VXLAN device", s.routesAndVXLAN)
	st.run("steady cluster: no etcd writes, no route changes", s.steadyState)
	st.run("1<->2 unencapsulated", s.unencapsulated12)
	st.run("1<->3 through VXLAN", s.throughVXLAN13)
	st.run("full MTU: 1500 direct, PMTU and MSS into VXLAN", s.fullMTU) // mtu_test.go
	st.run("VXLAN only from registered nodes", s.vxlanFromNodesOnly)
	st.run("IPIP pool across subnets", s.ipipCrossSubnet) // ipip_test.go
	st.run("NAT outgoing", s.natOutgoing)
	st.run("etcd member down", s.etcdMemberDown)
	st.run("etcd quorum lost", s.etcdQuorumLost)
	st.run("daemon kill -9 and restart", s.daemonKillRestart)
	st.run("policy across hosts: only role=frontend reaches role=db, on tcp/5432", s.policyAcrossHosts)
	st.run("borrowed addresses", s.borrowedAddresses)
	st.run("remove everything", s.removeEverything)
}

// scenario is TestMultiHost's shared fixture: the testbed, its hosts, and
// the containers early steps start for later ones.
type scenario struct {
	tb              *Testbed
	h1, h2, h3      *Host
	ctx             context.Context
	c1, c1b, c2, c3 *Container // one per host, two on host 1 ("containers on every host")
	c4              *Container // started with the etcd leader down ("etcd member down")
}

func (s *scenario) all() []*Container { return []*Container{s.c1, s.c1b, s.c2, s.c3} }

// steps runs the scenario's steps in order, stopping at the first that
// fails (later steps depend on it), and logs each step's time at the end.
type steps struct {
	t       *testing.T
	timings []string
}

func newSteps(t *testing.T, started time.Time) *steps {
	st := &steps{t: t}
	t.Cleanup(func() {
		t.Logf("step timings (total %s, set-up included):\n%s", time.Since(started).Round(time.Second), strings.Join(st.timings, "\n"))
	})
	st.timings = append(st.timings, fmt.Sprintf("%-28s %6s", "testbed set-up", time.Since(started).Round(100*time.Millisecond)))
	return st
}

func (st *steps) run(name string, f func(t *testing.T)) {
	t := st.t
	t.Helper()
	begun := time.Now()
	ok := t.Run(name, f)
	st.timings = append(st.timings, fmt.Sprintf("%-28s %6s", name, time.Since(begun).Round(100*time.Millisecond)))
	if !ok {
		t.Fatalf("step %q failed; later steps depend on it", name)
	}
}

// nodesRegistered is the step "nodes registered".
func (s *scenario) nodesRegistered(t *testing.T) {
	tb, h1, ctx := s.tb, s.h1, s.ctx
	err := Eventually(15*time.Second, 200*time.Millisecond, func() error {
		nodes, err := node.List(ctx, tb.Store)
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, n := range nodes {
			got[n.Name] = api.PrefixText(n.IPv4Address)
		}
		for _, h := range tb.Hosts {
			if got[h.Name] != h.Addr.String() {
				return fmt.Errorf("node %s registered with IPv4 %q, want %s (all: %v)", h.Name, got[h.Name], h.Addr, got)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tb.Calicoctl(h1, "get", "nodes", "-o", "wide"); err == nil {
		t.Logf("calicoctl get nodes -o wide:\n%s", out)
	} else if tb.ctl != "" {
		t.Logf("calicoctl get nodes -o wide: %v", err)
	}
}

// createPool is the step "pool".
func (s *scenario) createPool(t *testing.T) {
	tb := s.tb
	tb.CreatePool(t, api.IPPool{Name: poolName, CIDR: poolCIDR, BlockSize: 26,
		VXLANMode: api.EncapCrossSubnet, IPIPMode: api.EncapNever, NATOutgoing: true})
}

// net1Shared is the step "net1 shared to every host".
func (s *scenario) net1Shared(t *testing.T) {
	tb, h1, h2, h3, ctx := s.tb, s.h1, s.h2, s.h3, s.ctx
	h1.Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", netName)
	created := time.Now()
	for _, h := range []*Host{h2, h3} {
		err := Eventually(20*time.Second, 200*time.Millisecond, func() error {
			ok, err := h.HasNetwork(netName, "calico")
			if err == nil && !ok {
				names, _ := h.NetworkNames()
				err = fmt.Errorf("%s has no calico network %s yet; docker network ls: %v", h.Name, netName, names)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: `docker network ls` shows %s (calico) %s after it was created on %s", h.Name, netName, time.Since(created).Round(10*time.Millisecond), h1.Name)
	}
	var sn api.SharedNetwork
	if _, err := tb.Store.Get(ctx, api.SharedNetworkKey(netName), &sn); err != nil {
		t.Fatalf("shared record %s: %v", api.SharedNetworkKey(netName), err)
	}
	if sn.CreatedBy != h1.Name {
		t.Errorf("shared record says %s was created by %q, want %s", netName, sn.CreatedBy, h1.Name)
	}
}

// containersOnEveryHost is the step "containers on every host".
func (s *scenario) containersOnEveryHost(t *testing.T) {
	tb, h1, h2, h3, ctx := s.tb, s.h1, s.h2, s.h3, s.ctx
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	run := func(h *Host, name string, dst **Container) {
		defer wg.Done()
		c, err := h.RunErr(name, netName)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		*dst = c
	}
	wg.Add(4)
	go run(h1, "c1", &s.c1)
	go run(h1, "c1b", &s.c1b)
	go run(h2, "c2", &s.c2)
	go run(h3, "c3", &s.c3)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	pool := netip.MustParsePrefix(poolCIDR)
	for _, c := range s.all() {
		t.Logf("%s", c)
		if !pool.Contains(c.IP) {
			t.Errorf("%s: address %s is outside the pool %s", c.Name, c.IP, pool)
		}
		blk := netip.PrefixFrom(c.IP, 26).Masked()
		var b api.Block
		if _, err := tb.Store.Get(ctx, api.BlockKey(blk), &b); err != nil {
			t.Errorf("%s: block %s: %v", c.Name, blk, err)
		} else if b.Affinity != c.Host.Name {
			t.Errorf("%s on %s got %s from block %s affine to %q: want a block of its own host", c.Name, c.Host.Name, c.IP, blk, b.Affinity)
		}
	}
}

// pingEveryPair is the step "ping every pair".
func (s *scenario) pingEveryPair(t *testing.T) {
	pingAllPairs(t, s.all(), 30*time.Second)
}

// sameMACRefused is the step "same MAC and --ip on two hosts: the second is refused".
func (s *scenario) sameMACRefused(t *testing.T) {
	h1, h2 := s.h1, s.h2
	// The same compose file on two hosts, with a fixed mac_address and
	// ipv4_address: one address, one container.
	const mac, ip, subnet, nw = "02:42:0a:d2:fa:09", "10.210.250.9", "10.210.250.0/24", "netfix"
	h1.Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--subnet", subnet, nw)
	defer func() {
		if _, err := h1.DockerErr(time.Minute, "network", "rm", nw); err != nil {
			t.Errorf("remove %s: %v", nw, err)
		}
	}()
	if err := Eventually(30*time.Second, 200*time.Millisecond, func() error {
		ok, err := h2.HasNetwork(nw, "calico")
		if err == nil && !ok {
			err = fmt.Errorf("%s has no %s yet", h2.Name, nw)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	dup, err := h1.RunWithMACErr("dup1", nw, mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h2.RunWithMACErr("dup2", nw, mac, ip)
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("second host with the same MAC and --ip: %v, want refused as already in use", err)
	}
	h2.DockerErr(30*time.Second, "rm", "-f", "dup2") //nolint:errcheck // created, never started
	if err := h1.Run(t, "dup1-peer", nw).PingErr(dup.IP, 3); err != nil {
		t.Errorf("the first holder lost its address: %v", err)
	}
	h1.Docker(t, "rm", "-f", "dup1", "dup1-peer")
}

// networkUsableWhereListed is the step "a network is usable where it is listed".
func (s *scenario) networkUsableWhereListed(t *testing.T) {
	tb := s.tb
	usableWhereListed(t, tb)
}

// routesAndVXLAN is the step "routes and VXLAN device".
func (s *scenario) routesAndVXLAN(t *testing.T) {
	if err := Eventually(10*time.Second, 200*time.Millisecond, s.routesAsWanted); err != nil {
		t.Fatal(err)
	}
	for _, h := range s.tb.Hosts {
		rs, _ := h.RoutesWithProto(BlockRouteProto)
		t.Logf("%s routes, protocol 78: %v", h.Name, rs)
	}
	for _, h := range s.tb.Hosts {
		s.checkVXLANDevice(t, h)
	}
	s.checkVethMTU(t)
}

// routesAsWanted says how a route to a remote container is not what the
// pool's CrossSubnet mode wants (direct in the subnet, VXLAN across it),
// or a host lacks a protocol-78 route per block (a blackhole for its own).
func (s *scenario) routesAsWanted() error {
	tb, h1, h2, h3, c1, c2, c3 := s.tb, s.h1, s.h2, s.h3, s.c1, s.c2, s.c3
	blk := func(c *Container) netip.Prefix { return netip.PrefixFrom(c.IP, 26).Masked() }
	// The kernel's choice for each remote container, on each host.
	want := []struct {
		on   *Host
		to   *Container
		dev  string
		via  *Host
		mode string
	}{
		{h1, c2, HostIfName, h2, "direct"}, {h1, c3, VXLANDevice, h3, "vxlan"},
		{h2, c1, HostIfName, h1, "direct"}, {h2, c3, VXLANDevice, h3, "vxlan"},
		{h3, c1, VXLANDevice, h1, "vxlan"}, {h3, c2, VXLANDevice, h2, "vxlan"},
	}
	for _, w := range want {
		r, err := w.on.RouteTo(w.to.IP)
		if err != nil {
			return err
		}
		if r.Dev != w.dev || r.Gw != w.via.IP() {
			return fmt.Errorf("%s routes %s (%s) as %q, want via %s dev %s (%s)", w.on.Name, w.to.IP, w.to.Name, r, w.via.IP(), w.dev, w.mode)
		}
	}
	for _, h := range tb.Hosts {
		rs, err := h.RoutesWithProto(BlockRouteProto)
		if err != nil {
			return err
		}
		have := map[string]Route{}
		for _, r := range rs {
			have[r.Dst.String()] = r
		}
		for _, c := range s.all() {
			r, ok := have[blk(c).String()]
			switch {
			case !ok:
				return fmt.Errorf("%s has no protocol-78 route for %s's block %s; it has %v", h.Name, c.Name, blk(c), rs)
			case c.Host == h && !r.Blackhole:
				return fmt.Errorf("%s's own block %s: route %s, want a blackhole", h.Name, blk(c), r)
			case c.Host != h && r.Blackhole:
				return fmt.Errorf("%s: remote block %s is a blackhole", h.Name, blk(c))
			}
		}
	}
	return nil
}

// checkVXLANDevice checks h's vxlan.calico device: VNI, port, local
// address, MAC, MTU, and neighbour and FDB entries for exactly the hosts
// on another subnet.
func (s *scenario) checkVXLANDevice(t *testing.T, h *Host) {
	tb := s.tb
	l, err := h.Link(VXLANDevice)
	if err != nil || l == nil {
		t.Fatalf("%s: no %s (%v)", h.Name, VXLANDevice, err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("%s: %s is a %s, not vxlan", h.Name, VXLANDevice, l.Type())
	}
	b := h.IP().As4()
	mac := fmt.Sprintf("66:ee:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
	if vx.VxlanId != 4096 || vx.Port != 4789 || !vx.SrcAddr.Equal(h.IP().AsSlice()) || vx.HardwareAddr.String() != mac || vx.MTU != 1450 {
		t.Errorf("%s: %s has VNI %d port %d local %s MAC %s MTU %d; want VNI 4096 port 4789 local %s MAC %s MTU 1450",
			h.Name, VXLANDevice, vx.VxlanId, vx.Port, vx.SrcAddr, vx.HardwareAddr, vx.MTU, h.IP(), mac)
	}
	neigh, fdb, err := h.Neighbours(VXLANDevice)
	if err != nil {
		t.Fatal(err)
	}
	var wantPeers []string
	for _, o := range tb.Hosts {
		if o != h && (o.Subnet != h.Subnet) {
			ob := o.IP().As4()
			wantPeers = append(wantPeers, fmt.Sprintf("%s 66:ee:%02x:%02x:%02x:%02x", o.IP(), ob[0], ob[1], ob[2], ob[3]))
		}
	}
	slices.Sort(wantPeers)
	if !slices.Equal(neigh, wantPeers) || !slices.Equal(fdb, wantPeers) {
		t.Errorf("%s: %s neighbours %v, FDB %v; want both %v (the hosts on another subnet)", h.Name, VXLANDevice, neigh, fdb, wantPeers)
	}
}

// checkVethMTU checks that the container veths have the hosts' full MTU
// although the pool uses VXLAN across subnets (only vxlan.calico has
// 1450), and that every host has the MSS clamp for what enters a tunnel.
func (s *scenario) checkVethMTU(t *testing.T) {
	for _, c := range s.all() {
		mtu := strings.TrimSpace(c.Exec(t, "cat", "/sys/class/net/cali0/mtu"))
		t.Logf("%s: cali0 MTU %s", c.Name, mtu)
		if atoi(mtu) != 1500 {
			t.Errorf("%s: cali0 MTU %s, want 1500 (the host's): only the tunnel device needs VXLAN's smaller MTU", c.Name, mtu)
		}
	}
	for _, h := range s.tb.Hosts {
		if out := h.Exec(t, "nft", "list", "table", "inet", "calico-libnetwork-mss"); !strings.Contains(out, "tcp option maxseg size set rt mtu") {
			t.Errorf("%s: no MSS clamp:\n%s", h.Name, out)
		}
	}
}

// unencapsulated12 is the step "1<->2 unencapsulated".
func (s *scenario) unencapsulated12(t *testing.T) {
	h1, h2, c1, c2 := s.h1, s.h2, s.c1, s.c2
	before1, _ := h1.Stats(VXLANDevice)
	before2, _ := h2.Stats(VXLANDevice)
	// On host 2's wire, the containers' own ICMP packets.
	capt, err := StartCapture(h2.NSPath(), HostIfName, fmt.Sprintf("icmp and host %s and host %s", c1.IP, c2.IP))
	if err != nil {
		t.Fatal(err)
	}
	encap, err := StartCapture(h2.NSPath(), HostIfName, "udp port 4789")
	if err != nil {
		t.Fatal(err)
	}
	pingErr := c1.PingErr(c2.IP, 5)
	plain, udp := capt.Stop(), encap.Stop()
	if pingErr != nil {
		t.Fatal(pingErr)
	}
	after1, _ := h1.Stats(VXLANDevice)
	after2, _ := h2.Stats(VXLANDevice)
	t.Logf("on %s's %s: %d plain ICMP packets between %s and %s, %d VXLAN packets; e.g. %s",
		h2.Name, HostIfName, len(plain), c1.IP, c2.IP, len(udp), first(plain))
	if len(plain) < 10 {
		t.Errorf("saw %d plain ICMP packets between the containers on %s's wire, want 10 (5 requests, 5 replies)", len(plain), h2.Name)
	}
	if len(udp) != 0 {
		t.Errorf("saw %d VXLAN packets on %s's wire during a 1<->2 ping: %v", len(udp), h2.Name, udp)
	}
	if d := after1.TxPackets - before1.TxPackets; d != 0 {
		t.Errorf("%s: %s sent %d packets during the 1<->2 ping, want 0", h1.Name, VXLANDevice, d)
	}
	if d := after2.RxPackets - before2.RxPackets; d != 0 {
		t.Errorf("%s: %s received %d packets during the 1<->2 ping, want 0", h2.Name, VXLANDevice, d)
	}
}

// throughVXLAN13 is the step "1<->3 through VXLAN".
func (s *scenario) throughVXLAN13(t *testing.T) {
	h1, h3, c1, c3 := s.h1, s.h3, s.c1, s.c3
	before1, _ := h1.Stats(VXLANDevice)
	before3, _ := h3.Stats(VXLANDevice)
	encap, err := StartCapture(h3.NSPath(), HostIfName, fmt.Sprintf("udp port 4789 and host %s and host %s", h1.IP(), h3.IP()))
	if err != nil {
		t.Fatal(err)
	}
	plainCap, err := StartCapture(h3.NSPath(), HostIfName, fmt.Sprintf("icmp and host %s", c1.IP))
	if err != nil {
		t.Fatal(err)
	}
	pingErr := c1.PingErr(c3.IP, 5)
	udp, plain := encap.Stop(), plainCap.Stop()
	if pingErr != nil {
		t.Fatal(pingErr)
	}
	after1, _ := h1.Stats(VXLANDevice)
	after3, _ := h3.Stats(VXLANDevice)
	t.Logf("%s %s: +%d TX +%d RX packets; %s %s: +%d TX +%d RX; %d VXLAN packets on %s's wire (e.g. %s), %d plain",
		h1.Name, VXLANDevice, after1.TxPackets-before1.TxPackets, after1.RxPackets-before1.RxPackets,
		h3.Name, VXLANDevice, after3.TxPackets-before3.TxPackets, after3.RxPackets-before3.RxPackets,
		len(udp), h3.Name, first(udp), len(plain))
	if after1.TxPackets-before1.TxPackets < 5 || after1.RxPackets-before1.RxPackets < 5 {
		t.Errorf("%s: %s counters moved by TX %d RX %d during 5 pings to %s, want at least 5 each", h1.Name, VXLANDevice,
			after1.TxPackets-before1.TxPackets, after1.RxPackets-before1.RxPackets, h3.Name)
	}
	if after3.TxPackets-before3.TxPackets < 5 || after3.RxPackets-before3.RxPackets < 5 {
		t.Errorf("%s: %s counters moved by TX %d RX %d during 5 pings from %s, want at least 5 each", h3.Name, VXLANDevice,
			after3.TxPackets-before3.TxPackets, after3.RxPackets-before3.RxPackets, h1.Name)
	}
	if len(udp) < 10 {
		t.Errorf("saw %d VXLAN (UDP 4789) packets between the hosts on %s's wire, want 10", len(udp), h3.Name)
	}
	if len(plain) != 0 {
		t.Errorf("saw %d unencapsulated ICMP packets of %s on %s's wire: %v", len(plain), c1.IP, h3.Name, plain)
	}
}

// vxlanFromNodesOnly is the step "VXLAN only from registered nodes".
func (s *scenario) vxlanFromNodesOnly(t *testing.T) {
	tb, c1, c3 := s.tb, s.c1, s.c3
	vxlanOnlyFromNodes(t, tb, c1, c3) // security_test.go
}

// natOutgoing is the step "NAT outgoing".
func (s *scenario) natOutgoing(t *testing.T) {
	tb, h1, c1, c2, c3 := s.tb, s.h1, s.c1, s.c2, s.c3
	outside := whoami(t, "/run/netns/"+tb.Outside, ":8080")
	for _, c := range []*Container{c1, c2, c3} {
		got := connect(t, c, OutsideAddr, 8080)
		t.Logf("%s -> outside %s: seen from %s", c, OutsideAddr, got)
		if got != c.Host.IP().String() {
			t.Errorf("the outside host saw %s's connection come from %s, want its host's address %s (NAT outgoing)", c, got, c.Host.IP())
		}
	}
	if n := len(outside.seen()); n != 3 {
		t.Errorf("the outside server saw %d connections, want 3", n)
	}
	// Pool to pool is not translated, directly or through VXLAN.
	whoami(t, c2.NSPath(), ":8081")
	for _, c := range []*Container{c1, c3} {
		got := connect(t, c, c2.IP.String(), 8081)
		if got != c.IP.String() {
			t.Errorf("%s saw %s's connection come from %s, want the container's own address %s (no NAT between pools)", c2, c, got, c.IP)
		}
	}
	rules := h1.Exec(t, "iptables", "-t", "nat", "-S", "CALICO-LIBNETWORK-NAT")
	if !strings.Contains(rules, "-s "+poolCIDR) || !strings.Contains(rules, "MASQUERADE") {
		t.Errorf("%s: NAT chain:\n%s\nwant a MASQUERADE rule for %s", h1.Name, rules, poolCIDR)
	}
}

// etcdMemberDown is the step "etcd member down".
func (s *scenario) etcdMemberDown(t *testing.T) {
	tb, ctx, c1, c2, c3 := s.tb, s.ctx, s.c1, s.c2, s.c3
	leader, err := tb.Etcd.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := leader.Host
	t.Logf("stopping etcd member %s (the leader) on %s", leader.Name, h.Name)
	if err := leader.Stop(); err != nil {
		t.Logf("stop %s: %v", leader.Name, err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = leader.Start()
		}
	})
	st := time.Now()
	c, err := h.RunErr("c4", netName)
	if err != nil {
		t.Fatalf("with etcd member %s down, a container on %s did not start: %v", leader.Name, h.Name, err)
	}
	s.c4 = c
	c4 := c
	t.Logf("%s started in %s with the leader down", c4, time.Since(st).Round(10*time.Millisecond))
	others := []*Container{c1, c2, c3}
	pingAllPairs(t, append(others, c4), 30*time.Second)
	for _, o := range tb.Hosts {
		if o.Daemon().Exited() {
			t.Errorf("%s's daemon exited while an etcd member was down; log ends:\n%s", o.Name, tail(o.Daemon().LogPath, 20))
		}
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	if err := Eventually(30*time.Second, 300*time.Millisecond, func() error { _, err := leader.Status(ctx); return err }); err != nil {
		t.Fatalf("etcd member %s did not come back: %v", leader.Name, err)
	}
}

// etcdQuorumLost is the step "etcd quorum lost".
func (s *scenario) etcdQuorumLost(t *testing.T) {
	doomed := s.h2.Run(t, "cq", netName) // removed while etcd has no quorum
	before := s.ourRoutesByHost(t)
	restart := s.stopQuorum(t)
	time.Sleep(6 * time.Second) // watches fail, relists fail, heartbeats fail
	s.checkHeldWithoutQuorum(t, before)
	s.checkDockerAnswersWithoutQuorum(t, doomed)
	restart()
	s.waitEtcdRecovered(t)
	s.checkWorksAfterRecovery(t)
}

// ourRoutesByHost lists every host's routes of protocols 77 and 78.
func (s *scenario) ourRoutesByHost(t *testing.T) map[*Host][]string {
	tb := s.tb
	before := map[*Host][]string{}
	for _, h := range tb.Hosts {
		r, err := ourRoutes(h)
		if err != nil {
			t.Fatal(err)
		}
		before[h] = r
	}
	return before
}

// stopQuorum stops two of the three etcd members and returns what starts
// them again (once; also at the test's end if nobody did).
func (s *scenario) stopQuorum(t *testing.T) (restart func()) {
	tb := s.tb
	down := []*EtcdMember{tb.Etcd.Members[0], tb.Etcd.Members[2]}
	t.Logf("stopping etcd members %s and %s: no quorum", down[0].Name, down[1].Name)
	for _, m := range down {
		_ = m.Stop()
	}
	restarted := false
	restart = func() {
		if restarted {
			return
		}
		restarted = true
		for _, m := range down {
			if err := m.Start(); err != nil {
				t.Errorf("restart %s: %v", m.Name, err)
			}
		}
	}
	t.Cleanup(restart)
	return restart
}

// checkHeldWithoutQuorum checks that, with no etcd quorum, every host kept
// its routes (before) and its daemon, and containers still reach each
// other across hosts.
func (s *scenario) checkHeldWithoutQuorum(t *testing.T, before map[*Host][]string) {
	tb, c1, c2, c3, c4 := s.tb, s.c1, s.c2, s.c3, s.c4
	for _, h := range tb.Hosts {
		now, err := ourRoutes(h)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(before[h], now) {
			t.Errorf("%s's routes changed while etcd had no quorum: %s", h.Name, diff(before[h], now))
		}
		if h.Daemon().Exited() {
			t.Errorf("%s's daemon exited while etcd had no quorum; log ends:\n%s", h.Name, tail(h.Daemon().LogPath, 20))
		}
	}
	for _, pair := range [][2]*Container{{c1, c3}, {c3, c2}, {c2, c1}, {c4, c3}} {
		if err := pair[0].PingErr(pair[1].IP, 3); err != nil {
			t.Errorf("while etcd had no quorum: %v", err)
		}
	}
}

// checkDockerAnswersWithoutQuorum checks that docker run and docker rm -f
// (of doomed) answer quickly with no etcd quorum.
func (s *scenario) checkDockerAnswersWithoutQuorum(t *testing.T, doomed *Container) {
	h1, h2 := s.h1, s.h2
	// docker run and docker rm -f answer within 10 s, not after a minute:
	// the run with an error naming the datastore.
	st := time.Now()
	_, err := h1.RunErr("cq-new", netName)
	took := time.Since(st)
	t.Logf("docker run with no etcd quorum: %s: %v", took.Round(10*time.Millisecond), err)
	if err == nil || !strings.Contains(err.Error(), "etcd at ") {
		t.Errorf("docker run with no etcd quorum: %v, want an error naming the datastore", err)
	}
	if took > 10*time.Second {
		t.Errorf("docker run with no etcd quorum took %s, want under 10s", took)
	}
	h1.DockerErr(30*time.Second, "rm", "-f", "cq-new") //nolint:errcheck // never started
	st = time.Now()
	_, err = h2.DockerErr(30*time.Second, "rm", "-f", doomed.Name)
	took = time.Since(st)
	t.Logf("docker rm -f with no etcd quorum: %s: %v", took.Round(10*time.Millisecond), err)
	if took > 10*time.Second {
		t.Errorf("docker rm -f with no etcd quorum took %s, want under 10s", took)
	}
}

// waitEtcdRecovered waits until every etcd member answers again.
func (s *scenario) waitEtcdRecovered(t *testing.T) {
	tb, ctx := s.tb, s.ctx
	if err := Eventually(30*time.Second, 300*time.Millisecond, func() error {
		for _, m := range tb.Etcd.Members {
			if _, err := m.Status(ctx); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("etcd did not recover: %v", err)
	}
}

// checkWorksAfterRecovery checks that what needs etcd works again once it
// is back: a new shared network, containers in new blocks that reach each
// other, and networks isolated from each other.
func (s *scenario) checkWorksAfterRecovery(t *testing.T) {
	h1, h2, h3, c1, c2, c3 := s.h1, s.h2, s.h3, s.c1, s.c2, s.c3
	// Everything that needs etcd works again: a new network (shared),
	// a container in a block nobody has yet (a new route everywhere).
	h1.Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--subnet", net2Subnet, "net2")
	for _, h := range []*Host{h2, h3} {
		if err := Eventually(30*time.Second, 200*time.Millisecond, func() error {
			ok, err := h.HasNetwork("net2", "calico")
			if err == nil && !ok {
				err = fmt.Errorf("%s has no net2 after etcd recovered", h.Name)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := h1.RunErr("c6", "net2")
	if err != nil {
		t.Fatalf("after etcd recovered: %v", err)
	}
	c6 := c
	if !netip.MustParsePrefix(net2Subnet).Contains(c6.IP) {
		t.Errorf("%s: address outside net2's subnet %s", c6, net2Subnet)
	}
	// net2's containers reach each other across hosts (a new block on
	// host 3 too); networks stay isolated from each other, across hosts
	// and both ways (network policy, on by default).
	c7, err := h3.RunErr("c7", "net2")
	if err != nil {
		t.Fatalf("after etcd recovered: %v", err)
	}
	pingAllPairs(t, []*Container{c6, c7}, 30*time.Second)
	for _, pair := range [][2]*Container{{c6, c2}, {c3, c6}, {c7, c1}, {c1, c7}} {
		if err := pair[0].PingErr(pair[1].IP, 2); err == nil {
			t.Errorf("%s reached %s on another network: networks must be isolated", pair[0], pair[1])
		}
	}
}

// daemonKillRestart is the step "daemon kill -9 and restart".
func (s *scenario) daemonKillRestart(t *testing.T) {
	h3, c1, c2, c3, c4 := s.h3, s.c1, s.c2, s.c3, s.c4
	h := h3
	snapshot := func() ([]string, error) { return ourRoutes(h) }
	before, err := snapshot()
	if err != nil {
		t.Fatal(err)
	}
	vxBefore, _ := h.Link(VXLANDevice)
	vethsBefore, _ := h.Veths()
	// Watch the routes through the whole kill and restart: any moment
	// one is missing (or extra) is a flap.
	stop := make(chan struct{})
	var flaps []string
	var mwg sync.WaitGroup
	mwg.Add(1)
	go func() {
		defer mwg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			now, err := snapshot()
			if err == nil && !slices.Equal(now, before) && len(flaps) < 20 {
				flaps = append(flaps, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), diff(before, now)))
			}
		}
	}()
	c3.Exec(t, "sh", "-c", fmt.Sprintf("ping -i 0.2 %s >/tmp/ping.log 2>&1 &", c1.IP))
	oldPid := h.Daemon().Pid()
	err = h.StopDaemon(syscall.SIGKILL)
	t.Logf("daemon on %s (pid %d) killed with -9 (%v)", h.Name, oldPid, err)
	time.Sleep(2 * time.Second)
	// While it is down.
	for _, pair := range [][2]*Container{{c3, c1}, {c1, c3}, {c2, c3}, {c3, c4}} {
		if err := pair[0].PingErr(pair[1].IP, 3); err != nil {
			t.Errorf("with %s's daemon down: %v", h.Name, err)
		}
	}
	if err := h.StartDaemon(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("daemon on %s restarted (pid %d -> %d)", h.Name, oldPid, h.Daemon().Pid())
	time.Sleep(4 * time.Second) // a full route sync and endpoint reconcile after the start
	close(stop)
	mwg.Wait()
	after, _ := snapshot()
	if !slices.Equal(before, after) {
		t.Errorf("%s's routes changed across the restart: %v", h.Name, diff(before, after))
	}
	if len(flaps) > 0 {
		t.Errorf("%s's routes flapped during the kill and restart:\n%s", h.Name, strings.Join(flaps, "\n"))
	}
	vxAfter, _ := h.Link(VXLANDevice)
	if vxBefore == nil || vxAfter == nil || vxBefore.Attrs().Index != vxAfter.Attrs().Index {
		t.Errorf("%s: %s was recreated across the restart (%v -> %v)", h.Name, VXLANDevice, linkIndex(vxBefore), linkIndex(vxAfter))
	}
	vethsAfter, _ := h.Veths()
	if !slices.Equal(vethsBefore, vethsAfter) {
		t.Errorf("%s: veths %v before the restart, %v after", h.Name, vethsBefore, vethsAfter)
	}
	c3.Exec(t, "killall", "-INT", "ping")
	var sent, recv int
	var log string
	_ = Eventually(3*time.Second, 100*time.Millisecond, func() error {
		log = c3.Exec(t, "cat", "/tmp/ping.log")
		sent, recv = PingCounts(log)
		if sent == 0 {
			return fmt.Errorf("no summary yet")
		}
		return nil
	})
	t.Logf("continuous ping %s -> %s across the kill -9 and restart: %d sent, %d received", c3, c1, sent, recv)
	if sent < 20 || sent-recv > 1 {
		t.Errorf("continuous ping across the daemon's kill and restart: %d sent, %d received:\n%s", sent, recv, lastLines(log, 5))
	}
	// A container started after the restart reaches, and is reached.
	c5 := h.Run(t, "c5", netName)
	c5.MustReach(t, c1.IP, 20*time.Second)
	c2.MustReach(t, c5.IP, 20*time.Second)
}

// policyAcrossHosts is the step "policy across hosts: only role=frontend reaches role=db, on tcp/5432".
func (s *scenario) policyAcrossHosts(t *testing.T) {
	tb, h1, h2, h3 := s.tb, s.h1, s.h2, s.h3
	role := func(r string) []string { return []string{"--label", "org.projectcalico.label.role=" + r} }
	db := h3.Run(t, "pdb", netName, role("db")...) // behind VXLAN from host 1
	front := h1.Run(t, "pfront", netName, role("frontend")...)
	other := h2.Run(t, "pother", netName, role("other")...)
	for _, port := range []string{"5432", "8080"} {
		l, err := ListenInNetNS(db.NSPath(), "tcp", ":"+port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	reach := func(c *Container, port string) bool {
		conn, err := DialInNetNS(c.NSPath(), "tcp", net.JoinHostPort(db.IP.String(), port), time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}
	want := func(what string, f func() bool) {
		t.Helper()
		if err := Eventually(15*time.Second, 200*time.Millisecond, func() error {
			if !f() {
				return errors.New(what)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The network's profile: the same network, on any host, may talk.
	want("frontend reaches db:8080 across hosts before any policy", func() bool { return reach(front, "8080") })
	file := filepath.Join(tb.Dir, "db-from-frontend.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-from-frontend}
spec:
  order: 100
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'frontend'}
    destination: {ports: [5432]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := tb.Calicoctl(h2, "apply", "-f", file); err != nil {
		t.Fatalf("calicoctl apply: %v: %s", err, out)
	}
	t.Cleanup(func() { tb.Calicoctl(h2, "delete", "networkpolicy", "db-from-frontend") })
	want("frontend loses db:8080 under the policy", func() bool { return !reach(front, "8080") })
	want("frontend (host 1) reaches db (host 3) on tcp/5432", func() bool { return reach(front, "5432") })
	for i := 0; i < 3; i++ {
		if reach(other, "5432") {
			t.Fatalf("role=other on host 2 reached db:5432")
		}
	}
	if err := front.PingErr(db.IP, 2); err == nil {
		t.Errorf("ICMP from frontend to db passed; the policy allows only tcp/5432")
	}
	if out, err := tb.Calicoctl(h1, "delete", "networkpolicy", "db-from-frontend"); err != nil {
		t.Fatalf("calicoctl delete: %v: %s", err, out)
	}
	want("deleting the policy restores the profile", func() bool { return reach(other, "8080") })
	for _, c := range []*Container{db, front, other} {
		c.Host.Docker(t, "rm", "-f", c.Name)
	}
}

// borrowedAddresses is the step "borrowed addresses".
func (s *scenario) borrowedAddresses(t *testing.T) {
	tb, h1, h2, h3, ctx := s.tb, s.h1, s.h2, s.h3, s.ctx
	// A pool of one block: host 1 claims it, hosts 2 and 3 must borrow
	// from it, and every host needs a /32 route to each borrowed address
	// via the host that uses it (more specific than the block's route,
	// or than host 1's blackhole).
	tb.CreatePool(t, api.IPPool{Name: smallPool, CIDR: smallCIDR, BlockSize: 26, VXLANMode: api.EncapCrossSubnet, IPIPMode: api.EncapNever})
	h1.Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--subnet", smallCIDR, "netb")
	for _, h := range []*Host{h2, h3} {
		if err := Eventually(20*time.Second, 200*time.Millisecond, func() error {
			ok, err := h.HasNetwork("netb", "calico")
			if err == nil && !ok {
				err = fmt.Errorf("%s has no netb", h.Name)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	var bs []*Container
	for _, h := range tb.Hosts {
		bs = append(bs, h.Run(t, "b"+strings.TrimPrefix(h.Short, "h"), "netb"))
	}
	var blk api.Block
	if _, err := tb.Store.Get(ctx, api.BlockKey(netip.MustParsePrefix(smallCIDR)), &blk); err != nil || blk.Affinity != h1.Name {
		t.Fatalf("block %s: affinity %q (%v), want %s", smallCIDR, blk.Affinity, err, h1.Name)
	}
	err := Eventually(10*time.Second, 200*time.Millisecond, func() error {
		for _, on := range tb.Hosts {
			for _, b := range bs {
				if b.Host == on {
					continue
				}
				r, err := on.RouteTo(b.IP)
				if err != nil {
					return err
				}
				dev := VXLANDevice
				if b.Host.Subnet == on.Subnet {
					dev = HostIfName
				}
				if r.Gw != b.Host.IP() || r.Dev != dev {
					return fmt.Errorf("%s routes %s (%s, on %s) as %q, want via %s dev %s", on.Name, b.IP, b.Name, b.Host.Name, r, b.Host.IP(), dev)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range tb.Hosts {
		rs, _ := h.RoutesWithProto(BlockRouteProto)
		var small []string
		for _, r := range rs {
			if netip.MustParsePrefix(smallCIDR).Overlaps(r.Dst) {
				small = append(small, r.String())
			}
		}
		t.Logf("%s: %v", h.Name, small)
	}
	pingAllPairs(t, bs, 20*time.Second)
}

// removeEverything is the step "remove everything".
func (s *scenario) removeEverything(t *testing.T) {
	s.removeContainersAndNetworks(t)
	s.waitGarbageCollected(t)
	s.tb.DeletePool(t, poolName)
	s.tb.DeletePool(t, smallPool)
	if err := Eventually(20*time.Second, 250*time.Millisecond, s.leftBehind); err != nil {
		t.Fatal(err)
	}
	s.checkEtcdEmpty(t)
	s.checkDaemonsAlive(t)
}

// removeContainersAndNetworks removes every test container, and each
// network on a host that did not create it: it must go from every host.
func (s *scenario) removeContainersAndNetworks(t *testing.T) {
	tb, h1, h2, h3 := s.tb, s.h1, s.h2, s.h3
	for _, h := range tb.Hosts {
		if ids := strings.Fields(h.Docker(t, "ps", "-aq", "--filter", "label="+LabelKey)); len(ids) > 0 {
			h.Docker(t, append([]string{"rm", "-f"}, ids...)...)
		}
	}
	// On a host that did not create it: removed everywhere.
	for _, rm := range []struct {
		nw string
		on *Host
	}{{netName, h2}, {"net2", h3}, {"netb", h1}} {
		rm.on.Docker(t, "network", "rm", rm.nw)
		st := time.Now()
		for _, h := range tb.Hosts {
			err := Eventually(20*time.Second, 200*time.Millisecond, func() error {
				ok, err := h.HasNetwork(rm.nw, "calico")
				if err == nil && ok {
					err = fmt.Errorf("%s still has %s", h.Name, rm.nw)
				}
				return err
			})
			if err != nil {
				t.Fatalf("`docker network rm %s` on %s: %v", rm.nw, rm.on.Name, err)
			}
		}
		t.Logf("%s gone from every host %s after `docker network rm` on %s", rm.nw, time.Since(st).Round(10*time.Millisecond), rm.on.Name)
	}
}

// waitGarbageCollected waits until no endpoint record or address in use
// is left.
func (s *scenario) waitGarbageCollected(t *testing.T) {
	tb, ctx := s.tb, s.ctx
	// What the etcd outage left (cq's endpoint and address) is garbage
	// the collectors release once its grace period has passed.
	if err := Eventually(90*time.Second, time.Second, func() error {
		snap, err := ipam.LoadSnapshot(ctx, tb.Store)
		if err != nil {
			return err
		}
		if n := len(snap.Endpoints); n > 0 {
			return fmt.Errorf("%d endpoint records left (first: %s on %s)", n, snap.Endpoints[0].Value.ID, snap.Endpoints[0].Value.Host)
		}
		if r := snap.Check(ipam.CollectOptions{Now: time.Now(), Grace: 15 * time.Second}); r.InUse > 0 || len(r.Garbage) > 0 {
			return fmt.Errorf("%d addresses in use, %d garbage: %v", r.InUse, len(r.Garbage), r.Garbage)
		}
		return nil
	}); err != nil {
		t.Fatalf("after every container was removed: %v", err)
	}
}

// leftBehind says what any host still has of ours: routes of protocols
// 77/78, cali veths, the VXLAN device, NAT rules.
func (s *scenario) leftBehind() error {
	tb, ctx := s.tb, s.ctx
	var left []string
	for _, h := range tb.Hosts {
		for _, p := range []int{EndpointRouteProto, BlockRouteProto} {
			rs, err := h.RoutesWithProto(p)
			if err != nil {
				return err
			}
			for _, r := range rs {
				left = append(left, fmt.Sprintf("%s: route %s", h.Name, r))
			}
		}
		vs, err := h.Veths()
		if err != nil {
			return err
		}
		for _, v := range vs {
			left = append(left, fmt.Sprintf("%s: veth %s", h.Name, v))
		}
		if l, _ := h.Link(VXLANDevice); l != nil {
			left = append(left, fmt.Sprintf("%s: %s", h.Name, VXLANDevice))
		}
		out, _ := NSExec(ctx, h.NetNS, "iptables", "-t", "nat", "-S", "CALICO-LIBNETWORK-NAT")
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "-A ") {
				left = append(left, fmt.Sprintf("%s: NAT rule %s", h.Name, l))
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
	return nil
}

// checkEtcdEmpty checks that etcd holds no block, affinity, endpoint or
// network record any more.
func (s *scenario) checkEtcdEmpty(t *testing.T) {
	tb, ctx := s.tb, s.ctx
	for _, pfx := range []string{api.BlocksPrefix, api.AffinityPrefix, api.EndpointsPrefix, api.NetworksPrefix, api.SharedNetworksPrefix} {
		keys, err := tb.Store.Keys(ctx, pfx)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 0 {
			t.Errorf("etcd still holds %v", keys)
		}
	}
}

// checkDaemonsAlive checks that no daemon exited, and logs the errors
// each logged in its last run.
func (s *scenario) checkDaemonsAlive(t *testing.T) {
	tb := s.tb
	for _, h := range tb.Hosts {
		if h.Daemon().Exited() {
			t.Errorf("%s's daemon exited; log ends:\n%s", h.Name, tail(h.Daemon().LogPath, 20))
		}
		if n := len(grepLines(lastRun(h.DaemonLog()), "level=ERROR")); n > 0 {
			t.Logf("%s's daemon logged %d errors:\n%s", h.Name, n, strings.Join(grepLines(lastRun(h.DaemonLog()), "level=ERROR"), "\n"))
		}
	}
}

// ourRoutes lists the host's routes with the daemon's protocols (77, 78).
func ourRoutes(h *Host) ([]string, error) {
	var out []string
	for _, p := range []int{EndpointRouteProto, BlockRouteProto} {
		rs, err := h.RoutesWithProto(p)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			out = append(out, r.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

// pingAllPairs pings every ordered pair, in parallel per source.
func pingAllPairs(t *testing.T, cs []*Container, within time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	st := time.Now()
	for _, a := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range cs {
				if a == b {
					continue
				}
				if err := reach(a, b.IP, within); err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d pairs cannot ping:\n%s", len(errs), len(cs)*(len(cs)-1), strings.Join(errs, "\n"))
	}
	t.Logf("all %d ordered pairs of %d containers ping (%s)", len(cs)*(len(cs)-1), len(cs), time.Since(st).Round(10*time.Millisecond))
}

// reach waits until a first ping gets through, then wants 3 in a row.
func reach(c *Container, ip netip.Addr, within time.Duration) error {
	deadline := time.Now().Add(within)
	var err error
	for {
		if _, err = c.ExecErr(10*time.Second, "ping", "-c", "1", "-W", "1", ip.String()); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("%s cannot reach %s within %s: %v", c, ip, within, err)
	}
	return c.PingErr(ip, 3)
}

// whoamiServer answers every TCP connection with "from=<client address>"
// and closes it.
type whoamiServer struct {
	mu   sync.Mutex
	from []string
}

func (w *whoamiServer) seen() []string { w.mu.Lock(); defer w.mu.Unlock(); return slices.Clone(w.from) }

// whoami serves inside the namespace at nsPath until the test ends.
func whoami(t *testing.T, nsPath, addr string) *whoamiServer {
	t.Helper()
	l, err := ListenInNetNS(nsPath, "tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, nsPath, err)
	}
	w := &whoamiServer{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			w.mu.Lock()
			w.from = append(w.from, host)
			w.mu.Unlock()
			fmt.Fprintf(c, "from=%s\n", host)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return w
}

var fromRE = regexp.MustCompile(`from=(\S+)`)

// connect opens a TCP connection from inside the container (busybox nc)
// and returns the address the server saw.
func connect(t *testing.T, c *Container, ip string, port int) string {
	t.Helper()
	var out string
	err := Eventually(15*time.Second, 500*time.Millisecond, func() error {
		var err error
		out, err = c.ExecErr(15*time.Second, "sh", "-c", fmt.Sprintf("sleep 1 | nc -w 5 %s %d", ip, port))
		if err == nil && !fromRE.MatchString(out) {
			err = fmt.Errorf("answer %q", out)
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: connect to %s:%d: %v", c, ip, port, err)
	}
	return fromRE.FindStringSubmatch(out)[1]
}

func first(lines []string) string {
	if len(lines) == 0 {
		return "(none)"
	}
	return lines[0]
}

func diff(a, b []string) string {
	var gone, added []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			gone = append(gone, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			added = append(added, x)
		}
	}
	return fmt.Sprintf("missing %v, extra %v", gone, added)
}

func linkIndex(l netlink.Link) any {
	if l == nil {
		return "none"
	}
	return l.Attrs().Index
}

// usableWhereListed creates networks on each host in turn and, on every
// other host, starts a container on each the moment `docker network ls`
// shows it there: a network Docker lists must be usable at once (no window
// in which its record is unknown to the daemon).
func usableWhereListed(t *testing.T, tb *Testbed) {
	const rounds = 6
	for i := 0; i < rounds; i++ {
		on := tb.Hosts[i%len(tb.Hosts)]
		name := fmt.Sprintf("burst%d", i)
		on.Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--label", LabelKey+"="+tb.ID, name)
		created := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(tb.Hosts))
		for _, h := range tb.Hosts {
			if h == on {
				continue
			}
			wg.Add(1)
			go func(h *Host) {
				defer wg.Done()
				if err := Eventually(20*time.Second, 20*time.Millisecond, func() error {
					ok, err := h.HasNetwork(name, "calico")
					if err == nil && !ok {
						err = fmt.Errorf("%s does not list %s yet", h.Name, name)
					}
					return err
				}); err != nil {
					errs <- err
					return
				}
				listed := time.Since(created)
				if _, err := h.DockerErr(time.Minute, "run", "--rm", "--net", name, "--label", LabelKey+"="+tb.ID, Image, "true"); err != nil {
					errs <- fmt.Errorf("%s listed %s %s after it was created on %s, but a container cannot start on it: %v", h.Name, name, listed.Round(time.Millisecond), on.Name, err)
				}
			}(h)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if i == rounds-1 {
			reuseName(t, tb, name, on, tb.Hosts[(i+1)%len(tb.Hosts)])
			on = tb.Hosts[(i+1)%len(tb.Hosts)]
		}
		on.Docker(t, "network", "rm", name)
		for _, h := range tb.Hosts {
			if err := Eventually(20*time.Second, 200*time.Millisecond, func() error {
				ok, err := h.HasNetwork(name, "calico")
				if err == nil && ok {
					err = fmt.Errorf("%s still lists %s after its removal on %s", h.Name, name, on.Name)
				}
				return err
			}); err != nil {
				t.Error(err)
			}
		}
	}
}

// reuseName removes a shared network on one host and at once creates one of
// the same name on another: the old copies going away must not take the
// new network with them (every host ends up listing it, and keeps it).
func reuseName(t *testing.T, tb *Testbed, name string, from, to *Host) {
	from.Docker(t, "network", "rm", name)
	// The removal reaches the other hosts through the datastore: until
	// to's copy is gone (its sharing pass follows the record's deletion
	// within moments), its engine refuses the name as taken.
	start := time.Now()
	if err := Eventually(10*time.Second, 50*time.Millisecond, func() error {
		_, err := to.DockerErr(20*time.Second, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--label", LabelKey+"="+tb.ID, name)
		return err
	}); err != nil {
		t.Fatalf("%s: %s could not be created again within 10s of its removal on %s: %v", to.Name, name, from.Name, err)
	}
	t.Logf("%s: %s created again %v after its removal on %s", to.Name, name, time.Since(start).Round(time.Millisecond), from.Name)
	id := to.Docker(t, "network", "inspect", "-f", "{{.Id}}", name)
	for _, h := range tb.Hosts {
		if err := Eventually(30*time.Second, 200*time.Millisecond, func() error {
			ok, err := h.HasNetwork(name, "calico")
			if err == nil && !ok {
				err = fmt.Errorf("%s does not list %s, created again on %s", h.Name, name, to.Name)
			}
			if err == nil && h == to {
				if got, _ := h.DockerErr(20*time.Second, "network", "inspect", "-f", "{{.Id}}", name); strings.TrimSpace(got) != id {
					err = fmt.Errorf("%s's %s was replaced", h.Name, name)
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(4 * time.Second) // several sync passes on every host
	for _, h := range tb.Hosts {
		if _, err := h.DockerErr(time.Minute, "run", "--rm", "--net", name, "--label", LabelKey+"="+tb.ID, Image, "true"); err != nil {
			t.Errorf("%s: after %s was removed on %s and created again on %s: %v", h.Name, name, from.Name, to.Name, err)
		}
	}
}
