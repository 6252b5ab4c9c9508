package policysync

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

func TestModel(t *testing.T) {
	st := newState(newResources(slog.New(slog.NewTextHandler(io.Discard, nil)), ""))
	st.networks["n1id"] = api.Network{ID: "n1id", Name: "net1"}
	st.networks["n2id"] = api.Network{ID: "n2id", Name: "net2", Options: map[string]string{OpenOption: "true"}}
	st.networks["n3id-0123456789"] = api.Network{ID: "n3id-0123456789"} // name not learnt yet
	st.networks["n4id"] = api.Network{ID: "n4id", Name: "net4"}
	st.putEndpoint(api.EndpointKey("h1", "a"), api.Endpoint{ID: "a", NetworkID: "n1id", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.1/32"), HostIface: "calia", Labels: map[string]string{"role": "db"}})
	st.putEndpoint(api.EndpointKey("h2", "b"), api.Endpoint{ID: "b", NetworkID: "n1id", Host: "h2", IPv4: netip.MustParsePrefix("10.0.0.2/32"), IPv6: netip.MustParsePrefix("fd00::2/128"), HostIface: "calib"})
	st.putEndpoint(api.EndpointKey("h1", "c"), api.Endpoint{ID: "c", NetworkID: "n2id", Host: "h1", IPv4: netip.MustParsePrefix("10.0.1.1/32"), HostIface: "calic"})
	st.putEndpoint(api.EndpointKey("h1", "d"), api.Endpoint{ID: "d", NetworkID: "n3id-0123456789", Host: "h1", IPv4: netip.MustParsePrefix("10.0.2.1/32"), HostIface: "calid"})
	st.putEndpoint(api.EndpointKey("h1", "e"), api.Endpoint{ID: "e", NetworkID: "n4id", Host: "h1", IPv4: netip.MustParsePrefix("10.0.3.1/32"), HostIface: "calie"})
	st.putEndpoint(api.EndpointKey("h1", "broken"), api.Endpoint{ID: "broken", NetworkID: "n1id", Host: "h1"}) // no interface: skipped
	stored := api.Profile{Name: "net4", ProfileSpec: api.ProfileSpec{Ingress: []api.Rule{{Action: api.Deny}}}}
	st.profiles["net4"] = stored
	m := st.Model(false)

	prof := map[string]api.Profile{}
	for _, p := range m.Profiles {
		prof[p.Name] = p
	}
	tests := []struct {
		name string
		want api.Profile
	}{
		{"net1", policy.DefaultProfile("net1", NetworkLabel, "net1", false)},
		{"net2", policy.DefaultProfile("net2", NetworkLabel, "net2", true)},
		{"docker-network-n3id-0123456", policy.DefaultProfile("docker-network-n3id-0123456", NetworkLabel, "docker-network-n3id-0123456", false)},
		{"net4", stored}, // a stored profile replaces the default
	}
	for _, tc := range tests {
		got, ok := prof[tc.name]
		if !ok {
			t.Errorf("no profile %q (have %v)", tc.name, m.Profiles)
			continue
		}
		if len(got.Ingress) != len(tc.want.Ingress) || got.Ingress[0].Action != tc.want.Ingress[0].Action ||
			got.Ingress[0].Source.Selector != tc.want.Ingress[0].Source.Selector {
			t.Errorf("profile %s ingress = %+v, want %+v", tc.name, got.Ingress, tc.want.Ingress)
		}
	}
	if len(m.Profiles) != 4 {
		t.Errorf("%d profiles, want 4", len(m.Profiles))
	}
	eps := map[string]policy.Endpoint{}
	for _, e := range m.Endpoints {
		eps[e.Name] = e
	}
	if e := eps["b"]; e.Node != "h2" || len(e.IPs) != 2 || e.IPs[1] != netip.MustParseAddr("fd00::2") || e.Profiles[0] != "net1" {
		t.Errorf("remote endpoint b = %+v", e)
	}
	if e := eps["a"]; e.Iface != "calia" || e.Labels["role"] != "db" {
		t.Errorf("endpoint a = %+v", e)
	}
	// The model computes: endpoints on h1 only, with a valid state.
	ds, err := policy.Compute(m, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Endpoints) != 4 {
		t.Errorf("h1 has %d local endpoints in the desired state, want 4", len(ds.Endpoints))
	}
}
