package sharing_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/engineapi"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
	"github.com/calico-libnetwork/calico-libnetwork/docker/sharing"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testengine"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

// host is one Docker host: its engine (the stand-in, calling the real
// network driver as dockerd calls the plugin), its own datastore client on
// the shared etcd, and its syncer.
type host struct {
	name   string
	engine *testengine.Engine
	docker *engineapi.Client // what the user's docker CLI talks to
	store  *datastore.Store
	syncer *sharing.Syncer
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

func newHost(t *testing.T, etcd *datastore.Store, name string, v testengine.Version) *host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := datastore.Connect(ctx, datastore.Config{Endpoints: etcd.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	h := &host{name: name, engine: testengine.Start(t, v), store: store, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	drv := netdriver.New(netdriver.Config{Store: store, Host: name, Log: log})
	h.engine.SetPlugin(func(n testengine.Network) error { return drv.CreateNetwork(createRequest(n)) },
		func(n testengine.Network) error {
			return drv.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: n.ID})
		})
	if h.docker, err = engineapi.New(h.engine.Host()); err != nil {
		t.Fatal(err)
	}
	h.syncer = sharing.New(store, h.docker, name, "calico", "calico-ipam", log)
	return h
}

// createRequest is the CreateNetwork call dockerd makes to the driver for
// a network with the calico IPAM driver.
func createRequest(n testengine.Network) *network.CreateNetworkRequest {
	generic := map[string]interface{}{}
	for k, v := range n.Options {
		generic[k] = v
	}
	req := &network.CreateNetworkRequest{NetworkID: n.ID,
		Options: map[string]interface{}{"com.docker.network.generic": generic, "com.docker.network.enable_ipv6": n.EnableIPv6}}
	v4 := []*network.IPAMData{{AddressSpace: ipamdriver.LocalAddressSpace, Pool: "0.0.0.0/0"}}
	var v6 []*network.IPAMData
	for _, s := range n.Subnets {
		d := &network.IPAMData{AddressSpace: ipamdriver.LocalAddressSpace, Pool: s.Subnet}
		if strings.Contains(s.Subnet, ":") {
			v6 = append(v6, d)
		} else {
			v4 = []*network.IPAMData{d}
		}
	}
	if n.EnableIPv6 && v6 == nil {
		v6 = []*network.IPAMData{{AddressSpace: ipamdriver.LocalAddressSpace, Pool: "::/0"}}
	}
	req.IPv4Data, req.IPv6Data = v4, v6
	return req
}

var ctx = context.Background()

// create is `docker network create --driver calico --ipam-driver calico-ipam`.
func (h *host) create(t *testing.T, name string, subnets []engineapi.IPAMConfig, opts map[string]string) string {
	t.Helper()
	id, err := h.docker.CreateNetwork(ctx, engineapi.CreateNetwork{Name: name, CheckDuplicate: true, Driver: "calico",
		IPAM: engineapi.IPAM{Driver: "calico-ipam", Config: subnets}, Options: opts})
	if err != nil {
		t.Fatalf("%s: docker network create %s: %v", h.name, name, err)
	}
	return id
}

func (h *host) remove(t *testing.T, name string) {
	t.Helper()
	if err := h.docker.RemoveNetwork(ctx, name); err != nil {
		t.Fatalf("%s: docker network rm %s: %v", h.name, name, err)
	}
}

func (h *host) sync(t *testing.T) {
	t.Helper()
	if err := h.syncer.Sync(ctx); err != nil {
		t.Fatalf("%s: sync: %v", h.name, err)
	}
}

func (h *host) network(name string) (testengine.Network, bool) {
	n, ok := h.engine.Networks()[name]
	return n, ok
}

func shared(t *testing.T, s *datastore.Store, name string) (api.SharedNetwork, bool) {
	t.Helper()
	var sn api.SharedNetwork
	_, err := s.Get(ctx, api.SharedNetworkKey(name), &sn)
	if errors.Is(err, datastore.ErrNotFound) {
		return sn, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return sn, true
}

func creates(e *testengine.Engine) int {
	n := 0
	for _, r := range e.Requests() {
		if r.Path == "/networks/create" {
			n++
		}
	}
	return n
}

var versions = []testengine.Version{testengine.Docker2010, testengine.Docker285}

// A network created on one host appears on the other with its settings,
// and removing it on either host removes it on both.
func TestSharedByName(t *testing.T) {
	for _, v := range versions {
		for _, removeOn := range []string{"host-a", "host-b"} {
			t.Run(string(v)+"/removed on "+removeOn, func(t *testing.T) {
				etcd := testetcd.Start(t)
				a, b := newHost(t, etcd, "host-a", v), newHost(t, etcd, "host-b", v)
				a.create(t, "net1", []engineapi.IPAMConfig{{Subnet: "10.77.0.0/24", IPRange: "10.77.0.128/25"}}, map[string]string{"open": "true"})
				a.sync(t)
				sn, ok := shared(t, etcd, "net1")
				if !ok || sn.CreatedBy != "host-a" || len(sn.IPv4) != 1 || sn.IPv4[0] != (api.Subnet{Subnet: "10.77.0.0/24", IPRange: "10.77.0.128/25"}) ||
					sn.Options["open"] != "true" {
					t.Fatalf("shared record %+v (found %v)", sn, ok)
				}

				b.sync(t)
				nb, ok := b.network("net1")
				if !ok {
					t.Fatal("net1 was not created on host-b")
				}
				if nb.Driver != "calico" || nb.IPAMDriver != "calico-ipam" || len(nb.Subnets) != 1 || nb.Subnets[0].Subnet != "10.77.0.0/24" ||
					nb.Subnets[0].IPRange != "10.77.0.128/25" || nb.Options["open"] != "true" || nb.Labels[sharing.SharedLabel] != "true" {
					t.Fatalf("net1 on host-b: %+v", nb)
				}
				if b.logs.count("created network shared by another host") != 1 {
					t.Fatalf("host-b's log: %s", b.logs.b.String())
				}

				// Further passes change nothing.
				before := creates(a.engine) + creates(b.engine)
				for range 2 {
					a.sync(t)
					b.sync(t)
				}
				if n := creates(a.engine) + creates(b.engine); n != before {
					t.Fatalf("%d more network creations on passes with nothing to do", n-before)
				}
				if len(a.engine.Networks()) != 1 || len(b.engine.Networks()) != 1 {
					t.Fatalf("networks: host-a %v, host-b %v", a.engine.Networks(), b.engine.Networks())
				}

				rm, other := a, b
				if removeOn == "host-b" {
					rm, other = b, a
				}
				rm.remove(t, "net1")
				if _, ok := shared(t, etcd, "net1"); ok {
					t.Fatal("the shared record outlived the network's removal")
				}
				other.sync(t)
				if _, ok := other.network("net1"); ok {
					t.Fatalf("net1 still on %s after it was removed on %s", other.name, rm.name)
				}
				if keys, err := etcd.Keys(ctx, api.NetworksPrefix); err != nil || len(keys) != 0 {
					t.Fatalf("network records left: %v %v", keys, err)
				}
				// And it stays removed: nobody recreates it.
				a.sync(t)
				b.sync(t)
				if len(a.engine.Networks())+len(b.engine.Networks()) != 0 {
					t.Fatalf("recreated: host-a %v, host-b %v", a.engine.Networks(), b.engine.Networks())
				}
			})
		}
	}
}

// A network created without --subnet takes any pool on every host: the
// other host creates it without a subnet, not with 0.0.0.0/0.
func TestAnyPool(t *testing.T) {
	etcd := testetcd.Start(t)
	a, b := newHost(t, etcd, "host-a", testengine.Docker285), newHost(t, etcd, "host-b", testengine.Docker2010)
	id := a.create(t, "anypool", nil, nil)
	// dockerd records what calico-ipam's RequestPool answered.
	n, _ := a.network("anypool")
	n.Subnets = []testengine.Subnet{{Subnet: "0.0.0.0/0"}}
	a.engine.AddNetwork(n)
	if n.ID != id {
		t.Fatal("network replaced under another ID")
	}
	a.sync(t)
	b.sync(t)
	nb, ok := b.network("anypool")
	if !ok || len(nb.Subnets) != 0 {
		t.Fatalf("anypool on host-b: %+v (found %v), want no --subnet", nb, ok)
	}
}

// Networks the datastore has no record of (made before it, or not through
// this driver) are left alone and not shared.
func TestUnknownNetworksNotShared(t *testing.T) {
	etcd := testetcd.Start(t)
	a := newHost(t, etcd, "host-a", testengine.Docker2010)
	a.engine.AddNetwork(testengine.Network{Name: "old", Driver: "calico", IPAMDriver: "calico-ipam"}) // no CreateNetwork call
	a.engine.AddNetwork(testengine.Network{Name: "br", Driver: "bridge", IPAMDriver: "default"})
	a.sync(t)
	if keys, err := etcd.Keys(ctx, api.SharedNetworksPrefix); err != nil || len(keys) != 0 {
		t.Fatalf("shared: %v %v", keys, err)
	}
	if len(a.engine.Networks()) != 2 {
		t.Fatalf("networks: %v", a.engine.Networks())
	}
}

// The same name on two hosts with other settings: one network, kept on
// both; the second host warns once and does not create a duplicate; a
// removal on it still removes the network everywhere.
func TestSameNameOtherSettings(t *testing.T) {
	etcd := testetcd.Start(t)
	a, b := newHost(t, etcd, "host-a", testengine.Docker285), newHost(t, etcd, "host-b", testengine.Docker285)
	a.create(t, "net1", []engineapi.IPAMConfig{{Subnet: "10.77.0.0/24"}}, nil)
	b.create(t, "net1", []engineapi.IPAMConfig{{Subnet: "10.78.0.0/24"}}, nil)
	a.sync(t)
	for range 3 {
		b.sync(t)
	}
	if sn, _ := shared(t, etcd, "net1"); sn.CreatedBy != "host-a" || sn.IPv4[0].Subnet != "10.77.0.0/24" {
		t.Fatalf("shared record %+v", sn)
	}
	if nb, _ := b.network("net1"); len(b.engine.Networks()) != 1 || nb.Subnets[0].Subnet != "10.78.0.0/24" {
		t.Fatalf("host-b's networks: %v", b.engine.Networks())
	}
	if n := b.logs.count("other settings"); n != 1 {
		t.Fatalf("host-b warned %d times; log: %s", n, b.logs.b.String())
	}
	b.remove(t, "net1")
	a.sync(t)
	if _, ok := a.network("net1"); ok {
		t.Fatal("net1 removed on host-b but still on host-a")
	}
}

// Docker refusing to create or remove a shared network: the pass reports
// it, warns once however often it retries, and succeeds once Docker does.
func TestDockerRefuses(t *testing.T) {
	etcd := testetcd.Start(t)
	a, b := newHost(t, etcd, "host-a", testengine.Docker2010), newHost(t, etcd, "host-b", testengine.Docker2010)
	a.create(t, "net1", nil, nil)
	a.sync(t)

	b.engine.SetFault("POST /networks/create", testengine.Fault{Status: 500, Body: `{"message":"plugin calico not found"}`})
	for range 3 {
		if err := b.syncer.Sync(ctx); err == nil || !strings.Contains(err.Error(), "plugin calico not found") {
			t.Fatalf("sync with Docker refusing: %v", err)
		}
	}
	if n := b.logs.count("cannot create shared network"); n != 1 {
		t.Fatalf("warned %d times", n)
	}
	b.engine.SetFault("POST /networks/create", testengine.Fault{})
	b.sync(t)
	idB := b.engine.Networks()["net1"].ID
	if idB == "" {
		t.Fatal("net1 not created on host-b once Docker accepted")
	}

	// A container still on host-b's copy: removal on host-a cannot finish
	// there until it goes.
	b.engine.AddContainer(testengine.Container{ID: "c1", Name: "web", Endpoints: map[string]string{idB: "ep1"}})
	a.remove(t, "net1")
	for range 3 {
		if err := b.syncer.Sync(ctx); err == nil || !strings.Contains(err.Error(), "active endpoints") {
			t.Fatalf("sync with a container attached: %v", err)
		}
	}
	if _, ok := b.network("net1"); !ok {
		t.Fatal("net1 removed from under its container")
	}
	if n := b.logs.count("cannot be removed here"); n != 1 {
		t.Fatalf("warned %d times", n)
	}
	// Meanwhile nobody republishes the network being withdrawn.
	if _, ok := shared(t, etcd, "net1"); ok {
		t.Fatal("host-b republished a network removed on host-a")
	}
	b.engine.RemoveContainer("c1")
	b.sync(t)
	if _, ok := b.network("net1"); ok {
		t.Fatal("net1 still on host-b after its container left")
	}
}

// A shared record that does not decode is named in the pass's error and
// in one warning, and only the network of that name is treated apart: a
// host that has the network rewrites the record from its own copy, and
// every other network goes on being shared meanwhile.
func TestBadSharedRecord(t *testing.T) {
	etcd := testetcd.Start(t)
	a, b := newHost(t, etcd, "host-a", testengine.Docker285), newHost(t, etcd, "host-b", testengine.Docker285)
	a.create(t, "net1", nil, nil)
	a.sync(t)
	b.sync(t)
	broken, net1 := api.SharedNetworkKey("broken"), api.SharedNetworkKey("net1")
	for _, key := range []string{broken, net1} {
		if _, err := etcd.CAS(ctx, nil, []datastore.Op{datastore.PutRaw(key, "{not json")}); err != nil {
			t.Fatal(err)
		}
	}
	a.create(t, "net2", nil, nil)
	if err := a.syncer.Sync(ctx); err == nil || !strings.Contains(err.Error(), broken) || !strings.Contains(err.Error(), net1) {
		t.Fatalf("host-a: sync with two bad records: %v", err)
	}
	if sn, ok := shared(t, etcd, "net1"); !ok || sn.Name != "net1" {
		t.Fatalf("net1's record not rewritten by a host that has net1: %+v", sn)
	}
	for range 2 {
		for _, h := range []*host{a, b} {
			err := h.syncer.Sync(ctx)
			if err == nil || !strings.Contains(err.Error(), broken) || strings.Contains(err.Error(), net1) {
				t.Fatalf("%s: sync with one bad record: %v", h.name, err)
			}
		}
	}
	if _, ok := b.network("net2"); !ok {
		t.Fatal("net2 not shared while another network's record is corrupt")
	}
	for _, h := range []*host{a, b} {
		if _, ok := h.network("net1"); !ok {
			t.Fatalf("%s lost net1 over its corrupt record", h.name)
		}
	}
	if na, nb := a.logs.count("does not decode"), b.logs.count("does not decode"); na != 2 || nb != 1 {
		t.Fatalf("warnings of corrupt records: host-a %d (want 2), host-b %d (want 1)", na, nb)
	}
	if n := a.logs.count("rewrote a shared network record"); n != 1 {
		t.Fatalf("host-a said %d times that it rewrote net1's record", n)
	}
	if err := etcd.Delete(ctx, broken); err != nil {
		t.Fatal(err)
	}
	a.sync(t)
	b.sync(t)
}

// The running syncers: a network appears on the other host within seconds
// of its creation (the driver kicks the creator's syncer, the other
// follows the shared records in etcd), and goes within seconds of its
// removal, with the periodic pass a minute away.
func TestRunFollowsChanges(t *testing.T) {
	etcd := testetcd.Start(t)
	a, b := newHost(t, etcd, "host-a", testengine.Docker285), newHost(t, etcd, "host-b", testengine.Docker2010)
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, h := range []*host{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); h.syncer.Run(runCtx, time.Minute) }()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	a.create(t, "net1", []engineapi.IPAMConfig{{Subnet: "10.77.0.0/24"}}, nil)
	a.syncer.Kick() // what the driver's NetworksChanged does
	waitFor(t, "net1 on host-b", func() bool { _, ok := b.network("net1"); return ok })
	a.remove(t, "net1")
	waitFor(t, "net1 gone from host-b", func() bool { _, ok := b.network("net1"); return !ok })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
