// Package policy evaluates the policy resources of package api for the
// endpoints of a host: the model (profiles, policies, endpoints and their
// labels), a reference evaluator, and the desired state one host enforces.
// It never touches the kernel.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// Direction is the way a packet crosses an endpoint: Ingress is towards it,
// Egress is away from it.
type Direction int

// Directions.
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Endpoint is a workload endpoint anywhere in the cluster, as policy sees
// it. Every endpoint's addresses feed the selector sets; only endpoints on
// the node being computed get chains.
type Endpoint struct {
	// Name identifies the endpoint in messages (e.g. the endpoint ID).
	Name string
	// Key identifies the endpoint to a Tracker (its record's key); Name
	// when empty.
	Key string
	// Node is the host the endpoint lives on.
	Node string
	// Iface is the host-side interface (cali…); needed for local endpoints.
	Iface string
	// IPs are the endpoint's addresses (IPv4 and IPv6).
	IPs []netip.Addr
	// Labels are the endpoint's own labels (network and container labels).
	Labels map[string]string
	// Profiles are applied in this order after all policies.
	Profiles []string
	// Held marks an endpoint whose labels are not known yet: until they
	// are it sends and accepts nothing (it cannot be given more than its
	// final policy allows), and it is in no selector's set.
	Held bool
}

// Model is everything policy depends on: the resources and every endpoint
// in the cluster.
type Model struct {
	Profiles              []api.Profile
	NetworkPolicies       []api.NetworkPolicy
	GlobalNetworkPolicies []api.GlobalNetworkPolicy
	Endpoints             []Endpoint
}

// Packet is the first packet of a connection as seen at one endpoint.
type Packet struct {
	// Dir is the direction relative to the endpoint being decided.
	Dir      Direction
	Proto    uint8
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	// FromHost marks a packet the host itself sends to one of its own
	// endpoints (health checks): always allowed.
	FromHost bool
	// Established marks a packet of a connection already accepted (replies
	// included): always allowed, connections are stateful.
	Established bool
}

// Verdict is the outcome of Decide.
type Verdict struct {
	Allow bool
	// Reason names what decided: a rule, the default deny of selected
	// endpoints, or the end of the profiles.
	Reason string
	// Logged lists the Log rules the packet matched on the way.
	Logged []string
}

func (v Verdict) String() string {
	if v.Allow {
		return "allow (" + v.Reason + ")"
	}
	return "deny (" + v.Reason + ")"
}

type compiledEntity struct {
	nets, notNets     []netip.Prefix
	sel, notSel       api.Selector
	ports, notPorts   []api.PortRange
	hasAddressMatches bool
}

type compiledRule struct {
	action   api.Action
	family   int // 0 (both), 4 or 6
	proto    int // -1: any
	notProto int // -1: none
	src, dst compiledEntity
	where    string // `GlobalNetworkPolicy "x" ingress[0]`
}

type compiledPolicy struct {
	kind     string
	name     string
	order    *float64
	selector api.Selector
	applies  [2]bool
	rules    [2][]compiledRule
}

func (p *compiledPolicy) String() string { return fmt.Sprintf("%s %q", p.kind, p.name) }

type compiledProfile struct {
	name   string
	rules  [2][]compiledRule
	labels map[string]string
}

// Evaluator answers policy questions about one Model. It is the reference
// model of what the kernel enforces.
type Evaluator struct {
	policies []*compiledPolicy // in evaluation order
	profiles map[string]*compiledProfile
	eps      []epInfo
	sets     map[string]map[netip.Addr]bool // canonical selector -> member addresses
}

type epInfo struct {
	ep     *Endpoint
	labels map[string]string
}

