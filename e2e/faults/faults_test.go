//go:build e2e

package faults

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// Every handler, called twice with the same request, gives the same answer
// and changes nothing in the datastore the second time.
func TestReplayEveryHandler(t *testing.T) {
	begin(t)
	ns := netns(t)
	d := newDaemon(t, ns)
	d.start()
	s := d.store()

	twice := func(name, sock, path string, req any, resp func() any) {
		t.Helper()
		first, second := resp(), resp()
		if err := call(sock, path, req, first); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		before := state(t, s)
		if err := call(sock, path, req, second); err != nil {
			t.Fatalf("%s replayed: %v", name, err)
		}
		if fmt.Sprint(first) != fmt.Sprint(second) {
			t.Errorf("%s replayed answered %+v, first %+v", name, second, first)
		}
		if after := state(t, s); after != before {
			t.Errorf("%s replayed changed the datastore:\nbefore:\n%s\nafter:\n%s", name, before, after)
		}
	}
	none := func() any { return &struct{}{} }
	var pool requestPoolResp
	mustCall(t, d.ipamSock(), "/IpamDriver.RequestPool", requestPool{AddressSpace: ipamdriver.LocalAddressSpace}, &pool)
	twice("RequestPool", d.ipamSock(), "/IpamDriver.RequestPool", requestPool{AddressSpace: ipamdriver.LocalAddressSpace}, func() any { return &requestPoolResp{} })
	netID := strings.Repeat("ab", 32)
	twice("CreateNetwork", d.netSock(), "/NetworkDriver.CreateNetwork", createNetwork{NetworkID: netID,
		IPv4Data: []ipamData{{AddressSpace: ipamdriver.LocalAddressSpace, Pool: pool.Pool, Gateway: "0.0.0.0/0"}}}, none)
	e := newLife(d, netID, pool.PoolID)
	reqAddr := requestAddress{PoolID: pool.PoolID, Options: map[string]string{"com.docker.network.endpoint.macaddress": e.mac}}
	var addr requestAddressResp
	twice("RequestAddress", d.ipamSock(), "/IpamDriver.RequestAddress", reqAddr, func() any { return &requestAddressResp{} })
	mustCall(t, d.ipamSock(), "/IpamDriver.RequestAddress", reqAddr, &addr)
	e.ip = addr.Address
	fixed := newLife(d, netID, pool.PoolID)
	twice("RequestAddress --ip", d.ipamSock(), "/IpamDriver.RequestAddress", requestAddress{PoolID: pool.PoolID, Address: "192.168.77.7",
		Options: map[string]string{"com.docker.network.endpoint.macaddress": fixed.mac}}, func() any { return &requestAddressResp{} })
	twice("CreateEndpoint", d.netSock(), "/NetworkDriver.CreateEndpoint", createEndpoint{NetworkID: netID, EndpointID: e.epID,
		Interface: endpointIface{Address: e.ip, MacAddress: e.mac}}, func() any { return &createEndpointResp{} })
	twice("Join", d.netSock(), "/NetworkDriver.Join", joinReq{NetworkID: netID, EndpointID: e.epID, SandboxKey: "/x"}, func() any { return &joinResp{} })
	if !linkExists(ns, e.hostIface()) {
		t.Fatalf("no veth %s after Join", e.hostIface())
	}
	twice("Leave", d.netSock(), "/NetworkDriver.Leave", endpointReq{NetworkID: netID, EndpointID: e.epID}, none)
	twice("DeleteEndpoint", d.netSock(), "/NetworkDriver.DeleteEndpoint", endpointReq{NetworkID: netID, EndpointID: e.epID}, none)
	twice("ReleaseAddress", d.ipamSock(), "/IpamDriver.ReleaseAddress", releaseAddress{PoolID: pool.PoolID, Address: addrOnly(e.ip)}, none)
	twice("ReleaseAddress --ip", d.ipamSock(), "/IpamDriver.ReleaseAddress", releaseAddress{PoolID: pool.PoolID, Address: "192.168.77.7"}, none)
	twice("ReleasePool", d.ipamSock(), "/IpamDriver.ReleasePool", map[string]string{"PoolID": pool.PoolID}, none)
	twice("DeleteNetwork", d.netSock(), "/NetworkDriver.DeleteNetwork", map[string]string{"NetworkID": netID}, none)
	if linkExists(ns, e.hostIface()) {
		t.Error("veth left after Leave and DeleteEndpoint")
	}
	snap := snapshot(t, s)
	for _, ip := range []string{addrOnly(e.ip), "192.168.77.7"} {
		if info := snap.Lookup(netip.MustParseAddr(ip)); info.Owner != nil {
			t.Errorf("%s still held by %s after release", ip, info.Owner)
		}
	}
	if len(snap.Handles) != 0 || len(snap.Endpoints) != 0 {
		t.Errorf("records left: %d handles, %d endpoints", len(snap.Handles), len(snap.Endpoints))
	}
}

