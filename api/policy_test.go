package api_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func TestDecodePolicyKinds(t *testing.T) {
	in := `apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: net1}
spec:
  ingress: [{action: allow, source: {selector: "calico/network == 'net1'"}}]
  egress: [{action: ALLOW}]
  labelsToApply: {calico/network: net1}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: np1, namespace: default, resourceVersion: "12"}
spec:
  order: 10
  selector: role == 'db'
  types: [ingress, EGRESS]
  ingress: [{action: Allow, protocol: tcp, source: {nets: [10.1.2.3/8]}, destination: {ports: [5432, "6000:6010"]}}]
  egress: [{action: Deny, protocol: 1}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: gnp1}
spec: {}
`
	objs, err := api.Decode([]byte(in), "in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(objs); !reflect.DeepEqual(got, []string{"Profile/net1", "NetworkPolicy/np1", "GlobalNetworkPolicy/gnp1"}) {
		t.Fatalf("decoded %v", got)
	}
	prof := objs[0].Resource.(*api.Profile)
	if prof.Ingress[0].Action != api.Allow || prof.Egress[0].Action != api.Allow {
		t.Errorf("actions not normalised: %+v", prof.ProfileSpec)
	}
	np := objs[1].Resource.(*api.NetworkPolicy)
	ten := 10.0
	want := api.NetworkPolicy{Name: "np1", PolicySpec: api.PolicySpec{
		Order: &ten, Selector: "role == 'db'", Types: []string{"Ingress", "Egress"},
		Ingress: []api.Rule{{Action: api.Allow, Protocol: "TCP", Source: api.EntityRule{Nets: []string{"10.0.0.0/8"}},
			Destination: api.EntityRule{Ports: []api.Port{"5432", "6000:6010"}}}},
		Egress: []api.Rule{{Action: api.Deny, Protocol: "1"}},
	}}
	if !reflect.DeepEqual(*np, want) {
		t.Errorf("NetworkPolicy\n%+v\nwant\n%+v", *np, want)
	}
	if objs[1].ResourceVersion != "12" {
		t.Errorf("resourceVersion %q", objs[1].ResourceVersion)
	}
}

func TestPolicyEncodeDecodeRoundTrip(t *testing.T) {
	order := 2.5
	in := []api.Object{
		{Resource: &api.Profile{Name: "Net_1", ProfileSpec: api.ProfileSpec{
			Ingress:       []api.Rule{{Action: api.Allow, Source: api.EntityRule{Selector: "a == 'b' && has(c)"}}},
			Egress:        []api.Rule{{Action: api.Allow}},
			LabelsToApply: map[string]string{"calico/network": "Net_1"},
		}}, ResourceVersion: "3"},
		{Resource: &api.NetworkPolicy{Name: "np", PolicySpec: api.PolicySpec{
			Order: &order, Selector: "all()", Types: []string{"Egress"},
			Egress: []api.Rule{{Action: api.Deny, NotProtocol: "UDP", Destination: api.EntityRule{
				NotNets: []string{"fd00::/64"}, NotSelector: "x in {'1', '2'}", Ports: nil}}},
		}}},
		{Resource: &api.GlobalNetworkPolicy{Name: "g", PolicySpec: api.PolicySpec{
			Ingress: []api.Rule{{Action: api.Log}, {Action: api.Pass, Protocol: "SCTP",
				Source: api.EntityRule{NotPorts: []api.Port{"1", "2:3"}}}},
		}}, ResourceVersion: "9"},
	}
	for _, format := range []string{"yaml", "json"} {
		b, err := api.Encode(in, nil, true, format)
		if err != nil {
			t.Fatal(err)
		}
		out, err := api.Decode(b, format)
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, b)
		}
		if len(out) != len(in) {
			t.Fatalf("%s: %d objects back", format, len(out))
		}
		for i := range in {
			if !reflect.DeepEqual(in[i].Resource, out[i].Resource) || in[i].ResourceVersion != out[i].ResourceVersion {
				t.Errorf("%s: %+v (rv %q) came back as %+v (rv %q)", format, in[i].Resource, in[i].ResourceVersion, out[i].Resource, out[i].ResourceVersion)
			}
		}
		if format == "json" && strings.Contains(string(b), `\u0026`) {
			t.Errorf("JSON output escapes '&':\n%s", b)
		}
	}
}

