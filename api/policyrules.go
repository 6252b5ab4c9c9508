package api

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Action is what a rule does with a packet it matches.
type Action string

// Rule actions, as in Calico.
const (
	// Allow accepts the packet in this direction; no further rule is looked at.
	Allow Action = "Allow"
	// Deny drops the packet.
	Deny Action = "Deny"
	// Pass skips the remaining policies and goes to the endpoint's profiles.
	// In a profile it skips the rest of that profile.
	Pass Action = "Pass"
	// Log logs the packet and goes on with the next rule.
	Log Action = "Log"
)

var actions = []Action{Allow, Deny, Pass, Log}

// Policy types (directions a policy applies in).
const (
	TypeIngress = "Ingress"
	TypeEgress  = "Egress"
)

// Protocol is an IP protocol: a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite,
// any case) or a number 1-255. In JSON it is a string or a number.
type Protocol string

// Protocol numbers of the named protocols.
const (
	ProtoICMP    uint8 = 1
	ProtoTCP     uint8 = 6
	ProtoUDP     uint8 = 17
	ProtoICMPv6  uint8 = 58
	ProtoSCTP    uint8 = 132
	ProtoUDPLite uint8 = 136
)

var protocolNames = []struct {
	name string
	num  uint8
}{
	{"TCP", ProtoTCP}, {"UDP", ProtoUDP}, {"ICMP", ProtoICMP}, {"ICMPv6", ProtoICMPv6},
	{"SCTP", ProtoSCTP}, {"UDPLite", ProtoUDPLite},
}

// UnmarshalJSON accepts "TCP", "tcp", 6 or "6".
func (p *Protocol) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*p = Protocol(n.String())
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a protocol is a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or a number 1-255, not %s", b)
	}
	*p = Protocol(s)
	return nil
}

// MarshalJSON writes a number for a numeric protocol and a string otherwise.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if _, err := strconv.ParseUint(string(p), 10, 8); err == nil {
		return []byte(p), nil
	}
	return json.Marshal(string(p))
}

// Number is the protocol's IP protocol number.
func (p Protocol) Number() (uint8, error) {
	s := strings.TrimSpace(string(p))
	for _, n := range protocolNames {
		if strings.EqualFold(s, n.name) {
			return n.num, nil
		}
	}
	if v, err := strconv.ParseUint(s, 10, 8); err == nil && v >= 1 {
		return uint8(v), nil
	}
	return 0, fmt.Errorf("%q is not a protocol: use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255", string(p))
}

// canonical is Calico's spelling of a named protocol ("TCP"), or the number.
func (p Protocol) canonical() Protocol {
	s := strings.TrimSpace(string(p))
	for _, n := range protocolNames {
		if strings.EqualFold(s, n.name) {
			return Protocol(n.name)
		}
	}
	return Protocol(s)
}

// ProtocolName names a protocol number for messages and rendered rules.
func ProtocolName(n uint8) string {
	switch n {
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMPv6:
		return "icmpv6"
	case ProtoSCTP:
		return "sctp"
	case ProtoUDPLite:
		return "udplite"
	}
	return strconv.Itoa(int(n))
}

func protoHasPorts(n uint8) bool { return n == ProtoTCP || n == ProtoUDP || n == ProtoSCTP }

// Port is a port number or a range "lo:hi" (inclusive). In JSON it is a
// number or a string.
type Port string

// UnmarshalJSON accepts 80, "80" and "8000:8080".
func (p *Port) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*p = Port(n.String())
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a port is a number 0-65535 or a range \"lo:hi\", not %s", b)
	}
	*p = Port(s)
	return nil
}

// MarshalJSON writes a single port as a number (in its canonical form: a
// "08" read from a document is 8, not the invalid JSON 08) and a range as a
// string.
func (p Port) MarshalJSON() ([]byte, error) {
	if n, err := strconv.ParseUint(string(p), 10, 16); err == nil {
		return []byte(strconv.FormatUint(n, 10)), nil
	}
	return json.Marshal(string(p))
}

// PortRange is an inclusive range of ports; a single port has Min == Max.
type PortRange struct{ Min, Max uint16 }

