package netdriver

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

func newDriver(t *testing.T) (*Driver, *datastore.Store) {
	t.Helper()
	d, s, _ := newDriverIPAM(t)
	return d, s
}

// newDriverIPAM returns a driver with a real allocator over pools
// 10.1.0.0/16 and fd00:1::/64.
func newDriverIPAM(t *testing.T) (*Driver, *datastore.Store, *ipam.Allocator) {
	t.Helper()
	s := testetcd.Start(t)
	for _, p := range []api.IPPool{{Name: "p4", CIDR: "10.1.0.0/16"}, {Name: "p6", CIDR: "fd00:1::/64"}} {
		p.Normalize()
		if err := s.Put(context.Background(), api.PoolKey(p.Name), p); err != nil {
			t.Fatal(err)
		}
	}
	alloc := ipam.New(s, "host-a", nil)
	return New(Config{Store: s, Dataplane: dataplane.New(nil, "host-a"), IPAM: alloc, Host: "host-a", MTU: func() int { return 1500 }}), s, alloc
}

func calicoData(pool string) []*network.IPAMData {
	return []*network.IPAMData{{AddressSpace: ipamdriver.LocalAddressSpace, Pool: pool, Gateway: "0.0.0.0/0"}}
}

func TestCreateNetwork(t *testing.T) {
	d, s := newDriver(t)
	tests := []struct {
		name    string
		req     network.CreateNetworkRequest
		wantErr string
	}{
		{"default pools", network.CreateNetworkRequest{NetworkID: "n1", IPv4Data: calicoData("0.0.0.0/0")}, ""},
		{"docker's own options", network.CreateNetworkRequest{NetworkID: "n2", IPv4Data: calicoData("0.0.0.0/0"),
			Options: map[string]interface{}{optEnableIPv6: true, optGeneric: map[string]interface{}{optEnableIPv4: "true", optEnableIPv6: "true"}}}, ""},
		{"other IPAM", network.CreateNetworkRequest{NetworkID: "n3", IPv4Data: []*network.IPAMData{{AddressSpace: "LocalDefault", Pool: "172.18.0.0/16"}}}, "--ipam-driver calico-ipam"},
		{"internal", network.CreateNetworkRequest{NetworkID: "n4", IPv4Data: calicoData("0.0.0.0/0"), Options: map[string]interface{}{optInternal: true}}, "--internal is not supported"},
		{"unknown -o", network.CreateNetworkRequest{NetworkID: "n5", IPv4Data: calicoData("0.0.0.0/0"), Options: map[string]interface{}{optGeneric: map[string]interface{}{"zeta": "1", "alpha": "2"}}}, "alpha, zeta"},
		{"no id", network.CreateNetworkRequest{IPv4Data: calicoData("0.0.0.0/0")}, "NetworkID"},
		{"open network", network.CreateNetworkRequest{NetworkID: "n6", IPv4Data: calicoData("0.0.0.0/0"), Options: map[string]interface{}{optGeneric: map[string]interface{}{"open": "true"}}}, ""},
		{"open with a bad value", network.CreateNetworkRequest{NetworkID: "n7", IPv4Data: calicoData("0.0.0.0/0"), Options: map[string]interface{}{optGeneric: map[string]interface{}{"open": "maybe"}}}, "use true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := d.CreateNetwork(&tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				var nw api.Network
				if _, err := s.Get(context.Background(), api.NetworkKey(tc.req.NetworkID), &nw); err == nil {
					t.Fatalf("rejected network was saved")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// Replayed: still fine.
			if err := d.CreateNetwork(&tc.req); err != nil {
				t.Fatalf("replay: %v", err)
			}
			var nw api.Network
			if _, err := s.Get(context.Background(), api.NetworkKey(tc.req.NetworkID), &nw); err != nil {
				t.Fatalf("network not persisted: %v", err)
			}
			if nw.CreatedBy != "host-a" || len(nw.IPv4Pools) != 1 {
				t.Errorf("record = %+v", nw)
			}
		})
	}
}

const (
	lifeV4ID = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" // an IPv4-only endpoint
	lifeDSID = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" // a dual-stack endpoint
)

