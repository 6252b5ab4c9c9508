package api

// The policy kinds: Profile, NetworkPolicy and GlobalNetworkPolicy. Their
// records, rules, normalisation and validation are in policyrules.go and
// policystored.go (package policy evaluates them); this file gives them
// their documents (Calico v3's, and Calico v1's profile and
// policy, converted on input) and plugs them into Kinds.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// ResourceKind implements Resource.
func (p *Profile) ResourceKind() *Kind { return ProfileKind }

// ResourceName implements Resource.
func (p *Profile) ResourceName() string { return p.Name }

// ResourceKind implements Resource.
func (p *NetworkPolicy) ResourceKind() *Kind { return NetworkPolicyKind }

// ResourceName implements Resource.
func (p *NetworkPolicy) ResourceName() string { return p.Name }

// ResourceKind implements Resource.
func (p *GlobalNetworkPolicy) ResourceKind() *Kind { return GlobalNetworkPolicyKind }

// ResourceName implements Resource.
func (p *GlobalNetworkPolicy) ResourceName() string { return p.Name }

// DefaultNamespace is the one namespace a NetworkPolicy document may name:
// Docker has none, and Calico puts a policy without one in "default".
const DefaultNamespace = "default"

// ProfileKind is the Profile resource. Calico v1's kind profile is the same
// name, so its documents are read too.
var ProfileKind = &Kind{
	Name:    "Profile",
	Aliases: []string{"profiles", "pro", "pros"},
	Legacy:  "profile",
	decode:  decodeProfile,
	encode: func(r Resource, rv string) any {
		p := r.(*Profile)
		return &ProfileDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Profile"},
			Metadata: ObjectMeta{Name: p.Name, ResourceVersion: rv},
			Spec:     p.ProfileSpec,
		}
	},
}

// NetworkPolicyKind is the NetworkPolicy resource.
var NetworkPolicyKind = &Kind{
	Name:    "NetworkPolicy",
	Aliases: []string{"networkpolicies", "netpol", "netpols", "np", "nps"},
	decode:  decodeNetworkPolicy,
	encode: func(r Resource, rv string) any {
		p := r.(*NetworkPolicy)
		return &NetworkPolicyDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "NetworkPolicy"},
			Metadata: NamespacedMeta{ObjectMeta: ObjectMeta{Name: p.Name, ResourceVersion: rv}},
			Spec:     p.PolicySpec,
		}
	},
}

// GlobalNetworkPolicyKind is the GlobalNetworkPolicy resource. Calico v1's
// policies were global: kind policy (apiVersion v1) is read as one, and
// "policy"/"policies" name this kind on the command line.
var GlobalNetworkPolicyKind = &Kind{
	Name:    "GlobalNetworkPolicy",
	Aliases: []string{"globalnetworkpolicies", "gnp", "gnps", "policies"},
	Legacy:  "policy",
	decode:  decodeGlobalNetworkPolicy,
	encode: func(r Resource, rv string) any {
		p := r.(*GlobalNetworkPolicy)
		return &GlobalNetworkPolicyDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "GlobalNetworkPolicy"},
			Metadata: ObjectMeta{Name: p.Name, ResourceVersion: rv},
			Spec:     p.PolicySpec,
		}
	},
}

// ProfileDoc is the v3 document of a Profile.
type ProfileDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     ProfileSpec `json:"spec"`
}

// NamespacedMeta is a NetworkPolicy's metadata: Calico scopes the kind to a
// namespace. Only DefaultNamespace (or none) is accepted, and it is not
// printed.
type NamespacedMeta struct {
	ObjectMeta `json:",inline"`
	Namespace  string `json:"namespace,omitempty"`
}

// NetworkPolicyDoc is the v3 document of a NetworkPolicy.
type NetworkPolicyDoc struct {
	TypeMeta `json:",inline"`
	Metadata NamespacedMeta `json:"metadata"`
	Spec     PolicySpec     `json:"spec"`
}

// GlobalNetworkPolicyDoc is the v3 document of a GlobalNetworkPolicy.
type GlobalNetworkPolicyDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     PolicySpec `json:"spec"`
}

func decodeProfile(raw []byte, legacy bool) (Object, error) {
	if legacy {
		return decodeLegacyProfile(raw)
	}
	var d ProfileDoc
	if err := strictPolicyUnmarshal(raw, &d, "a Profile"); err != nil {
		return Object{}, err
	}
	p := &Profile{Name: strings.TrimSpace(d.Metadata.Name), ProfileSpec: d.Spec}
	return Object{Resource: p, ResourceVersion: d.Metadata.ResourceVersion}, nil
}