func (r PortRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(int(r.Min))
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// Contains reports whether port is in the range.
func (r PortRange) Contains(port uint16) bool { return port >= r.Min && port <= r.Max }

// Range parses the port.
func (p Port) Range() (PortRange, error) {
	s := strings.TrimSpace(string(p))
	lo, hi, isRange := strings.Cut(s, ":")
	parse := func(v string) (uint16, error) {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
		if err != nil {
			if v != "" && !strings.ContainsAny(v[:1], "0123456789") {
				return 0, fmt.Errorf("%q: named ports are not supported: use a number 0-65535 or a range \"lo:hi\"", s)
			}
			return 0, fmt.Errorf("%q is not a port: use a number 0-65535 or a range \"lo:hi\"", s)
		}
		return uint16(n), nil
	}
	a, err := parse(lo)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{a, a}, nil
	}
	b, err := parse(hi)
	if err != nil {
		return PortRange{}, err
	}
	if a > b {
		return PortRange{}, fmt.Errorf("port range %q: the first port must not be above the second", s)
	}
	return PortRange{a, b}, nil
}

// EntityRule says which peer (source or destination) a rule matches. Every
// field given must match; an empty EntityRule matches everything.
type EntityRule struct {
	// Nets: the address is in one of these CIDRs (a bare address is a /32 or /128).
	Nets []string `json:"nets,omitempty"`
	// NotNets: the address is in none of these CIDRs.
	NotNets []string `json:"notNets,omitempty"`
	// Selector: the address belongs to an endpoint whose labels match.
	Selector string `json:"selector,omitempty"`
	// NotSelector: the address belongs to no endpoint whose labels match.
	NotSelector string `json:"notSelector,omitempty"`
	// Ports: the port is one of these (needs protocol TCP, UDP or SCTP).
	Ports []Port `json:"ports,omitempty"`
	// NotPorts: the port is none of these (needs protocol TCP, UDP or SCTP).
	NotPorts []Port `json:"notPorts,omitempty"`
}

// IsZero reports whether the entity rule matches everything.
func (e EntityRule) IsZero() bool {
	return len(e.Nets) == 0 && len(e.NotNets) == 0 && e.Selector == "" && e.NotSelector == "" &&
		len(e.Ports) == 0 && len(e.NotPorts) == 0
}

// Rule is one ingress or egress rule of a policy or profile.
type Rule struct {
	Action      Action     `json:"action"`
	Protocol    Protocol   `json:"protocol,omitempty"`
	NotProtocol Protocol   `json:"notProtocol,omitempty"`
	Source      EntityRule `json:"source,omitzero"`
	Destination EntityRule `json:"destination,omitzero"`
}

// PolicySpec is the spec shared by NetworkPolicy and GlobalNetworkPolicy,
// with Calico v3's field names.
type PolicySpec struct {
	// Order: policies with a lower order are evaluated first; no order means
	// after every ordered policy. Ties are broken by name.
	Order *float64 `json:"order,omitempty"`
	// Selector chooses the endpoints the policy applies to ("" = all()).
	Selector string `json:"selector,omitempty"`
	// Types: the directions the policy applies in (Ingress, Egress). When
	// empty: Ingress, plus Egress when there are egress rules, and Egress
	// alone when there are only egress rules (as Calico).
	Types   []string `json:"types,omitempty"`
	Ingress []Rule   `json:"ingress,omitempty"`
	Egress  []Rule   `json:"egress,omitempty"`
}

// NetworkPolicy is Calico's NetworkPolicy. Calico scopes it to a
// Kubernetes namespace; Docker has none, so here it selects endpoints like a
// GlobalNetworkPolicy does. The two kinds are kept apart so that calicoctl
// documents round-trip, and are evaluated together, by order.
type NetworkPolicy struct {
	Name string `json:"name"`
	PolicySpec
}

// GlobalNetworkPolicy is Calico's GlobalNetworkPolicy.
type GlobalNetworkPolicy struct {
	Name string `json:"name"`
	PolicySpec
}

// ProfileSpec is a Profile's spec: rules that apply to the endpoints that
// name the profile, after all policies, and labels those endpoints inherit.
type ProfileSpec struct {
	Ingress []Rule `json:"ingress,omitempty"`
	Egress  []Rule `json:"egress,omitempty"`
	// LabelsToApply are added to every endpoint that has this profile (the
	// endpoint's own labels win on a conflict).
	LabelsToApply map[string]string `json:"labelsToApply,omitempty"`
}

// Profile is Calico's Profile. Every calico network has one.
type Profile struct {
	Name string `json:"name"`
	ProfileSpec
}

// Normalize canonicalises spellings: actions and types in Calico's case,
// protocol names as Calico prints them (TCP, ICMPv6), nets masked.
func (s *PolicySpec) Normalize() {
	for i, t := range s.Types {
		for _, c := range []string{TypeIngress, TypeEgress} {
			if strings.EqualFold(strings.TrimSpace(t), c) {
				s.Types[i] = c
			}
		}
	}
	normalizeRules(s.Ingress)
	normalizeRules(s.Egress)
}

