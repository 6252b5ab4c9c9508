package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

const profileV3 = `apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: net1
spec:
  ingress:
  - action: allow
    source:
      selector: calico/network == 'net1'
  - action: Allow
    protocol: tcp
    source:
      nets: [10.0.0.7]
    destination:
      ports: [22, "8000:8080"]
  egress:
  - action: Allow
  labelsToApply:
    calico/network: net1
    tier: web
`

const policiesV3 = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: db-from-frontend
spec:
  order: 100
  selector: role == 'db'
  types: [ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'frontend'
    destination:
      ports: [5432]
  - action: Deny
    protocol: ICMP
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-legacy
spec:
  order: 10.5
  selector: has(legacy) && env in {'dev', 'test'}
  egress:
  - action: Deny
    notProtocol: 17
    destination:
      notNets: ["fd00::/64"]
      notSelector: "!has(trusted)"
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: log-all
spec:
  ingress:
  - action: Log
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: web-ingress
  namespace: default
spec:
  order: 200
  selector: role == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [80, 443]
  - action: Pass
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: all-egress
spec:
  egress:
  - action: Allow
`

// storedJSON is the record at key, as the daemon reads it.
func storedJSON[T any](t *testing.T, h *harness, key string) T {
	t.Helper()
	var v T
	if _, err := h.store.Get(context.Background(), key, &v); err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return v
}

func TestProfileRoundTrip(t *testing.T) {
	h := newHarness(t)
	f := writeFile(t, "net1.yaml", profileV3)
	if got := h.ok("", "create", "-f", f); got != "Successfully created 1 'Profile' resource(s)\n" {
		t.Errorf("create printed %q", got)
	}
	// The record is the JSON of api.Profile, normalised.
	got := storedJSON[api.Profile](t, h, api.ProfileKey("net1"))
	want := api.Profile{Name: "net1", ProfileSpec: api.ProfileSpec{
		Ingress: []api.Rule{
			{Action: api.Allow, Source: api.EntityRule{Selector: "calico/network == 'net1'"}},
			{Action: api.Allow, Protocol: "TCP", Source: api.EntityRule{Nets: []string{"10.0.0.7/32"}},
				Destination: api.EntityRule{Ports: []api.Port{"22", "8000:8080"}}},
		},
		Egress:        []api.Rule{{Action: api.Allow}},
		LabelsToApply: map[string]string{"calico/network": "net1", "tier": "web"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stored profile\n%+v\nwant\n%+v", got, want)
	}
	golden(t, "profile_get_yaml", h.ok("", "get", "profile", "net1", "-o", "yaml"))
	golden(t, "profile_get_json", h.ok("", "get", "profiles", "net1", "-o", "json"))

	// apply changes it; replace puts it back.
	open := strings.Replace(profileV3, "    source:\n      selector: calico/network == 'net1'\n", "", 1)
	if got := h.ok(open, "apply", "-f", "-"); got != "Successfully applied 1 'Profile' resource(s)\n" {
		t.Errorf("apply printed %q", got)
	}
	if p := storedJSON[api.Profile](t, h, api.ProfileKey("net1")); !p.Ingress[0].Source.IsZero() {
		t.Errorf("apply did not open the profile: %+v", p.Ingress[0])
	}
	if got := h.ok(profileV3, "replace", "-f", "-"); got != "Successfully replaced 1 'Profile' resource(s)\n" {
		t.Errorf("replace printed %q", got)
	}
	h.ok("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: Other_Net.2}\nspec: {}\n", "create", "-f", "-")
	golden(t, "profile_get_ps", h.ok("", "get", "profiles"))
	golden(t, "profile_get_wide", h.ok("", "get", "pro", "-o", "wide"))

	// get -o yaml | apply round trips; once changed, that document is stale.
	out := h.ok("", "get", "profile", "net1", "-o", "yaml")
	h.ok(out, "apply", "-f", "-")
	h.ok(out, "replace", "-f", "-")
	h.ok(open, "apply", "-f", "-")
	h.fail(out, []string{"apply", "-f", "-"}, `Profile "net1" was changed since it was read`, "get it again")
	h.fail(out, []string{"delete", "-f", "-"}, `Profile "net1" was changed since it was read`)
	if p := storedJSON[api.Profile](t, h, api.ProfileKey("net1")); !p.Ingress[0].Source.IsZero() {
		t.Errorf("a stale apply changed the profile: %+v", p.Ingress[0])
	}
	// The list form, as get prints it, is accepted back.
	list := h.ok("", "get", "profiles", "-o", "yaml")
	if !strings.Contains(list, "kind: ProfileList") {
		t.Errorf("get profiles -o yaml is not a ProfileList:\n%s", list)
	}
	if got := h.ok(list, "apply", "-f", "-"); got != "Successfully applied 2 'Profile' resource(s)\n" {
		t.Errorf("apply of the list printed %q", got)
	}
	h.ok(h.ok("", "get", "profiles", "-o", "json"), "apply", "-f", "-")

	if got := h.ok("", "delete", "profile", "net1", "Other_Net.2"); got != "Successfully deleted 2 'Profile' resource(s)\n" {
		t.Errorf("delete printed %q", got)
	}
	if got := h.ok("", "get", "profiles", "-o", "wide"); got != "NAME   LABELS\n" {
		t.Errorf("after delete, get printed %q", got)
	}
	h.fail("", []string{"get", "profile", "net1"}, `Profile "net1" does not exist`, "a network without a stored profile of its name has the default one")
	h.fail("", []string{"delete", "profile", "net1"}, `Profile "net1" does not exist`)
	h.fail("", []string{"get", "profile", "a/b"}, `Profile "a/b" does not exist`)
}

func TestPolicyRoundTrip(t *testing.T) {
	h := newHarness(t)
	if got := h.ok(policiesV3, "create", "-f", "-"); got != "Successfully created 5 resource(s)\n" {
		t.Errorf("create printed %q", got)
	}
	order := func(f float64) *float64 { return &f }
	gnp := storedJSON[api.GlobalNetworkPolicy](t, h, api.GlobalNetworkPolicyKey("db-from-frontend"))
	wantGNP := api.GlobalNetworkPolicy{Name: "db-from-frontend", PolicySpec: api.PolicySpec{
		Order: order(100), Selector: "role == 'db'", Types: []string{"Ingress"},
		Ingress: []api.Rule{
			{Action: api.Allow, Protocol: "TCP", Source: api.EntityRule{Selector: "role == 'frontend'"},
				Destination: api.EntityRule{Ports: []api.Port{"5432"}}},
			{Action: api.Deny, Protocol: "ICMP"},
		},
	}}
	if !reflect.DeepEqual(gnp, wantGNP) {
		t.Errorf("stored GlobalNetworkPolicy\n%+v\nwant\n%+v", gnp, wantGNP)
	}
	np := storedJSON[api.NetworkPolicy](t, h, api.NetworkPolicyKey("web-ingress"))
	if np.Name != "web-ingress" || *np.Order != 200 || len(np.Ingress) != 2 || np.Ingress[1].Action != api.Pass {
		t.Errorf("stored NetworkPolicy %+v", np)
	}

	golden(t, "gnp_get_ps", h.ok("", "get", "globalnetworkpolicies"))
	golden(t, "gnp_get_wide", h.ok("", "get", "gnp", "-o", "wide"))
	golden(t, "gnp_get_yaml", h.ok("", "get", "globalnetworkpolicy", "db-from-frontend", "-o", "yaml"))
	golden(t, "gnp_get_json", h.ok("", "get", "GlobalNetworkPolicy", "deny-legacy", "-o", "json"))
	golden(t, "netpol_get_ps", h.ok("", "get", "networkpolicies"))
	golden(t, "netpol_get_wide", h.ok("", "get", "netpol", "-o", "wide"))
	golden(t, "netpol_get_yaml", h.ok("", "get", "np", "-o", "yaml"))

	// Every printed document applies back unchanged.
	for _, k := range []string{"gnp", "networkpolicy"} {
		for _, format := range []string{"yaml", "json"} {
			before := h.ok("", "get", k, "-o", format)
			h.ok(before, "apply", "-f", "-")
			if after := h.ok("", "get", k, "-o", format); after != before {
				t.Errorf("get %s -o %s | apply changed it:\n%s\nto\n%s", k, format, before, after)
			}
		}
	}

	// apply and replace change it; a stale resourceVersion is refused.
	one := h.ok("", "get", "gnp", "db-from-frontend", "-o", "yaml")
	h.ok(strings.Replace(policiesV3, "order: 100", "order: 50", 1), "apply", "-f", "-")
	if got := storedJSON[api.GlobalNetworkPolicy](t, h, api.GlobalNetworkPolicyKey("db-from-frontend")); *got.Order != 50 {
		t.Errorf("order after apply: %v", *got.Order)
	}
	h.fail(one, []string{"replace", "-f", "-"}, `GlobalNetworkPolicy "db-from-frontend" was changed since it was read`)
	h.ok(rvRE.ReplaceAllString(one, ""), "replace", "-f", "-")
	if got := storedJSON[api.GlobalNetworkPolicy](t, h, api.GlobalNetworkPolicyKey("db-from-frontend")); *got.Order != 100 {
		t.Errorf("order after replace: %v", *got.Order)
	}
	h.fail(policiesV3, []string{"create", "-f", "-"}, `GlobalNetworkPolicy "db-from-frontend" already exists: use calicoctl apply or calicoctl replace`)
	h.fail(strings.Replace(policiesV3, "name: db-from-frontend", "name: nope", 1), []string{"replace", "-f", "-"},
		`GlobalNetworkPolicy "nope" does not exist: use calicoctl create or calicoctl apply`)

	// delete by file, by name, and what does not exist.
	if got := h.ok(policiesV3, "delete", "-f", "-"); got != "Successfully deleted 5 resource(s)\n" {
		t.Errorf("delete printed %q", got)
	}
	for _, k := range []string{"gnp", "np"} {
		if got := h.ok("", "get", k, "-o", "wide"); got != "NAME   ORDER   SELECTOR\n" {
			t.Errorf("after delete, get %s printed %q", k, got)
		}
	}
	h.fail("", []string{"delete", "gnp", "log-all"}, `GlobalNetworkPolicy "log-all" does not exist`)
	h.fail("", []string{"get", "networkpolicy", "web-ingress"}, `NetworkPolicy "web-ingress" does not exist (calicoctl get networkpolicies lists them)`)
	if got := h.ok("", "delete", "np", "web-ingress", "--skip-not-exists"); got != "Successfully deleted 0 'NetworkPolicy' resource(s) (1 did not exist, skipped)\n" {
		t.Errorf("delete --skip-not-exists printed %q", got)
	}
}

func TestPolicyKindNames(t *testing.T) {
	h := newHarness(t)
	h.ok(policiesV3+"---\n"+profileV3, "create", "-f", "-")
	for kind, names := range map[string][]string{
		"net1":             {"profile", "profiles", "Profile", "PROFILES", "pro", "pros"},
		"web-ingress":      {"networkpolicy", "networkpolicies", "NetworkPolicy", "networkPolicies", "netpol", "np"},
		"db-from-frontend": {"globalnetworkpolicy", "globalnetworkpolicies", "GlobalNetworkPolicy", "GlobalNetworkPolicies", "gnp", "GNP", "policy", "policies"},
	} {
		for _, n := range names {
			if got := h.ok("", "get", n); !strings.Contains(got, kind) {
				t.Errorf("get %s printed %q, want %s listed", n, got, kind)
			}
		}
	}
	// The kind in a document is case-insensitive too.
	h.ok("apiVersion: projectcalico.org/v3\nkind: globalnetworkpolicy\nmetadata: {name: lower}\nspec: {}\n", "create", "-f", "-")
	h.ok("apiVersion: projectcalico.org/v3\nkind: networkPolicy\nmetadata: {name: lower}\nspec: {}\n", "create", "-f", "-")
	h.ok("apiVersion: projectcalico.org/v3\nkind: PROFILE\nmetadata: {name: lower}\nspec: {}\n", "create", "-f", "-")
	h.ok("", "delete", "gnp", "lower")
	h.ok("", "delete", "np", "lower")
	h.ok("", "delete", "pro", "lower")
}

// TestPolicyValidationErrors covers each class of refusal: one line naming
// the document and the field, saying what is allowed; nothing written.
func TestPolicyValidationErrors(t *testing.T) {
	h := newHarness(t)
	h.ok(policiesV3+"---\n"+profileV3, "create", "-f", "-")
	gnp := func(spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p1}\nspec: " + spec + "\n"
	}
	np := func(meta, spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: " + meta + "\nspec: " + spec + "\n"
	}
	prof := func(meta, spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: " + meta + "\nspec: " + spec + "\n"
	}
	rule := func(r string) string { return gnp("{ingress: [" + r + "]}") }
	cases := []struct {
		name string
		verb string
		doc  string
		want []string
	}{
		// names
		{"policy name missing", "create", strings.Replace(gnp("{}"), "{name: p1}", "{}", 1), []string{"metadata.name: a policy needs a name"}},
		{"policy name upper case", "create", strings.Replace(gnp("{}"), "p1", "Allow_DB", 1), []string{`stdin document 1 (line 1) (GlobalNetworkPolicy "Allow_DB"): metadata.name "Allow_DB": use lower-case letters, digits, '-' and '.'`}},
		{"netpol name", "create", np("{name: -x}", "{}"), []string{`metadata.name "-x": use lower-case letters`}},
		{"profile name missing", "create", prof("{}", "{}"), []string{"metadata.name: a profile needs a name"}},
		{"profile name", "apply", prof("{name: 'a b'}", "{}"), []string{`metadata.name "a b": use letters, digits, '-', '_' and '.'`}},
		// spec
		{"order type", "create", gnp("{order: first}"), []string{"spec.order: expected a number, got a string"}},
		{"selector syntax", "create", gnp(`{selector: "role == 'db' &&"}`), []string{`spec.selector: selector "role == 'db' &&": at position 16: expected a label key, has(), all() or '(', got end of selector`}},
		{"selector operator", "create", gnp(`{selector: "role = 'db'"}`), []string{`spec.selector: selector "role = 'db'": at position 6:`}},
		{"types value", "create", gnp("{types: [Inbound]}"), []string{`spec.types[0]: "Inbound" is not a policy type: use Ingress or Egress`}},
		{"types twice", "create", gnp("{types: [Ingress, ingress]}"), []string{"spec.types[1]: Ingress is listed twice"}},
		{"types without rules' direction", "create", gnp("{types: [Ingress], egress: [{action: Allow}]}"), []string{"spec.egress: the policy has egress rules but spec.types does not include Egress"}},
		// rules
		{"action missing", "create", rule("{protocol: TCP}"), []string{"spec.ingress[0].action: a rule needs an action: Allow, Deny, Pass or Log"}},
		{"action unknown", "create", rule("{action: Accept}"), []string{`spec.ingress[0].action: "Accept" is not an action: use Allow, Deny, Pass or Log`}},
		{"protocol unknown", "create", rule("{action: Allow, protocol: tcpp}"), []string{`spec.ingress[0].protocol: "tcpp" is not a protocol: use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255`}},
		{"protocol number", "create", rule("{action: Allow, protocol: 256}"), []string{`spec.ingress[0].protocol: "256" is not a protocol`}},
		{"notProtocol", "create", gnp("{egress: [{action: Deny}, {action: Deny, notProtocol: 0}]}"), []string{`spec.egress[1].notProtocol: "0" is not a protocol`}},
		{"protocol type", "create", rule("{action: Allow, protocol: [TCP]}"), []string{"spec.ingress[0].protocol: expected a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255), got a list"}},
		{"nets", "create", rule("{action: Allow, source: {nets: [10.0.0.0/33]}}"), []string{`spec.ingress[0].source.nets[0]: "10.0.0.0/33" is not a CIDR`}},
		{"notNets", "create", rule("{action: Allow, destination: {notNets: [10.0.0.0/8, bogus]}}"), []string{`spec.ingress[0].destination.notNets[1]: "bogus" is not a CIDR`}},
		{"mixed families", "create", rule(`{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {nets: ["fd00::/64"]}}`), []string{"spec.ingress[0].destination.nets[0]: fd00::/64 mixes IPv4 and IPv6 in one rule"}},
		{"ICMP with IPv6", "create", rule(`{action: Allow, protocol: ICMP, source: {nets: ["fd00::/64"]}}`), []string{"spec.ingress[0].protocol: ICMP is IPv4 but the rule's nets are IPv6: use ICMPv6"}},
		{"rule selector", "create", rule(`{action: Allow, source: {selector: "has(role"}}`), []string{`spec.ingress[0].source.selector: selector "has(role": at position 9:`}},
		{"rule notSelector", "create", rule(`{action: Allow, destination: {notSelector: "a in {'x' 'y'}"}}`), []string{`spec.ingress[0].destination.notSelector: selector "a in {'x' 'y'}": at position 11:`}},
		{"port", "create", rule("{action: Allow, protocol: TCP, destination: {ports: [70000]}}"), []string{`spec.ingress[0].destination.ports[0]: "70000" is not a port: use a number 0-65535 or a range "lo:hi"`}},
		{"port range", "create", rule(`{action: Allow, protocol: UDP, destination: {notPorts: [22, "90:80"]}}`), []string{`spec.ingress[0].destination.notPorts[1]: port range "90:80": the first port must not be above the second`}},
		{"named port", "create", rule("{action: Allow, protocol: TCP, destination: {ports: [http]}}"), []string{`spec.ingress[0].destination.ports[0]: "http": named ports are not supported`}},
		{"ports without protocol", "create", rule("{action: Allow, destination: {ports: [80]}}"), []string{"spec.ingress[0].destination.ports: ports need protocol TCP, UDP or SCTP in the same rule"}},
		{"port type", "create", rule("{action: Allow, protocol: TCP, source: {ports: [{from: 1}]}}"), []string{`spec.ingress[0].source.ports[0]: expected a port number or a range "lo:hi", got a mapping`}},
		{"labelsToApply key", "create", prof("{name: p1}", "{labelsToApply: {'bad key': x}}"), []string{`spec.labelsToApply: label key "bad key"`}},
		{"labelsToApply value", "create", prof("{name: p1}", "{labelsToApply: {role: 'a b'}}"), []string{`spec.labelsToApply: label role="a b": a value is empty or at most 63`}},
		{"profile rule", "create", prof("{name: p1}", "{egress: [{action: Allow}, {action: Allow, protocol: ICMPv6, destination: {nets: [10.0.0.0/8]}}]}"), []string{"spec.egress[1].protocol: ICMPv6 is IPv6 but the rule's nets are IPv4: use ICMP"}},
		// namespaces
		{"namespace", "create", np("{name: p1, namespace: prod}", "{}"), []string{`metadata.namespace "prod": Docker has no namespaces`, "leave metadata.namespace out (or use default)"}},
		{"GNP namespace", "create", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p1, namespace: default}\nspec: {}\n", []string{"unknown field metadata.namespace: a GlobalNetworkPolicy metadata has only name, resourceVersion, creationTimestamp, uid"}},
		// unknown fields
		{"unknown spec field", "create", gnp("{selector: all(), doNotTrack: true}"), []string{"unknown field spec.doNotTrack: a GlobalNetworkPolicy spec has only order, selector, types, ingress, egress"}},
		{"unknown rule field", "create", rule("{action: Allow, icmp: {type: 8}}"), []string{"unknown field spec.ingress[0].icmp: a GlobalNetworkPolicy spec.ingress[0] has only action, protocol, notProtocol, source, destination"}},
		{"unknown entity field", "create", rule("{action: Allow, source: {namespaceSelector: all()}}"), []string{"unknown field spec.ingress[0].source.namespaceSelector: a GlobalNetworkPolicy spec.ingress[0].source has only nets, notNets, selector, notSelector, ports, notPorts"}},
		{"wrong case field", "create", rule("{action: Allow, source: {notnets: [10.0.0.0/8]}}"), []string{"unknown field spec.ingress[0].source.notnets: did you mean spec.ingress[0].source.notNets?"}},
		{"unknown profile field", "create", prof("{name: p1}", "{labels: {a: b}}"), []string{"unknown field spec.labels: a Profile spec has only ingress, egress, labelsToApply"}},
		{"unknown netpol metadata", "create", np("{name: p1, labels: {a: b}}", "{}"), []string{"unknown field metadata.labels: a NetworkPolicy metadata has only name, resourceVersion, creationTimestamp, uid, namespace"}},
		{"unknown top-level field", "create", gnp("{}") + "status: {}\n", []string{"unknown field status: a GlobalNetworkPolicy has only apiVersion, kind, metadata, spec"}},
		{"ingress not a list", "create", gnp("{ingress: {action: Allow}}"), []string{"spec.ingress: expected a list, got a mapping"}},
		// legacy (v1) forms
		{"legacy netpol", "create", "apiVersion: v1\nkind: NetworkPolicy\nmetadata: {name: p1}\nspec: {}\n", []string{"kind NetworkPolicy has no legacy (apiVersion v1) form: use apiVersion projectcalico.org/v3"}},
		{"legacy icmp", "create", "apiVersion: v1\nkind: policy\nmetadata: {name: p1}\nspec: {ingress: [{action: allow, protocol: icmp, icmp: {type: 8}}]}\n", []string{"spec.ingress[0].icmp: ICMP type and code matches are not supported"}},
		{"legacy ipVersion", "create", "apiVersion: v1\nkind: policy\nmetadata: {name: p1}\nspec: {egress: [{action: allow, ipVersion: 6}]}\n", []string{"spec.egress[0].ipVersion: not supported"}},
		{"legacy preDNAT", "create", "apiVersion: v1\nkind: policy\nmetadata: {name: p1}\nspec: {preDNAT: true}\n", []string{"spec.preDNAT: host endpoint policy is not supported"}},
		{"legacy tag", "create", "apiVersion: v1\nkind: profile\nmetadata: {name: p1, tags: ['web tier']}\n", []string{`metadata.tags[0]: tag "web tier": use at most 63 letters`}},
		{"legacy rule tag", "create", "apiVersion: v1\nkind: profile\nmetadata: {name: p1}\nspec: {ingress: [{action: allow, source: {tag: 'a)||(b'}}]}\n", []string{`spec.ingress[0].source.tag: tag "a)||(b"`}},
		{"legacy labels", "create", "apiVersion: v1\nkind: profile\nmetadata: {name: p1, labels: {'x y': z}}\n", []string{`metadata.labels: label key "x y"`}},
		{"legacy unknown field", "create", "apiVersion: v1\nkind: policy\nmetadata: {name: p1}\nspec: {ingress: [{action: allow, source: {tags: [a]}}]}\n", []string{"unknown field spec.ingress[0].source.tags: a legacy (v1) policy spec.ingress[0].source has only tag, notTag, net, nets"}},
		// writes
		{"create existing", "create", strings.Replace(gnp("{}"), "p1", "log-all", 1), []string{`GlobalNetworkPolicy "log-all" already exists: use calicoctl apply or calicoctl replace`}},
		{"replace missing", "replace", prof("{name: p1}", "{}"), []string{`Profile "p1" does not exist: use calicoctl create or calicoctl apply`}},
		{"bad resourceVersion", "apply", np("{name: web-ingress, resourceVersion: x1}", "{}"), []string{`metadata.resourceVersion "x1": give the number calicoctl get printed`}},
		{"stale resourceVersion", "apply", np("{name: web-ingress, resourceVersion: '1'}", "{}"), []string{`NetworkPolicy "web-ingress" was changed since it was read (metadata.resourceVersion 1, now`}},
		{"stale delete", "delete", prof("{name: net1, resourceVersion: '1'}", "{}"), []string{`Profile "net1" was changed since it was read (metadata.resourceVersion 1, now`}},
	}
	snapshot := func() string {
		var b strings.Builder
		for _, k := range []string{"profiles", "networkpolicies", "globalnetworkpolicies"} {
			b.WriteString(h.ok("", "get", k, "-o", "yaml"))
		}
		return b.String()
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			before := snapshot()
			h.fail(c.doc, []string{c.verb, "-f", "-"}, c.want...)
			if after := snapshot(); after != before {
				t.Errorf("a refused %s changed the policies:\n%s", c.verb, after)
			}
		})
	}
}

// TestSelectorPositionError: the whole message for a bad selector, which
// points at the offending character (1-based).
func TestSelectorPositionError(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ sel, want string }{
		{"role == 'db' && ", `spec.selector: selector "role == 'db' && ": at position 17: `},
		{"role == db", `spec.selector: selector "role == db": at position 9: `},
		{"role == 'db", `spec.selector: selector "role == 'db": at position 9: unterminated string`},
		{"role == 'db' $ x", `spec.selector: selector "role == 'db' $ x": at position 14: unexpected character '$'`},
	} {
		doc := fmt.Sprintf("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: np1}\nspec:\n  selector: %q\n", c.sel)
		got := h.fail(doc, []string{"create", "-f", "-"}, `stdin document 1 (line 1) (NetworkPolicy "np1"): `+c.want)
		t.Logf("%s", got)
	}
}

// TestLegacyPolicyWalkthrough: the profile and policy documents of Calico
// v2's Docker security walkthrough (apiVersion v1) are converted.
func TestLegacyPolicyWalkthrough(t *testing.T) {
	h := newHarness(t)
	legacy := `- apiVersion: v1
  kind: profile
  metadata:
    name: database
    labels:
      role: database
    tags: [db]
- apiVersion: v1
  kind: policy
  metadata:
    name: database
  spec:
    order: 0
    selector: role == 'database'
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'frontend'
        tag: web
        net: 10.0.0.0/8
      destination:
        ports:
        -  3306
    - action: next-tier
      source:
        notTag: db
        notSelector: role == 'database'
    egress:
    - action: allow
      destination:
        selector: role == 'database'
`
	if got := h.ok(legacy, "create", "-f", "-"); got != "Successfully created 2 resource(s)\n" {
		t.Errorf("create printed %q", got)
	}
	prof := storedJSON[api.Profile](t, h, api.ProfileKey("database"))
	if !reflect.DeepEqual(prof.LabelsToApply, map[string]string{"role": "database", "db": ""}) {
		t.Errorf("legacy profile labels and tags became %v", prof.LabelsToApply)
	}
	gnp := storedJSON[api.GlobalNetworkPolicy](t, h, api.GlobalNetworkPolicyKey("database"))
	if src := gnp.Ingress[0].Source; src.Selector != "(role == 'frontend') && has(web)" || !reflect.DeepEqual(src.Nets, []string{"10.0.0.0/8"}) {
		t.Errorf("legacy source became %+v", src)
	}
	if r := gnp.Ingress[1]; r.Action != api.Pass || r.Source.NotSelector != "(role == 'database') || has(db)" {
		t.Errorf("legacy next-tier rule became %+v", r)
	}
	golden(t, "legacy_policy_yaml", h.ok("", "get", "policy", "database", "-o", "yaml"))
	// Applying the legacy file again updates what it made.
	h.ok(strings.Replace(legacy, "order: 0", "order: 5", 1), "apply", "-f", "-")
	if got := storedJSON[api.GlobalNetworkPolicy](t, h, api.GlobalNetworkPolicyKey("database")); *got.Order != 5 {
		t.Errorf("order after apply: %v", *got.Order)
	}
	h.ok(legacy, "delete", "-f", "-")
}

// TestREADMEOpenNetwork applies the README's example that opens net1.
func TestREADMEOpenNetwork(t *testing.T) {
	h := newHarness(t)
	readme := readFileT(t, "README.md")
	start := strings.Index(readme, "# open-net1.yaml\n")
	if start < 0 {
		t.Fatal("README.md has no open-net1.yaml example")
	}
	doc := readme[start:]
	doc = doc[:strings.Index(doc, "```")]
	if got := h.ok(doc, "apply", "-f", "-"); got != "Successfully applied 1 'Profile' resource(s)\n" {
		t.Errorf("apply printed %q", got)
	}
	p := storedJSON[api.Profile](t, h, api.ProfileKey("net1"))
	want := api.Profile{Name: "net1", ProfileSpec: api.ProfileSpec{
		Ingress: []api.Rule{{Action: api.Allow}}, Egress: []api.Rule{{Action: api.Allow}},
		LabelsToApply: map[string]string{"calico/network": "net1"},
	}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("README profile stored as %+v, want %+v", p, want)
	}
	// It is the same as the daemon's default profile for an open network.
	if def := policy.DefaultProfile("net1", "calico/network", "net1", true); !reflect.DeepEqual(p, def) {
		t.Errorf("README profile %+v differs from the open default %+v", p, def)
	}
	if got := h.ok("", "get", "profiles"); got != "NAME\nnet1\n" {
		t.Errorf("get profiles printed %q", got)
	}
}

// TestConcurrentPolicyCreates: creates of one name race through
// compare-and-swap; exactly one wins and the others are told it exists.
func TestConcurrentPolicyCreates(t *testing.T) {
	h := newHarness(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := 1.0 * float64(i)
			p := &api.GlobalNetworkPolicy{Name: "race", PolicySpec: api.PolicySpec{Order: &o}}
			_, errs[i] = globalNetworkPolicyStore.put(context.Background(), h.store, api.Object{Resource: p}, ipam.PutCreate)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !strings.Contains(err.Error(), `GlobalNetworkPolicy "race" already exists`):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d creates of one name succeeded, want 1", won)
	}
	raw, err := datastore.GetRaw(context.Background(), h.store, api.GlobalNetworkPolicyKey("race"))
	if err != nil {
		t.Fatalf("record: %v", err)
	}
	var p api.GlobalNetworkPolicy
	if err := json.Unmarshal(raw.Value, &p); err != nil || p.Name != "race" {
		t.Errorf("record %s: %v", raw.Value, err)
	}
}

func readFileT(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGetShowsInvalidPolicies: records the daemons would not enforce (one
// written by a newer calicoctl, one that does not decode) are listed with
// STATUS Invalid and the reason, with a warning; the valid ones as before.
func TestGetShowsInvalidPolicies(t *testing.T) {
	h := newHarness(t)
	h.ok(policiesV3, "apply", "-f", "-")
	ctx := context.Background()
	for key, raw := range map[string]string{
		api.GlobalNetworkPolicyKey("from-newer"): `{"name":"from-newer","selector":"all()","ingress":[{"action":"Allow","http":{"methods":["GET"]}}]}`,
		api.GlobalNetworkPolicyKey("garbage"):    `{"name":`,
	} {
		if _, err := h.store.CAS(ctx, nil, []datastore.Op{datastore.PutRaw(key, raw)}); err != nil {
			t.Fatal(err)
		}
	}
	r := h.run("", "get", "globalnetworkpolicies", "-o", "wide")
	if r.code != 0 {
		t.Fatalf("get: exit %d: %s", r.code, r.err)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if !strings.HasSuffix(strings.TrimSpace(lines[0]), "STATUS") {
		t.Errorf("no STATUS column:\n%s", r.out)
	}
	for _, want := range []string{"db-from-frontend", "Valid", `from-newer`, `Invalid: undecodable: json: unknown field "http"`, "garbage", "Invalid: undecodable: unexpected EOF"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("get -o wide lacks %q:\n%s", want, r.out)
		}
	}
	if strings.Count(r.err, "Warning: GlobalNetworkPolicy") != 2 || !strings.Contains(r.err, `"from-newer" is invalid, the daemons do not enforce it as stored`) {
		t.Errorf("warnings:\n%s", r.err)
	}
	r = h.run("", "get", "globalnetworkpolicy", "from-newer", "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.out, "name: from-newer") || !strings.Contains(r.err, "unknown field") {
		t.Errorf("get -o yaml of an invalid record: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	// apply fixes them, also the one that reads (leniently) as the document
	// applied and the one that does not decode at all.
	fix := `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: from-newer}
spec:
  selector: all()
  ingress: [{action: Allow}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: garbage}
spec: {selector: all()}
`
	h.ok(fix, "apply", "-f", "-")
	if r := h.run("", "get", "globalnetworkpolicies"); r.code != 0 || strings.Contains(r.out, "Invalid") || r.err != "" {
		t.Errorf("after apply the records are still invalid:\n%s\n%s", r.out, r.err)
	}
	// Only valid records: the table is as it always was.
	h.ok("", "delete", "globalnetworkpolicy", "from-newer", "garbage")
	if out := h.ok("", "get", "globalnetworkpolicies"); strings.Contains(out, "STATUS") {
		t.Errorf("STATUS shown without invalid records:\n%s", out)
	}
}