// NewEvaluator validates and compiles m. Every invalid resource is reported,
// by kind and name.
func NewEvaluator(m *Model) (*Evaluator, error) {
	e := &Evaluator{profiles: map[string]*compiledProfile{}, sets: map[string]map[netip.Addr]bool{}}
	var errs []error
	seen := map[string]bool{}
	addPolicy := func(kind, name string, spec *api.PolicySpec, validate func() error) {
		if err := validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", kind, name, err))
			return
		}
		if seen[kind+"/"+name] {
			errs = append(errs, fmt.Errorf("%s %q is given twice", kind, name))
			return
		}
		seen[kind+"/"+name] = true
		cp := &compiledPolicy{kind: kind, name: name, order: spec.Order, selector: api.MustParseSelector(spec.Selector)}
		cp.applies[Ingress], cp.applies[Egress] = spec.EffectiveTypes()
		cp.rules[Ingress] = compileRules(spec.Ingress, fmt.Sprintf("%s %q ingress", kind, name))
		cp.rules[Egress] = compileRules(spec.Egress, fmt.Sprintf("%s %q egress", kind, name))
		e.policies = append(e.policies, cp)
	}
	for i := range m.NetworkPolicies {
		p := &m.NetworkPolicies[i]
		addPolicy("NetworkPolicy", p.Name, &p.PolicySpec, p.Validate)
	}
	for i := range m.GlobalNetworkPolicies {
		p := &m.GlobalNetworkPolicies[i]
		addPolicy("GlobalNetworkPolicy", p.Name, &p.PolicySpec, p.Validate)
	}
	sort.SliceStable(e.policies, func(i, j int) bool { return policyLess(e.policies[i], e.policies[j]) })
	for i := range m.Profiles {
		p := &m.Profiles[i]
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("Profile %q: %w", p.Name, err))
			continue
		}
		if e.profiles[p.Name] != nil {
			errs = append(errs, fmt.Errorf("Profile %q is given twice", p.Name))
			continue
		}
		cp := &compiledProfile{name: p.Name, labels: p.LabelsToApply}
		cp.rules[Ingress] = compileRules(p.Ingress, fmt.Sprintf("Profile %q ingress", p.Name))
		cp.rules[Egress] = compileRules(p.Egress, fmt.Sprintf("Profile %q egress", p.Name))
		e.profiles[p.Name] = cp
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for i := range m.Endpoints {
		ep := &m.Endpoints[i]
		e.eps = append(e.eps, epInfo{ep: ep, labels: e.EffectiveLabels(ep)})
	}
	return e, nil
}

// policyLess orders policies as Calico does: by order (none = last), then by
// name; the kind breaks a tie between a NetworkPolicy and a
// GlobalNetworkPolicy of the same name (GlobalNetworkPolicy first).
func policyLess(a, b *compiledPolicy) bool {
	switch {
	case a.order != nil && b.order == nil:
		return true
	case a.order == nil && b.order != nil:
		return false
	case a.order != nil && *a.order != *b.order:
		return *a.order < *b.order
	case a.name != b.name:
		return a.name < b.name
	}
	return a.kind < b.kind
}

func compileRules(rules []api.Rule, where string) []compiledRule {
	out := make([]compiledRule, 0, len(rules))
	for i := range rules {
		r := &rules[i]
		cr := compiledRule{action: r.Action, proto: -1, notProto: -1, where: fmt.Sprintf("%s[%d]", where, i)}
		if r.Protocol != "" {
			n, _ := r.Protocol.Number()
			cr.proto = int(n)
			switch n {
			case api.ProtoICMP:
				cr.family = 4
			case api.ProtoICMPv6:
				cr.family = 6
			}
		}
		if r.NotProtocol != "" {
			n, _ := r.NotProtocol.Number()
			cr.notProto = int(n)
		}
		for _, side := range []struct {
			in  *api.EntityRule
			out *compiledEntity
		}{{&r.Source, &cr.src}, {&r.Destination, &cr.dst}} {
			for _, n := range side.in.Nets {
				p, _ := api.ParseRuleNet(n)
				side.out.nets = append(side.out.nets, p)
			}
			for _, n := range side.in.NotNets {
				p, _ := api.ParseRuleNet(n)
				side.out.notNets = append(side.out.notNets, p)
			}
			for _, p := range append(slices.Clone(side.out.nets), side.out.notNets...) {
				cr.family = 4
				if p.Addr().Is6() {
					cr.family = 6
				}
			}
			if side.in.Selector != "" {
				side.out.sel = api.MustParseSelector(side.in.Selector)
			}
			if side.in.NotSelector != "" {
				side.out.notSel = api.MustParseSelector(side.in.NotSelector)
			}
			for _, p := range side.in.Ports {
				pr, _ := p.Range()
				side.out.ports = append(side.out.ports, pr)
			}
			for _, p := range side.in.NotPorts {
				pr, _ := p.Range()
				side.out.notPorts = append(side.out.notPorts, pr)
			}
			side.out.hasAddressMatches = side.out.sel != nil || side.out.notSel != nil
		}
		out = append(out, cr)
	}
	return out
}

