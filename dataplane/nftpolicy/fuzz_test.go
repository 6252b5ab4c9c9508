package nftpolicy

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// FuzzStoredPolicy: a stored policy resource that the daemon accepts
// (strict decoding and validation) is stored the same way again, computes
// into a desired state for a host with endpoints it may select, and renders
// into nftables rules: whatever validates can be enforced, so one resource
// can never fail the whole table.
func FuzzStoredPolicy(f *testing.F) {
	for _, s := range []struct {
		kind uint8
		raw  string
	}{
		{0, `{"name":"db-from-frontend","order":100,"selector":"role == 'db'","types":["Ingress"],"ingress":[{"action":"Allow","protocol":"TCP","source":{"selector":"role == 'frontend'"},"destination":{"ports":[5432,"8000:8080"]}},{"action":"Deny","protocol":"ICMP"}]}`},
		{1, `{"name":"x","selector":"all()","egress":[{"action":"Pass"},{"action":"Log","notProtocol":"UDP","destination":{"nets":["10.0.0.0/8"],"notNets":["10.1.0.0/16"],"notPorts":[53]}}]}`},
		{2, `{"name":"net1","ingress":[{"action":"Allow","source":{"notSelector":"has(role)"}}],"egress":[{"action":"Allow","protocol":"ICMPv6"}],"labelsToApply":{"tier":"web"}}`},
		{1, `{"name":"v6","types":["Egress","Ingress"],"ingress":[{"action":"Allow","source":{"nets":["fd00::/64"]}}]}`},
		{0, `{"name":"bad","selector":"role =="}`},
	} {
		f.Add(s.kind, []byte(s.raw))
	}
	enf, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, k uint8, raw []byte) {
		m := &policy.Model{Profiles: []api.Profile{policy.DefaultProfile("net2", "calico/network", "net2", false)}}
		var stored []byte
		switch k % 3 {
		case 0:
			p, err := api.DecodeStoredNetworkPolicy("fuzz", raw)
			if err != nil {
				return
			}
			m.NetworkPolicies = append(m.NetworkPolicies, p)
			stored = roundTrip(t, p, func(b []byte) (any, error) { return api.DecodeStoredNetworkPolicy("fuzz", b) })
		case 1:
			p, err := api.DecodeStoredGlobalNetworkPolicy("fuzz", raw)
			if err != nil {
				return
			}
			m.GlobalNetworkPolicies = append(m.GlobalNetworkPolicies, p)
			stored = roundTrip(t, p, func(b []byte) (any, error) { return api.DecodeStoredGlobalNetworkPolicy("fuzz", b) })
		default:
			p, err := api.DecodeStoredProfile("net1", raw)
			if err != nil {
				return
			}
			m.Profiles = append(m.Profiles, p)
			stored = roundTrip(t, p, func(b []byte) (any, error) { return api.DecodeStoredProfile("net1", b) })
		}
		for i, e := range []struct {
			iface, v4, v6, net string
			labels             map[string]string
		}{
			{"calidb", "10.0.1.2", "fd00:1::2", "net1", map[string]string{"role": "db"}},
			{"caliweb", "10.0.1.3", "", "net1", map[string]string{"role": "frontend", "tier": "web"}},
			{"caliother", "10.0.2.1", "fd00:2::1", "net2", nil},
		} {
			ips := []netip.Addr{netip.MustParseAddr(e.v4)}
			if e.v6 != "" {
				ips = append(ips, netip.MustParseAddr(e.v6))
			}
			m.Endpoints = append(m.Endpoints, policy.Endpoint{Name: e.iface, Node: "h1", Iface: e.iface, IPs: ips, Labels: e.labels,
				Profiles: []string{e.net}, Held: i == 2 && k%2 == 0})
		}
		ds, err := policy.Compute(m, "h1")
		if err != nil {
			t.Fatalf("a resource the daemon accepts does not compute: %v\n%s", err, stored)
		}
		if _, err := enf.build(ds); err != nil {
			t.Fatalf("a resource the daemon accepts does not render: %v\n%s", err, stored)
		}
	})
}

// roundTrip stores v as the daemon's records are stored and checks that it
// decodes to the same record.
func roundTrip(t *testing.T, v any, decode func([]byte) (any, error)) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	again, err := decode(b)
	if err != nil {
		t.Fatalf("the stored form of an accepted resource is refused: %v\n%s", err, b)
	}
	b2, _ := json.Marshal(again)
	if !bytes.Equal(b, b2) {
		t.Fatalf("the stored form changes when read back:\n%s\n%s", b, b2)
	}
	return b
}
