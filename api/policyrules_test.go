package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// A policy as Calico's documentation writes it (the spec of a v3
// NetworkPolicy document, as JSON) decodes into our types and encodes back
// with the same field names.
func TestPolicyJSONUsesCalicoFieldNames(t *testing.T) {
	doc := `{
	  "name": "allow-db",
	  "order": 100,
	  "selector": "role == 'db'",
	  "types": ["Ingress", "Egress"],
	  "ingress": [{
	    "action": "Allow",
	    "protocol": "TCP",
	    "source": {"selector": "role == 'frontend'", "nets": ["10.0.0.0/8"], "notNets": ["10.9.0.0/16"], "notSelector": "env == 'dev'"},
	    "destination": {"ports": [5432, "6000:6010"], "notPorts": [6005]}
	  }, {
	    "action": "Deny",
	    "notProtocol": 17
	  }],
	  "egress": [{"action": "Log"}, {"action": "Pass"}]
	}`
	var p NetworkPolicy
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	want := NetworkPolicy{Name: "allow-db", PolicySpec: PolicySpec{
		Order:    ptr(100.0),
		Selector: "role == 'db'",
		Types:    []string{"Ingress", "Egress"},
		Ingress: []Rule{{
			Action:   Allow,
			Protocol: "TCP",
			Source:   EntityRule{Selector: "role == 'frontend'", Nets: []string{"10.0.0.0/8"}, NotNets: []string{"10.9.0.0/16"}, NotSelector: "env == 'dev'"},
			Destination: EntityRule{
				Ports:    []Port{"5432", "6000:6010"},
				NotPorts: []Port{"6005"},
			},
		}, {Action: Deny, NotProtocol: "17"}},
		Egress: []Rule{{Action: Log}, {Action: Pass}},
	}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", p, want)
	}
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"order":100`, `"selector":"role == 'db'"`, `"types":["Ingress","Egress"]`,
		`"action":"Allow"`, `"protocol":"TCP"`, `"notProtocol":17`, `"ports":[5432,"6000:6010"]`, `"notPorts":[6005]`,
		`"nets":["10.0.0.0/8"]`, `"notNets":["10.9.0.0/16"]`, `"notSelector":"env == 'dev'"`, `"source":{`, `"destination":{`} {
		if !strings.Contains(string(out), s) {
			t.Errorf("encoded policy lacks %s:\n%s", s, out)
		}
	}
	if strings.Contains(string(out), `"source":{}`) || strings.Contains(string(out[strings.Index(string(out), `"egress"`):]), "source") {
		t.Errorf("empty source/destination should be omitted:\n%s", out)
	}
	var again NetworkPolicy
	if err := json.Unmarshal(out, &again); err != nil || !reflect.DeepEqual(again, p) {
		t.Fatalf("round trip changed the policy: %v\n%+v", err, again)
	}
}

func TestNormalize(t *testing.T) {
	p := GlobalNetworkPolicy{Name: "x", PolicySpec: PolicySpec{
		Types:   []string{"ingress"},
		Ingress: []Rule{{Action: "allow", Protocol: "icmpv6", NotProtocol: "udp", Source: EntityRule{Nets: []string{"fd00::1:2/64", "fd00::5"}}}},
	}}
	p.Normalize()
	r := p.Ingress[0]
	if p.Types[0] != "Ingress" || r.Action != Allow || r.Protocol != "ICMPv6" || r.NotProtocol != "UDP" ||
		r.Source.Nets[0] != "fd00::/64" || r.Source.Nets[1] != "fd00::5/128" {
		t.Fatalf("normalized = %+v", p)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateErrorsNameTheField(t *testing.T) {
	rule := func(r Rule) PolicySpec { return PolicySpec{Ingress: []Rule{{Action: Allow}, r}} }
	tests := []struct {
		name string
		spec PolicySpec
		want string
	}{
		{"bad selector", PolicySpec{Selector: "role == 'db' &&"}, `spec.selector: selector "role == 'db' &&": at position 16: expected a label key`},
		{"bad type", PolicySpec{Types: []string{"Inbound"}}, `spec.types[0]: "Inbound" is not a policy type: use Ingress or Egress`},
		{"duplicate type", PolicySpec{Types: []string{"Ingress", "Ingress"}}, `spec.types[1]: Ingress is listed twice`},
		{"egress rules without type", PolicySpec{Types: []string{"Ingress"}, Egress: []Rule{{Action: Allow}}}, `spec.egress: the policy has egress rules but spec.types does not include Egress`},
		{"no action", rule(Rule{}), `spec.ingress[1].action: a rule needs an action: Allow, Deny, Pass or Log`},
		{"bad action", rule(Rule{Action: "Accept"}), `spec.ingress[1].action: "Accept" is not an action: use Allow, Deny, Pass or Log`},
		{"bad protocol", rule(Rule{Action: Allow, Protocol: "tcpp"}), `spec.ingress[1].protocol: "tcpp" is not a protocol: use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255`},
		{"protocol out of range", rule(Rule{Action: Allow, Protocol: "256"}), `spec.ingress[1].protocol: "256" is not a protocol`},
		{"bad notProtocol", rule(Rule{Action: Allow, NotProtocol: "0"}), `spec.ingress[1].notProtocol: "0" is not a protocol`},
		{"bad net", rule(Rule{Action: Allow, Source: EntityRule{Nets: []string{"10.0.0.0/33"}}}), `spec.ingress[1].source.nets[0]: "10.0.0.0/33" is not a CIDR`},
		{"bad notNet", rule(Rule{Action: Allow, Destination: EntityRule{NotNets: []string{"x"}}}), `spec.ingress[1].destination.notNets[0]: "x" is not a CIDR`},
		{"mixed families", rule(Rule{Action: Allow, Source: EntityRule{Nets: []string{"10.0.0.0/8"}}, Destination: EntityRule{NotNets: []string{"fd00::/8"}}}), `spec.ingress[1].destination.notNets[0]: fd00::/8 mixes IPv4 and IPv6 in one rule`},
		{"icmp with v6 nets", rule(Rule{Action: Allow, Protocol: "ICMP", Source: EntityRule{Nets: []string{"fd00::/8"}}}), `spec.ingress[1].protocol: ICMP is IPv4 but the rule's nets are IPv6: use ICMPv6`},
		{"bad rule selector", rule(Rule{Action: Allow, Source: EntityRule{Selector: "role = 'x'"}}), `spec.ingress[1].source.selector: selector "role = 'x'": at position 6: unexpected character '='`},
		{"bad notSelector", rule(Rule{Action: Allow, Destination: EntityRule{NotSelector: "has("}}), `spec.ingress[1].destination.notSelector: selector "has(": at position 5`},
		{"ports without protocol", rule(Rule{Action: Allow, Destination: EntityRule{Ports: []Port{"80"}}}), `spec.ingress[1].destination.ports: ports need protocol TCP, UDP or SCTP in the same rule`},
		{"ports with icmp", rule(Rule{Action: Allow, Protocol: "ICMP", Source: EntityRule{NotPorts: []Port{"80"}}}), `spec.ingress[1].source.notPorts: ports need protocol TCP, UDP or SCTP`},
		{"bad port", rule(Rule{Action: Allow, Protocol: "TCP", Destination: EntityRule{Ports: []Port{"70000"}}}), `spec.ingress[1].destination.ports[0]: "70000" is not a port: use a number 0-65535 or a range "lo:hi"`},
		{"reversed range", rule(Rule{Action: Allow, Protocol: "UDP", Destination: EntityRule{Ports: []Port{"90:80"}}}), `spec.ingress[1].destination.ports[0]: port range "90:80": the first port must not be above the second`},
		{"named port", rule(Rule{Action: Allow, Protocol: "TCP", Destination: EntityRule{Ports: []Port{"http"}}}), `spec.ingress[1].destination.ports[0]: "http": named ports are not supported`},
		{"egress path", PolicySpec{Egress: []Rule{{Action: Allow, Protocol: "6", Destination: EntityRule{Ports: []Port{"1:2:3"}}}}}, `spec.egress[0].destination.ports[0]: "1:2:3" is not a port`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateNamesAndLabels(t *testing.T) {
	for _, name := range []string{"", "Allow-DB", "-x", "a b", strings.Repeat("a", 254)} {
		p := NetworkPolicy{Name: name}
		if err := p.Validate(); err == nil || !strings.HasPrefix(err.Error(), "metadata.name") {
			t.Errorf("policy name %q: err = %v", name, err)
		}
	}
	for _, name := range []string{"allow-db", "a.b-c", "x"} {
		p := GlobalNetworkPolicy{Name: name}
		if err := p.Validate(); err != nil {
			t.Errorf("policy name %q: %v", name, err)
		}
	}
	// Profiles are named after Docker networks, which allow capitals and '_'.
	if err := (&Profile{Name: "My_Net.1"}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (&Profile{Name: "net 1"}).Validate(); err == nil {
		t.Error("profile name with a space accepted")
	}
	bad := []map[string]string{
		{"role": "a b"},
		{"Bad_Prefix/x": "y"},
		{"x/": "y"},
		{strings.Repeat("k", 64): ""},
		{"k": strings.Repeat("v", 64)},
	}
	for _, l := range bad {
		p := Profile{Name: "p", ProfileSpec: ProfileSpec{LabelsToApply: l}}
		if err := p.Validate(); err == nil || !strings.HasPrefix(err.Error(), "spec.labelsToApply: label") {
			t.Errorf("labels %v: err = %v", l, err)
		}
	}
	good := Profile{Name: "p", ProfileSpec: ProfileSpec{LabelsToApply: map[string]string{"calico/network": "net1", "projectcalico.org/x": "", "role": "db_1.a"}}}
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
}

func TestEffectiveTypes(t *testing.T) {
	r := []Rule{{Action: Allow}}
	tests := []struct {
		spec    PolicySpec
		in, out bool
	}{
		{PolicySpec{}, true, false},
		{PolicySpec{Ingress: r}, true, false},
		{PolicySpec{Egress: r}, false, true},
		{PolicySpec{Ingress: r, Egress: r}, true, true},
		{PolicySpec{Types: []string{"Egress"}}, false, true},
		{PolicySpec{Types: []string{"Ingress", "Egress"}, Ingress: r}, true, true},
	}
	for i, tc := range tests {
		in, out := tc.spec.EffectiveTypes()
		if in != tc.in || out != tc.out {
			t.Errorf("case %d: types = %v/%v, want %v/%v", i, in, out, tc.in, tc.out)
		}
	}
}