func decodeNetworkPolicy(raw []byte, _ bool) (Object, error) {
	var d NetworkPolicyDoc
	if err := strictPolicyUnmarshal(raw, &d, "a NetworkPolicy"); err != nil {
		return Object{}, err
	}
	if ns := d.Metadata.Namespace; ns != "" && ns != DefaultNamespace {
		return Object{}, fmt.Errorf("metadata.namespace %q: Docker has no namespaces, a NetworkPolicy here applies to every endpoint its selector matches: leave metadata.namespace out (or use %s)", ns, DefaultNamespace)
	}
	p := &NetworkPolicy{Name: strings.TrimSpace(d.Metadata.Name), PolicySpec: d.Spec}
	return Object{Resource: p, ResourceVersion: d.Metadata.ResourceVersion}, nil
}

func decodeGlobalNetworkPolicy(raw []byte, legacy bool) (Object, error) {
	if legacy {
		return decodeLegacyPolicy(raw)
	}
	var d GlobalNetworkPolicyDoc
	if err := strictPolicyUnmarshal(raw, &d, "a GlobalNetworkPolicy"); err != nil {
		return Object{}, err
	}
	p := &GlobalNetworkPolicy{Name: strings.TrimSpace(d.Metadata.Name), PolicySpec: d.Spec}
	return Object{Resource: p, ResourceVersion: d.Metadata.ResourceVersion}, nil
}

// strictPolicyUnmarshal is StrictUnmarshal, with the values of protocols and
// ports checked first: their own decoders' errors would not name the field.
func strictPolicyUnmarshal(raw []byte, v any, what string) error {
	err := StrictUnmarshal(raw, v, what)
	if err == nil {
		return nil
	}
	if verr := checkRuleValues(raw); verr != nil {
		return verr
	}
	return err
}

// checkRuleValues reports a value of the wrong type in spec.ingress /
// spec.egress, naming its field with the rule's index (encoding/json's
// messages leave indices out, and protocols and ports have their own
// decoders whose messages name no field at all).
func checkRuleValues(raw []byte) error {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		return nil
	}
	spec, _ := doc["spec"].(map[string]any)
	type check struct {
		field string
		ok    func(any) bool
		want  string
	}
	isString := func(v any) bool { _, ok := v.(string); return ok }
	isScalar := func(v any) bool {
		switch v.(type) {
		case string, json.Number:
			return true
		}
		return false
	}
	isMap := func(v any) bool { _, ok := v.(map[string]any); return ok }
	isList := func(v any) bool { _, ok := v.([]any); return ok }
	protocol := "a protocol (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255)"
	ruleChecks := []check{
		{"action", isString, "a string (Allow, Deny, Pass or Log)"},
		{"protocol", isScalar, protocol},
		{"notProtocol", isScalar, protocol},
		{"source", isMap, "a mapping"},
		{"destination", isMap, "a mapping"},
	}
	entityChecks := []check{
		{"selector", isString, "a string"},
		{"notSelector", isString, "a string"},
		{"nets", isList, "a list"},
		{"notNets", isList, "a list"},
		{"ports", isList, "a list"},
		{"notPorts", isList, "a list"},
	}
	elemChecks := map[string]check{
		"nets":     {"", isString, "a CIDR"},
		"notNets":  {"", isString, "a CIDR"},
		"ports":    {"", isScalar, `a port number or a range "lo:hi"`},
		"notPorts": {"", isScalar, `a port number or a range "lo:hi"`},
	}
	bad := func(path, want string, v any) error {
		return fmt.Errorf("%s: expected %s, got %s", path, want, genericWord(v))
	}
	for _, dir := range []string{"ingress", "egress"} {
		rules, _ := spec[dir].([]any)
		for i, r := range rules {
			path := fmt.Sprintf("spec.%s[%d]", dir, i)
			rule, ok := r.(map[string]any)
			if !ok {
				return bad(path, "a mapping (a rule)", r)
			}
			for _, c := range ruleChecks {
				if v, ok := rule[c.field]; ok && v != nil && !c.ok(v) {
					return bad(path+"."+c.field, c.want, v)
				}
			}
			for _, side := range []string{"source", "destination"} {
				e, _ := rule[side].(map[string]any)
				for _, c := range entityChecks {
					v, ok := e[c.field]
					if !ok || v == nil {
						continue
					}
					if !c.ok(v) {
						return bad(path+"."+side+"."+c.field, c.want, v)
					}
					if ec, ok := elemChecks[c.field]; ok {
						for j, x := range v.([]any) {
							if !ec.ok(x) {
								return bad(fmt.Sprintf("%s.%s.%s[%d]", path, side, c.field, j), ec.want, x)
							}
						}
					}
				}
			}
		}
	}
	return nil
}