// Normalize canonicalises spellings, as PolicySpec.Normalize does.
func (s *ProfileSpec) Normalize() {
	normalizeRules(s.Ingress)
	normalizeRules(s.Egress)
}

// Normalize canonicalises spellings in the spec.
func (p *NetworkPolicy) Normalize() { p.PolicySpec.Normalize() }

// Normalize canonicalises spellings in the spec.
func (p *GlobalNetworkPolicy) Normalize() { p.PolicySpec.Normalize() }

// Normalize canonicalises spellings in the spec.
func (p *Profile) Normalize() { p.ProfileSpec.Normalize() }

func normalizeRules(rules []Rule) {
	for i := range rules {
		r := &rules[i]
		for _, a := range actions {
			if strings.EqualFold(strings.TrimSpace(string(r.Action)), string(a)) {
				r.Action = a
			}
		}
		if r.Protocol != "" {
			r.Protocol = r.Protocol.canonical()
		}
		if r.NotProtocol != "" {
			r.NotProtocol = r.NotProtocol.canonical()
		}
		for _, e := range []*EntityRule{&r.Source, &r.Destination} {
			normalizeNets(e.Nets)
			normalizeNets(e.NotNets)
		}
	}
}

func normalizeNets(nets []string) {
	for i, n := range nets {
		if p, err := ParseRuleNet(n); err == nil {
			nets[i] = p.String()
		}
	}
}

// ParseRuleNet parses a CIDR or a bare address (a /32 or /128), masked.
func ParseRuleNet(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Zone() == "" && !p.Addr().Is4In6() {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" && !a.Is4In6() {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8, fd00::/64) or an address", s)
}

var (
	policyNameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	profileNameRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelPrefixRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	labelValueRE  = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
)

func validatePolicyName(name string) error {
	if name == "" {
		return fmt.Errorf("metadata.name: a policy needs a name")
	}
	if len(name) > 253 || !policyNameRE.MatchString(name) {
		return fmt.Errorf("metadata.name %q: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters", name)
	}
	return nil
}

// Validate checks the policy on its own. Errors name the field
// (spec.ingress[0].source.ports[1]) and say what is allowed.
func (p *NetworkPolicy) Validate() error {
	if err := validatePolicyName(p.Name); err != nil {
		return err
	}
	return p.PolicySpec.Validate()
}

// Validate checks the policy on its own, as NetworkPolicy.Validate does.
func (p *GlobalNetworkPolicy) Validate() error {
	if err := validatePolicyName(p.Name); err != nil {
		return err
	}
	return p.PolicySpec.Validate()
}

// Validate checks the profile on its own.
func (p *Profile) Validate() error {
	if p.Name == "" {
		return fmt.Errorf("metadata.name: a profile needs a name")
	}
	if len(p.Name) > 253 || !profileNameRE.MatchString(p.Name) {
		return fmt.Errorf("metadata.name %q: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 253 characters", p.Name)
	}
	return p.ProfileSpec.Validate()
}

// Validate checks a policy spec. Field paths start with "spec.".
func (s *PolicySpec) Validate() error {
	if s.Order != nil && (math.IsNaN(*s.Order) || math.IsInf(*s.Order, 0)) {
		return fmt.Errorf("spec.order: use a finite number")
	}
	if _, err := ParseSelector(s.Selector); err != nil {
		return fmt.Errorf("spec.selector: %w", err)
	}
	seen := map[string]bool{}
	for i, t := range s.Types {
		if t != TypeIngress && t != TypeEgress {
			return fmt.Errorf("spec.types[%d]: %q is not a policy type: use Ingress or Egress", i, t)
		}
		if seen[t] {
			return fmt.Errorf("spec.types[%d]: %s is listed twice", i, t)
		}
		seen[t] = true
	}
	if len(s.Types) > 0 {
		if len(s.Ingress) > 0 && !seen[TypeIngress] {
			return fmt.Errorf("spec.ingress: the policy has ingress rules but spec.types does not include Ingress: add it, or remove the rules")
		}
		if len(s.Egress) > 0 && !seen[TypeEgress] {
			return fmt.Errorf("spec.egress: the policy has egress rules but spec.types does not include Egress: add it, or remove the rules")
		}
	}
	return validateRules(s.Ingress, s.Egress)
}

// Validate checks a profile spec. Field paths start with "spec.".
func (s *ProfileSpec) Validate() error {
	if err := ValidateLabels("spec.labelsToApply", s.LabelsToApply); err != nil {
		return err
	}
	return validateRules(s.Ingress, s.Egress)
}