func TestEndpointLifecycle(t *testing.T) {
	d, s := newDriver(t)
	host := testns.New(t)
	ctx := context.Background()
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: "net1", IPv4Data: calicoData("0.0.0.0/0")}); err != nil {
		t.Fatal(err)
	}
	createLifecycleEndpoints(t, d, s)
	testns.Do(t, host, func() {
		joinLifecycleEndpoints(t, d)
		adoptLostRecord(t, d, s)
		repairPastCorruptRecord(t, d, s)
		leaveLifecycleEndpoints(t, d)
	})
	var ep api.Endpoint
	if _, err := s.Get(ctx, api.EndpointKey("host-a", lifeDSID), &ep); err == nil {
		t.Fatal("endpoint record left after DeleteEndpoint")
	}
	if err := d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: "net1"}); err != nil {
		t.Fatal(err)
	}
	var nw api.Network
	if _, err := s.Get(ctx, api.NetworkKey("net1"), &nw); err == nil {
		t.Fatal("network record left after DeleteNetwork")
	}
}

// createLifecycleEndpoints checks CreateEndpoint's refusals and its MAC
// rules, leaving both endpoints created.
func createLifecycleEndpoints(t *testing.T, d *Driver, s *datastore.Store) {
	t.Helper()
	// Unknown network: a clear error.
	_, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "gone", EndpointID: lifeV4ID, Interface: &network.EndpointInterface{Address: "10.1.0.1/32"}})
	if err == nil || !strings.Contains(err.Error(), "create it again") {
		t.Fatalf("unknown network: err = %v", err)
	}
	// No address: refused.
	if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "net1", EndpointID: lifeV4ID, Interface: &network.EndpointInterface{}}); err == nil {
		t.Fatal("endpoint without address accepted")
	}

	// Docker left the MAC empty: we fill it and say so.
	resp, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "net1", EndpointID: lifeV4ID, Interface: &network.EndpointInterface{Address: "10.1.0.1/32"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Interface == nil || resp.Interface.MacAddress == "" {
		t.Fatalf("MAC not filled: %+v", resp)
	}
	// Docker gave a MAC: we must not send one back (Docker rejects that).
	resp, err = d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "net1", EndpointID: lifeDSID,
		Interface: &network.EndpointInterface{Address: "10.1.0.2/32", AddressIPv6: "fd00:1::2/128", MacAddress: "02:42:0a:01:00:02"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Interface != nil {
		t.Fatalf("driver answered a MAC Docker had set: %+v", resp.Interface)
	}
	var ep api.Endpoint
	if _, err := s.Get(context.Background(), api.EndpointKey("host-a", lifeDSID), &ep); err != nil || ep.MAC != "02:42:0a:01:00:02" || ep.HostIface != "calibbbbbbbbbbb" {
		t.Fatalf("endpoint record = %+v, %v", ep, err)
	}
}

// joinLifecycleEndpoints joins both endpoints, twice (Docker replays Join
// after a plugin restart), and checks what Docker is told.
func joinLifecycleEndpoints(t *testing.T, d *Driver) {
	t.Helper()
	for _, tc := range []struct {
		id     string
		wantV6 bool
	}{{lifeV4ID, false}, {lifeDSID, true}} {
		jr, err := d.Join(&network.JoinRequest{NetworkID: "net1", EndpointID: tc.id, SandboxKey: "/var/run/docker/netns/" + tc.id[:4]})
		if err != nil {
			t.Fatalf("Join %s: %v", tc.id[:4], err)
		}
		if jr.InterfaceName.DstPrefix != "cali" || jr.InterfaceName.SrcName != "tmp"+tc.id[:11] {
			t.Errorf("interface = %+v", jr.InterfaceName)
		}
		if jr.Gateway != "169.254.1.1" || len(jr.StaticRoutes) != 1 || jr.StaticRoutes[0].Destination != "169.254.1.1/32" || jr.StaticRoutes[0].RouteType != 1 {
			t.Errorf("gateway/routes = %q %+v", jr.Gateway, jr.StaticRoutes)
		}
		if (jr.GatewayIPv6 != "") != tc.wantV6 {
			t.Errorf("GatewayIPv6 = %q, want set=%v", jr.GatewayIPv6, tc.wantV6)
		}
		if !dataplane.LinkExists("cali" + tc.id[:11]) {
			t.Errorf("host veth missing after Join")
		}
		if _, err := d.Join(&network.JoinRequest{NetworkID: "net1", EndpointID: tc.id}); err != nil {
			t.Errorf("replayed Join: %v", err)
		}
	}
}

// adoptLostRecord: the datastore lost the record of one endpoint;
// reconcile keeps its veth (the container still runs) and rebuilds the
// record.
func adoptLostRecord(t *testing.T, d *Driver, s *datastore.Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.Delete(ctx, api.EndpointKey("host-a", lifeV4ID)); err != nil {
		t.Fatal(err)
	}
	res, err := d.Reconcile(ctx)
	if err != nil || res.Adopted != 1 || !dataplane.LinkExists("cali"+lifeV4ID[:11]) {
		t.Fatalf("reconcile = %+v, %v; the veth must stay and its record come back", res, err)
	}
	var adopted api.Endpoint
	if _, err := s.Get(ctx, api.EndpointKey("host-a", lifeV4ID), &adopted); err != nil || !adopted.Adopted || api.PrefixText(adopted.IPv4) != "10.1.0.1/32" {
		t.Fatalf("adopted record = %+v, %v", adopted, err)
	}
	if !dataplane.LinkExists("cali" + lifeDSID[:11]) {
		t.Fatal("reconcile removed a live endpoint's veth")
	}
	if res, err := d.Reconcile(ctx); err != nil || res.Adopted != 0 {
		t.Fatalf("second reconcile = %+v, %v; want nothing adopted", res, err)
	}
}

// repairPastCorruptRecord: one endpoint's record does not decode; the
// repair pass names it, leaves that veth and its routes alone, and still
// repairs the other endpoint (a route deleted by hand comes back).
func repairPastCorruptRecord(t *testing.T, d *Driver, s *datastore.Store) {
	t.Helper()
	ctx := context.Background()
	key := api.EndpointKey("host-a", lifeDSID)
	raw, err := datastore.GetRaw(ctx, s, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CAS(ctx, nil, []datastore.Op{datastore.PutRaw(key, "{corrupt")}); err != nil {
		t.Fatal(err)
	}
	routesOn := func(iface string) []netlink.Route {
		rs, err := dataplane.OurRoutes()
		if err != nil {
			t.Fatal(err)
		}
		var on []netlink.Route
		for _, r := range rs {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().Name == iface {
				on = append(on, r)
			}
		}
		return on
	}
	v4If, dsIf := "cali"+lifeV4ID[:11], "cali"+lifeDSID[:11]
	dsRoutes := len(routesOn(dsIf))
	v4Routes := routesOn(v4If)
	if len(v4Routes) != 1 {
		t.Fatalf("routes on %s: %v", v4If, v4Routes)
	}
	if err := netlink.RouteDel(&v4Routes[0]); err != nil {
		t.Fatal(err)
	}
	res, err := d.Reconcile(ctx)
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("reconcile past a corrupt record: %+v, %v; want an error naming %s", res, err, key)
	}
	if len(routesOn(v4If)) != 1 {
		t.Fatal("the other endpoint's route was not repaired past a corrupt record")
	}
	if !dataplane.LinkExists(dsIf) || len(routesOn(dsIf)) != dsRoutes || dsRoutes == 0 {
		t.Fatalf("the endpoint whose record is corrupt lost its veth or routes (%d of %d)", len(routesOn(dsIf)), dsRoutes)
	}
	if _, err := s.CAS(ctx, nil, []datastore.Op{datastore.PutRaw(key, string(raw.Value))}); err != nil {
		t.Fatal(err)
	}
}

// leaveLifecycleEndpoints leaves and deletes both endpoints, twice each
// (replays), and checks nothing of ours is left in the kernel.
func leaveLifecycleEndpoints(t *testing.T, d *Driver) {
	t.Helper()
	for _, id := range []string{lifeDSID, lifeV4ID} {
		for i := 0; i < 2; i++ {
			if err := d.Leave(&network.LeaveRequest{NetworkID: "net1", EndpointID: id}); err != nil {
				t.Fatalf("Leave #%d: %v", i+1, err)
			}
			if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: "net1", EndpointID: id}); err != nil {
				t.Fatalf("DeleteEndpoint #%d: %v", i+1, err)
			}
		}
		if dataplane.LinkExists("cali" + id[:11]) {
			t.Fatal("veth left after Leave")
		}
	}
	if rs, _ := dataplane.OurRoutes(); len(rs) != 0 {
		t.Fatalf("routes left after Leave: %v", rs)
	}
}

func TestCapabilities(t *testing.T) {
	d := New(Config{})
	c, err := d.GetCapabilities()
	if err != nil || c.Scope != "local" {
		t.Fatalf("capabilities = %+v, %v; Scope must be local (Docker 23 has no cluster store)", c, err)
	}
}