func TestLookupPolicyKinds(t *testing.T) {
	for name, want := range map[string]*api.Kind{
		"profile": api.ProfileKind, "Profiles": api.ProfileKind, "pro": api.ProfileKind,
		"networkpolicy": api.NetworkPolicyKind, "NetworkPolicies": api.NetworkPolicyKind, "netpol": api.NetworkPolicyKind, "NP": api.NetworkPolicyKind,
		"globalnetworkpolicy": api.GlobalNetworkPolicyKind, "GlobalNetworkPolicies": api.GlobalNetworkPolicyKind, "gnp": api.GlobalNetworkPolicyKind,
		"policy": api.GlobalNetworkPolicyKind, "policies": api.GlobalNetworkPolicyKind,
	} {
		if k, err := api.LookupKind(name); err != nil || k != want {
			t.Errorf("LookupKind(%q) = %v, %v", name, k, err)
		}
	}
}

func TestDecodeLegacyPolicyKinds(t *testing.T) {
	in := `- apiVersion: v1
  kind: profile
  metadata:
    name: frontend
    tags: [web]
    labels: {role: frontend, web: x}
  spec:
    ingress:
    - action: allow
      source: {tag: lb, notNet: 10.9.0.0/16, nets: [10.0.0.0/8]}
- apiVersion: v1
  kind: policy
  metadata: {name: p}
  spec:
    order: 1
    types: [ingress]
    ingress:
    - action: next-tier
      protocol: udp
      destination: {net: 10.1.0.0/16, ports: ["53"], notTag: dns, notSelector: "has(a)"}
`
	objs, err := api.Decode([]byte(in), "v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	prof := *objs[0].Resource.(*api.Profile)
	wantProf := api.Profile{Name: "frontend", ProfileSpec: api.ProfileSpec{
		Ingress:       []api.Rule{{Action: api.Allow, Source: api.EntityRule{Selector: "has(lb)", Nets: []string{"10.0.0.0/8"}, NotNets: []string{"10.9.0.0/16"}}}},
		LabelsToApply: map[string]string{"role": "frontend", "web": "x"}, // a label wins over a tag of its name
	}}
	if !reflect.DeepEqual(prof, wantProf) {
		t.Errorf("legacy profile\n%+v\nwant\n%+v", prof, wantProf)
	}
	if !objs[0].Legacy || !objs[1].Legacy {
		t.Error("legacy documents not marked Legacy")
	}
	one := 1.0
	gnp := *objs[1].Resource.(*api.GlobalNetworkPolicy)
	wantGNP := api.GlobalNetworkPolicy{Name: "p", PolicySpec: api.PolicySpec{Order: &one, Types: []string{"Ingress"},
		Ingress: []api.Rule{{Action: api.Pass, Protocol: "UDP", Destination: api.EntityRule{
			Nets: []string{"10.1.0.0/16"}, Ports: []api.Port{"53"}, NotSelector: "(has(a)) || has(dns)"}}},
	}}
	if !reflect.DeepEqual(gnp, wantGNP) {
		t.Errorf("legacy policy\n%+v\nwant\n%+v", gnp, wantGNP)
	}
	// Printed, they are v3 documents.
	b, err := api.Encode(objs, nil, true, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "apiVersion: v1") || !strings.Contains(string(b), "kind: GlobalNetworkPolicy") {
		t.Errorf("legacy objects printed as\n%s", b)
	}
}

func TestPolicyDecodeErrors(t *testing.T) {
	doc := func(kind, spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: " + kind + "\nmetadata: {name: x}\nspec: " + spec + "\n"
	}
	for _, c := range []struct{ in, want string }{
		{doc("NetworkPolicy", "{selector: 'a == '}"), `in.yaml document 1 (line 1) (NetworkPolicy "x"): spec.selector: selector "a == ": at position 6:`},
		{doc("GlobalNetworkPolicy", "{egress: [{action: Allow, notProtocol: {name: tcp}}]}"), "spec.egress[0].notProtocol: expected a protocol"},
		{doc("Profile", "{ingress: [{action: Allow, protocol: tcp, destination: {notPorts: [true]}}]}"), `spec.ingress[0].destination.notPorts[0]: expected a port number or a range "lo:hi", got true or false`},
		{doc("Profile", "{ingress: [{action: Allow, protocol: tcp, destination: {ports: 80}}]}"), "spec.ingress[0].destination.ports: expected a list, got a number"},
		{doc("GlobalNetworkPolicy", "{order: [1]}"), "spec.order: expected a number, got a list"},
		{doc("GlobalNetworkPolicy", "{tier: default}"), "unknown field spec.tier: a GlobalNetworkPolicy spec has only order, selector, types, ingress, egress"},
		{doc("Profile", "{Ingress: []}"), "unknown field spec.Ingress: did you mean spec.ingress?"},
		{"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x, namespace: kube-system}\nspec: {}\n", `metadata.namespace "kube-system": Docker has no namespaces`},
	} {
		_, err := api.Decode([]byte(c.in), "in.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}