func validateRules(ingress, egress []Rule) error {
	for i := range ingress {
		if err := ingress[i].validate(fmt.Sprintf("spec.ingress[%d]", i)); err != nil {
			return err
		}
	}
	for i := range egress {
		if err := egress[i].validate(fmt.Sprintf("spec.egress[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks one rule; path names it in messages ("spec.ingress[0]").
func (r *Rule) Validate(path string) error { return r.validate(path) }

func (r *Rule) validate(path string) error {
	if r.Action == "" {
		return fmt.Errorf("%s.action: a rule needs an action: Allow, Deny, Pass or Log", path)
	}
	ok := false
	for _, a := range actions {
		ok = ok || r.Action == a
	}
	if !ok {
		return fmt.Errorf("%s.action: %q is not an action: use Allow, Deny, Pass or Log", path, string(r.Action))
	}
	var proto uint8
	if r.Protocol != "" {
		n, err := r.Protocol.Number()
		if err != nil {
			return fmt.Errorf("%s.protocol: %w", path, err)
		}
		proto = n
	}
	if r.NotProtocol != "" {
		if _, err := r.NotProtocol.Number(); err != nil {
			return fmt.Errorf("%s.notProtocol: %w", path, err)
		}
	}
	family := 0
	for _, side := range []struct {
		name string
		e    *EntityRule
	}{{"source", &r.Source}, {"destination", &r.Destination}} {
		p := path + "." + side.name
		for _, f := range []struct {
			name string
			nets []string
		}{{"nets", side.e.Nets}, {"notNets", side.e.NotNets}} {
			for i, n := range f.nets {
				pfx, err := ParseRuleNet(n)
				if err != nil {
					return fmt.Errorf("%s.%s[%d]: %w", p, f.name, i, err)
				}
				fam := 4
				if pfx.Addr().Is6() {
					fam = 6
				}
				if family != 0 && family != fam {
					return fmt.Errorf("%s.%s[%d]: %s mixes IPv4 and IPv6 in one rule: split it into two rules", p, f.name, i, n)
				}
				family = fam
			}
		}
		if _, err := ParseSelector(side.e.Selector); err != nil {
			return fmt.Errorf("%s.selector: %w", p, err)
		}
		if _, err := ParseSelector(side.e.NotSelector); err != nil {
			return fmt.Errorf("%s.notSelector: %w", p, err)
		}
		for _, f := range []struct {
			name  string
			ports []Port
		}{{"ports", side.e.Ports}, {"notPorts", side.e.NotPorts}} {
			for i, port := range f.ports {
				if _, err := port.Range(); err != nil {
					return fmt.Errorf("%s.%s[%d]: %w", p, f.name, i, err)
				}
			}
			if len(f.ports) > 0 && !protoHasPorts(proto) {
				return fmt.Errorf("%s.%s: ports need protocol TCP, UDP or SCTP in the same rule", p, f.name)
			}
		}
	}
	if proto == ProtoICMP && family == 6 {
		return fmt.Errorf("%s.protocol: ICMP is IPv4 but the rule's nets are IPv6: use ICMPv6", path)
	}
	if proto == ProtoICMPv6 && family == 4 {
		return fmt.Errorf("%s.protocol: ICMPv6 is IPv6 but the rule's nets are IPv4: use ICMP", path)
	}
	return nil
}

// ValidateLabels checks label keys and values as Calico does: a key is an
// optional DNS-subdomain prefix and '/', then a name of at most 63 letters,
// digits, '-', '_' or '.'; a value is at most 63 of the same, or empty.
func ValidateLabels(path string, labels map[string]string) error {
	for k, v := range labels {
		name := k
		if pre, n, ok := strings.Cut(k, "/"); ok {
			if len(pre) > 253 || !labelPrefixRE.MatchString(pre) {
				return fmt.Errorf("%s: label key %q: the prefix before '/' must be a DNS subdomain (lower-case letters, digits, '-' and '.')", path, k)
			}
			name = n
		}
		if len(name) > 63 || !labelNameRE.MatchString(name) {
			return fmt.Errorf("%s: label key %q: use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", path, k)
		}
		if len(v) > 63 || !labelValueRE.MatchString(v) {
			return fmt.Errorf("%s: label %s=%q: a value is empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", path, k, v)
		}
	}
	return nil
}

// EffectiveTypes are the directions the policy applies in, with Calico's
// defaults when Types is empty.
func (s *PolicySpec) EffectiveTypes() (ingress, egress bool) {
	if len(s.Types) == 0 {
		egress = len(s.Egress) > 0
		ingress = len(s.Ingress) > 0 || !egress
		return ingress, egress
	}
	for _, t := range s.Types {
		switch t {
		case TypeIngress:
			ingress = true
		case TypeEgress:
			egress = true
		}
	}
	return ingress, egress
}