// genericWord names the type of a value decoded into any.
func genericWord(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "true or false"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case string:
		return "a string"
	}
	return "a number"
}

// ---- Calico v1 (legacy) profiles and policies ----

// LegacyEntityRule is a v1 rule's source or destination: v3's fields plus
// tag/notTag (now selectors has(tag)) and the single net/notNet.
type LegacyEntityRule struct {
	Tag         string   `json:"tag,omitempty"`
	NotTag      string   `json:"notTag,omitempty"`
	Net         string   `json:"net,omitempty"`
	Nets        []string `json:"nets,omitempty"`
	NotNet      string   `json:"notNet,omitempty"`
	NotNets     []string `json:"notNets,omitempty"`
	Selector    string   `json:"selector,omitempty"`
	NotSelector string   `json:"notSelector,omitempty"`
	Ports       []Port   `json:"ports,omitempty"`
	NotPorts    []Port   `json:"notPorts,omitempty"`
}

// LegacyICMP is a v1 rule's icmp / notICMP match, which is not supported.
type LegacyICMP struct {
	Type *int `json:"type,omitempty"`
	Code *int `json:"code,omitempty"`
}

// LegacyRule is a v1 rule.
type LegacyRule struct {
	Action      string           `json:"action"`
	IPVersion   *int             `json:"ipVersion,omitempty"`
	Protocol    Protocol         `json:"protocol,omitempty"`
	NotProtocol Protocol         `json:"notProtocol,omitempty"`
	ICMP        *LegacyICMP      `json:"icmp,omitempty"`
	NotICMP     *LegacyICMP      `json:"notICMP,omitempty"`
	Source      LegacyEntityRule `json:"source"`
	Destination LegacyEntityRule `json:"destination"`
}

// LegacyProfileDoc is the v1 form of a profile: its labels (applied to the
// endpoints that have it) and tags in metadata.
type LegacyProfileDoc struct {
	TypeMeta `json:",inline"`
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
		Tags   []string          `json:"tags,omitempty"`
	} `json:"metadata"`
	Spec struct {
		Ingress []LegacyRule `json:"ingress,omitempty"`
		Egress  []LegacyRule `json:"egress,omitempty"`
	} `json:"spec"`
}