// The ABA case: an endpoint's address released, taken by another endpoint,
// then the first release arrives again: the second holder keeps it.
func TestLateReleaseKeepsTheNewHolder(t *testing.T) {
	begin(t)
	ns := netns(t)
	d := newDaemon(t, ns)
	d.start()
	s := d.store()
	netID, poolID := network(t, d)
	const ip = "192.168.88.8"

	a := newLife(d, netID, poolID)
	a.request(t, ip)
	a.create(t)
	a.join(t)
	a.leave(t)
	a.delete(t)
	a.release(t)

	b := newLife(d, netID, poolID)
	b.request(t, ip)
	b.create(t)
	b.join(t)
	for i := 0; i < 3; i++ {
		a.release(t) // late, or replayed: Docker does not say whose address it means
	}
	info := snapshot(t, s).Lookup(netip.MustParseAddr(ip))
	if info.Owner == nil || info.Owner.Handle != ipam.HandleFor(b.mac) || info.State != api.StateBound {
		t.Fatalf("%s after the late release: %+v, want still bound to B (%s)", ip, info, ipam.HandleFor(b.mac))
	}
	c := newLife(d, netID, poolID)
	err := call(d.ipamSock(), "/IpamDriver.RequestAddress", requestAddress{PoolID: poolID, Address: ip,
		Options: map[string]string{"com.docker.network.endpoint.macaddress": c.mac}}, nil)
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("a third endpoint asking for %s: %v, want already in use", ip, err)
	}
	if !linkExists(ns, b.hostIface()) {
		t.Fatal("B's veth is gone")
	}
}