// EffectiveLabels are ep's labels with its profiles' labelsToApply beneath
// them (the endpoint's own labels win; a later profile beats an earlier one).
func (e *Evaluator) EffectiveLabels(ep *Endpoint) map[string]string {
	out := map[string]string{}
	done := map[string]bool{}
	for _, name := range ep.Profiles {
		if p := e.profiles[name]; p != nil && !done[name] {
			done[name] = true
			for k, v := range p.labels {
				out[k] = v
			}
		}
	}
	for k, v := range ep.Labels {
		out[k] = v
	}
	return out
}

// members returns the addresses of every endpoint that sel selects.
func (e *Evaluator) members(sel api.Selector) map[netip.Addr]bool {
	key := sel.String()
	if m, ok := e.sets[key]; ok {
		return m
	}
	m := map[netip.Addr]bool{}
	for _, info := range e.eps {
		if !info.ep.Held && sel.Matches(info.labels) {
			for _, a := range info.ep.IPs {
				m[a.Unmap()] = true
			}
		}
	}
	e.sets[key] = m
	return m
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

func (e *Evaluator) entityMatches(c *compiledEntity, addr netip.Addr, port uint16) bool {
	addr = addr.Unmap()
	if len(c.nets) > 0 && !slices.ContainsFunc(c.nets, func(p netip.Prefix) bool { return p.Contains(addr) }) {
		return false
	}
	if slices.ContainsFunc(c.notNets, func(p netip.Prefix) bool { return p.Contains(addr) }) {
		return false
	}
	if c.sel != nil && !e.members(c.sel)[addr] {
		return false
	}
	if c.notSel != nil && e.members(c.notSel)[addr] {
		return false
	}
	if len(c.ports) > 0 && !slices.ContainsFunc(c.ports, func(r api.PortRange) bool { return r.Contains(port) }) {
		return false
	}
	if slices.ContainsFunc(c.notPorts, func(r api.PortRange) bool { return r.Contains(port) }) {
		return false
	}
	return true
}

func (e *Evaluator) ruleMatches(r *compiledRule, pkt Packet) bool {
	if r.family != 0 && r.family != family(pkt.Src) {
		return false
	}
	if r.proto >= 0 && int(pkt.Proto) != r.proto {
		return false
	}
	if r.notProto >= 0 && int(pkt.Proto) == r.notProto {
		return false
	}
	return e.entityMatches(&r.src, pkt.Src, pkt.SrcPort) && e.entityMatches(&r.dst, pkt.Dst, pkt.DstPort)
}

// Policies returns the policies that apply to ep in direction dir, in
// evaluation order, as "Kind name".
func (e *Evaluator) Policies(ep *Endpoint, dir Direction) []string {
	var out []string
	for _, p := range e.applicable(e.EffectiveLabels(ep), dir) {
		out = append(out, p.kind+" "+p.name)
	}
	return out
}

func (e *Evaluator) applicable(labels map[string]string, dir Direction) []*compiledPolicy {
	var out []*compiledPolicy
	for _, p := range e.policies {
		if p.applies[dir] && p.selector.Matches(labels) {
			out = append(out, p)
		}
	}
	return out
}

// Decide says whether ep accepts pkt in direction pkt.Dir, as Calico
// documents: established connections and packets from the host are allowed;
// then the policies that select ep in that direction, in order (first Allow
// or Deny wins, Log goes on, Pass skips to the profiles); an endpoint
// selected by a policy and not allowed is denied; then its profiles in
// order; nothing allowed is denied.
func (e *Evaluator) Decide(ep *Endpoint, pkt Packet) Verdict {
	if pkt.Established {
		return Verdict{Allow: true, Reason: "established connection"}
	}
	if pkt.Dir == Ingress && pkt.FromHost {
		return Verdict{Allow: true, Reason: "from the host itself"}
	}
	if ep.Held {
		return Verdict{Reason: fmt.Sprintf("%s is held until its labels are known", ep.Name)}
	}
	var logged []string
	pols := e.applicable(e.EffectiveLabels(ep), pkt.Dir)
	if len(pols) > 0 {
		passed := false
	policies:
		for _, p := range pols {
			for i := range p.rules[pkt.Dir] {
				r := &p.rules[pkt.Dir][i]
				if !e.ruleMatches(r, pkt) {
					continue
				}
				switch r.action {
				case api.Allow:
					return Verdict{Allow: true, Reason: r.where + ": Allow", Logged: logged}
				case api.Deny:
					return Verdict{Reason: r.where + ": Deny", Logged: logged}
				case api.Log:
					logged = append(logged, r.where)
				case api.Pass:
					passed = true
					break policies
				}
			}
		}
		if !passed {
			names := make([]string, len(pols))
			for i, p := range pols {
				names[i] = p.String()
			}
			return Verdict{Reason: fmt.Sprintf("selected by %s in %s and no rule allowed", strings.Join(names, ", "), pkt.Dir), Logged: logged}
		}
	}
	done := map[string]bool{}
	for _, name := range ep.Profiles {
		p := e.profiles[name]
		if p == nil || done[name] {
			continue
		}
		done[name] = true
	rules:
		for i := range p.rules[pkt.Dir] {
			r := &p.rules[pkt.Dir][i]
			if !e.ruleMatches(r, pkt) {
				continue
			}
			switch r.action {
			case api.Allow:
				return Verdict{Allow: true, Reason: r.where + ": Allow", Logged: logged}
			case api.Deny:
				return Verdict{Reason: r.where + ": Deny", Logged: logged}
			case api.Log:
				logged = append(logged, r.where)
			case api.Pass:
				break rules
			}
		}
	}
	return Verdict{Reason: fmt.Sprintf("no profile allowed %s", pkt.Dir), Logged: logged}
}

// Path decides a new connection from src to dst: src's egress (when src is
// an endpoint) and dst's ingress (when dst is an endpoint) must both allow
// it. pkt.Dir is ignored. fromHost marks a packet the host sends to its own
// endpoint dst.
func (e *Evaluator) Path(src, dst *Endpoint, pkt Packet) Verdict {
	out := Verdict{Allow: true, Reason: "no endpoint involved"}
	var reasons []string
	if src != nil {
		pkt.Dir = Egress
		v := e.Decide(src, pkt)
		reasons = append(reasons, fmt.Sprintf("%s egress: %s", src.Name, v.Reason))
		out.Logged = append(out.Logged, v.Logged...)
		if !v.Allow {
			return Verdict{Reason: reasons[0], Logged: out.Logged}
		}
	}
	if dst != nil {
		pkt.Dir = Ingress
		v := e.Decide(dst, pkt)
		reasons = append(reasons, fmt.Sprintf("%s ingress: %s", dst.Name, v.Reason))
		out.Logged = append(out.Logged, v.Logged...)
		if !v.Allow {
			return Verdict{Reason: reasons[len(reasons)-1], Logged: out.Logged}
		}
	}
	if len(reasons) > 0 {
		out.Reason = strings.Join(reasons, "; ")
	}
	return out
}

// Decide is NewEvaluator(m) then Decide(ep, pkt).
func Decide(m *Model, ep *Endpoint, pkt Packet) (Verdict, error) {
	e, err := NewEvaluator(m)
	if err != nil {
		return Verdict{}, err
	}
	return e.Decide(ep, pkt), nil
}