// LegacyPolicyDoc is the v1 form of a (global)
type LegacyPolicyDoc struct {
	TypeMeta `json:",inline"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Order          *float64     `json:"order,omitempty"`
		Selector       string       `json:"selector,omitempty"`
		Types          []string     `json:"types,omitempty"`
		Ingress        []LegacyRule `json:"ingress,omitempty"`
		Egress         []LegacyRule `json:"egress,omitempty"`
		DoNotTrack     bool         `json:"doNotTrack,omitempty"`
		PreDNAT        bool         `json:"preDNAT,omitempty"`
		ApplyOnForward bool         `json:"applyOnForward,omitempty"`
	} `json:"spec"`
}

func decodeLegacyProfile(raw []byte) (Object, error) {
	var d LegacyProfileDoc
	if err := strictPolicyUnmarshal(raw, &d, "a legacy (v1) profile"); err != nil {
		return Object{}, err
	}
	p := &Profile{Name: strings.TrimSpace(d.Metadata.Name)}
	// Calico's upgrade made each tag a label with an empty value.
	for i, t := range d.Metadata.Tags {
		if err := checkTag(fmt.Sprintf("metadata.tags[%d]", i), t); err != nil {
			return Object{}, err
		}
	}
	if err := ValidateLabels("metadata.labels", d.Metadata.Labels); err != nil {
		return Object{}, err
	}
	if len(d.Metadata.Labels) > 0 || len(d.Metadata.Tags) > 0 {
		p.LabelsToApply = map[string]string{}
		for _, t := range d.Metadata.Tags {
			p.LabelsToApply[strings.TrimSpace(t)] = ""
		}
		for k, v := range d.Metadata.Labels {
			p.LabelsToApply[k] = v
		}
	}
	var err error
	if p.Ingress, err = convertLegacyRules(d.Spec.Ingress, "spec.ingress"); err != nil {
		return Object{}, err
	}
	if p.Egress, err = convertLegacyRules(d.Spec.Egress, "spec.egress"); err != nil {
		return Object{}, err
	}
	return Object{Resource: p}, nil
}

func decodeLegacyPolicy(raw []byte) (Object, error) {
	var d LegacyPolicyDoc
	if err := strictPolicyUnmarshal(raw, &d, "a legacy (v1) policy"); err != nil {
		return Object{}, err
	}
	for _, f := range []struct {
		name string
		on   bool
	}{{"doNotTrack", d.Spec.DoNotTrack}, {"preDNAT", d.Spec.PreDNAT}, {"applyOnForward", d.Spec.ApplyOnForward}} {
		if f.on {
			return Object{}, fmt.Errorf("spec.%s: host endpoint policy is not supported here, only container endpoints: remove it", f.name)
		}
	}
	p := &GlobalNetworkPolicy{Name: strings.TrimSpace(d.Metadata.Name), PolicySpec: PolicySpec{
		Order: d.Spec.Order, Selector: d.Spec.Selector, Types: d.Spec.Types,
	}}
	var err error
	if p.Ingress, err = convertLegacyRules(d.Spec.Ingress, "spec.ingress"); err != nil {
		return Object{}, err
	}
	if p.Egress, err = convertLegacyRules(d.Spec.Egress, "spec.egress"); err != nil {
		return Object{}, err
	}
	return Object{Resource: p}, nil
}

func convertLegacyRules(in []LegacyRule, path string) ([]Rule, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]Rule, len(in))
	for i, r := range in {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case r.ICMP != nil:
			return nil, fmt.Errorf("%s.icmp: ICMP type and code matches are not supported: match protocol icmp alone", p)
		case r.NotICMP != nil:
			return nil, fmt.Errorf("%s.notICMP: ICMP type and code matches are not supported: match protocol icmp alone", p)
		case r.IPVersion != nil:
			return nil, fmt.Errorf("%s.ipVersion: not supported: a rule applies to the family of its nets (both families when it has none)", p)
		}
		for _, t := range []struct{ field, tag string }{
			{"source.tag", r.Source.Tag}, {"source.notTag", r.Source.NotTag},
			{"destination.tag", r.Destination.Tag}, {"destination.notTag", r.Destination.NotTag},
		} {
			if t.tag == "" {
				continue
			}
			if err := checkTag(p+"."+t.field, t.tag); err != nil {
				return nil, err
			}
		}
		action := Action(r.Action)
		if strings.EqualFold(r.Action, "next-tier") {
			action = Pass
		}
		out[i] = Rule{
			Action: action, Protocol: r.Protocol, NotProtocol: r.NotProtocol,
			Source: convertLegacyEntity(r.Source), Destination: convertLegacyEntity(r.Destination),
		}
	}
	return out, nil
}

// convertLegacyEntity turns tags into selectors (tag t: has(t)) and the
// single nets into list entries, as Calico's upgrade did.
func convertLegacyEntity(e LegacyEntityRule) EntityRule {
	out := EntityRule{Selector: e.Selector, NotSelector: e.NotSelector, Ports: e.Ports, NotPorts: e.NotPorts}
	if e.Net != "" {
		out.Nets = append(out.Nets, e.Net)
	}
	out.Nets = append(out.Nets, e.Nets...)
	if e.NotNet != "" {
		out.NotNets = append(out.NotNets, e.NotNet)
	}
	out.NotNets = append(out.NotNets, e.NotNets...)
	if t := strings.TrimSpace(e.Tag); t != "" {
		out.Selector = combineSelectors(out.Selector, "has("+t+")", " && ")
	}
	if t := strings.TrimSpace(e.NotTag); t != "" {
		// Not tagged and not selected: neither matches.
		out.NotSelector = combineSelectors(out.NotSelector, "has("+t+")", " || ")
	}
	return out
}

// checkTag checks a v1 tag, which becomes a label key.
func checkTag(path, tag string) error {
	if strings.TrimSpace(tag) == "" {
		return fmt.Errorf("%s: a tag must not be empty", path)
	}
	if strings.ContainsAny(tag, " \t()'\"&|!=,{}") || ValidateLabels(path, map[string]string{strings.TrimSpace(tag): ""}) != nil {
		return fmt.Errorf("%s: tag %q: use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", path, tag)
	}
	return nil
}

func combineSelectors(a, b, op string) string {
	if strings.TrimSpace(a) == "" {
		return b
	}
	return "(" + a + ")" + op + b
}

// LabelList prints labels as calicoctl's tables do: k=v, sorted, comma
// separated.
func LabelList(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}