// kill -9 between RequestAddress and CreateEndpoint, and between
// CreateEndpoint and Join: once the grace period has passed the garbage is
// gone, and the endpoint that lived through it keeps everything.
func TestCrashBetweenSteps(t *testing.T) {
	begin(t)
	ns := netns(t)
	const grace = 4 * time.Second
	d := newDaemon(t, ns, "--ipam-gc-grace", grace.String(), "--ipam-gc-interval", "2s")
	d.start()
	netID, poolID := network(t, d)
	engine := startEngine(t, d, netID)
	d.kill9()
	d.start() // now with its stand-in engine

	live := newLife(d, netID, poolID)
	live.request(t, "")
	live.create(t)
	live.join(t)
	engine.knows(live.epID, live.mac)

	// Docker asked for an address; the daemon died before CreateEndpoint.
	half := newLife(d, netID, poolID)
	half.request(t, "")
	d.kill9()
	d.start()
	// Docker created the endpoint; the daemon died before Join, so
	// Docker's rollback (DeleteEndpoint, ReleaseAddress) never arrived.
	orphan := newLife(d, netID, poolID)
	orphan.request(t, "")
	orphan.create(t)
	d.kill9()
	d.start()

	s := d.store()
	held := func(ip string) bool { return snapshot(t, s).Lookup(netip.MustParseAddr(addrOnly(ip))).Owner != nil }
	if !held(half.ip) || !held(orphan.ip) {
		t.Fatal("test set-up: the half-made allocations should still be held right after the crash")
	}
	start := time.Now()
	err := eventually(grace+30*time.Second, func() error {
		snap := snapshot(t, s)
		for _, ip := range []string{half.ip, orphan.ip} {
			if o := snap.Lookup(netip.MustParseAddr(addrOnly(ip))).Owner; o != nil {
				return fmt.Errorf("%s still held by %s", ip, o)
			}
		}
		for _, e := range snap.Endpoints {
			if e.Value.ID == orphan.epID {
				return fmt.Errorf("orphan endpoint record still there")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("garbage collected %s after the last restart (grace %s)", time.Since(start).Round(time.Second), grace)
	snap := snapshot(t, s)
	if info := snap.Lookup(netip.MustParseAddr(addrOnly(live.ip))); info.Owner == nil || info.State != api.StateBound {
		t.Fatalf("the live endpoint's address %s: %+v, want still bound", live.ip, info)
	}
	if !linkExists(ns, live.hostIface()) {
		t.Fatal("the live endpoint's veth is gone")
	}
	if r := snap.Check(ipam.CollectOptions{Now: time.Now(), Grace: grace}); len(r.Garbage) != 0 {
		t.Fatalf("ipam check still finds garbage: %+v", r.Garbage)
	}
}

// The datastore lost everything (embedded etcd data removed) while
// endpoints ran: after a restart they keep their veths, their records are
// rebuilt, ipam counts them and no new request gets one of their addresses.
func TestDatastoreWipeKeepsRunningEndpoints(t *testing.T) {
	begin(t)
	ns := netns(t)
	d := newDaemon(t, ns)
	d.start()
	netID, poolID := network(t, d)
	var lives []*endpointLife
	for i := 0; i < 3; i++ {
		e := newLife(d, netID, poolID)
		e.request(t, "")
		e.create(t)
		e.join(t)
		lives = append(lives, e)
	}
	d.kill9()
	if err := os.RemoveAll(filepath.Join(d.dataDir, "etcd")); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(d.dataDir, "etcd-endpoint"))
	d.start()
	s := d.store()
	snap := snapshot(t, s)
	for _, e := range lives {
		if !linkExists(ns, e.hostIface()) {
			t.Errorf("endpoint %s lost its veth", e.epID[:12])
		}
		info := snap.Lookup(netip.MustParseAddr(addrOnly(e.ip)))
		if info.Owner == nil || info.State != api.StateBound || len(info.Endpoints) != 1 || !info.Endpoints[0].Adopted {
			t.Errorf("after the wipe %s: %+v, want held, bound and its endpoint adopted", e.ip, info)
		}
	}
	used := map[string]bool{}
	for _, e := range lives {
		used[addrOnly(e.ip)] = true
	}
	for i := 0; i < 70; i++ { // more than a block: every free address of it and then some
		n := newLife(d, netID, poolID)
		n.request(t, "")
		if used[addrOnly(n.ip)] {
			t.Fatalf("request %d got %s, a running endpoint's address", i, n.ip)
		}
		used[addrOnly(n.ip)] = true
	}
	out, err := exec.Command("ip", "-n", ns, "route", "show", "proto", "77").CombinedOutput()
	if err != nil {
		t.Fatal(err, string(out))
	}
	for _, e := range lives {
		if !strings.Contains(string(out), addrOnly(e.ip)+" dev "+e.hostIface()) {
			t.Errorf("host route to %s lost:\n%s", e.ip, out)
		}
	}
}

// With etcd stopped, every Docker call answers within 10 s, with an error
// that names the datastore.
func TestEtcdDownAnswersInSeconds(t *testing.T) {
	begin(t)
	ns := netns(t)
	etcd, endpoint := etcdOnVeth(t, ns, "10.251.77")
	d := newDaemon(t, ns, "--etcd-endpoints", endpoint)
	d.start()
	netID, poolID := network(t, d)
	before := newLife(d, netID, poolID)
	before.request(t, "")
	before.create(t)
	before.join(t)

	if err := etcd.Process.Signal(syscall.SIGSTOP); err != nil { // hung, the worst case: nothing answers
		t.Fatal(err)
	}
	e := newLife(d, netID, poolID)
	steps := []struct {
		name  string
		sock  string
		path  string
		req   any
		fails bool
	}{
		{"RequestAddress", d.ipamSock(), "/IpamDriver.RequestAddress", requestAddress{PoolID: poolID, Options: map[string]string{"com.docker.network.endpoint.macaddress": e.mac}}, true},
		{"CreateEndpoint", d.netSock(), "/NetworkDriver.CreateEndpoint", createEndpoint{NetworkID: netID, EndpointID: e.epID, Interface: endpointIface{Address: "192.168.99.9/32", MacAddress: e.mac}}, true},
		{"Leave", d.netSock(), "/NetworkDriver.Leave", endpointReq{NetworkID: netID, EndpointID: before.epID}, false},
		{"DeleteEndpoint", d.netSock(), "/NetworkDriver.DeleteEndpoint", endpointReq{NetworkID: netID, EndpointID: before.epID}, true},
		{"ReleaseAddress", d.ipamSock(), "/IpamDriver.ReleaseAddress", releaseAddress{PoolID: poolID, Address: addrOnly(before.ip)}, true},
	}
	var rm time.Duration // docker rm -f: Leave, DeleteEndpoint, ReleaseAddress
	for _, st := range steps {
		start := time.Now()
		err := call(st.sock, st.path, st.req, nil)
		took := time.Since(start)
		if st.name == "Leave" || st.name == "DeleteEndpoint" || st.name == "ReleaseAddress" {
			rm += took
		}
		t.Logf("%s with etcd stopped: %s, %v", st.name, took.Round(10*time.Millisecond), err)
		if took > 10*time.Second {
			t.Errorf("%s took %s with etcd stopped, want under 10s", st.name, took)
		}
		if st.fails && (err == nil || !strings.Contains(err.Error(), endpoint)) {
			t.Errorf("%s: %v, want an error naming the datastore %s", st.name, err, endpoint)
		}
	}
	t.Logf("docker rm -f's calls with etcd stopped: %s", rm.Round(10*time.Millisecond))
	if rm > 10*time.Second {
		t.Errorf("docker rm -f's calls took %s together with etcd stopped, want under 10s", rm)
	}
	if err := etcd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := eventually(30*time.Second, func() error {
		return call(d.ipamSock(), "/IpamDriver.RequestAddress", requestAddress{PoolID: poolID,
			Options: map[string]string{"com.docker.network.endpoint.macaddress": e.mac}}, nil)
	}); err != nil {
		t.Fatalf("etcd back, but the daemon still fails: %v", err)
	}
}
