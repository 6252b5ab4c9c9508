package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// DesiredState is what the kernel of one host should enforce: its local
// endpoints, the chains they use and the sets those chains look up. It is
// plain data, computed by Compute and applied by dataplane/nftpolicy.
//
// Semantics the data plane implements (and the Evaluator defines):
//   - established/related packets are accepted, invalid ones dropped;
//   - packets the host itself sends to an endpoint are accepted;
//   - for each endpoint and direction, the Policies chains are jumped in
//     order: a rule's Allow accepts in this direction, Deny drops, Log logs
//     and goes on, Pass leaves the policies for the profiles; when every
//     policy chain returns without a verdict the packet is dropped (only
//     when Policies is not empty);
//   - then the Profiles chains are jumped in order (Pass leaves a profile
//     for the next); when none accepts the packet is dropped.
//
// A packet between two local endpoints must be accepted by the sender's
// egress and the receiver's ingress.
type DesiredState struct {
	Endpoints []LocalEndpoint // sorted by Iface
	Chains    []Chain         // sorted by Name
	Sets      []Set           // sorted by Name
}

// LocalEndpoint is an endpoint on this host.
type LocalEndpoint struct {
	// Iface is the host side of the endpoint's veth (cali…): packets from
	// the endpoint arrive on it (its egress), packets to it leave on it (its
	// ingress).
	Iface string
	// IPs are the addresses the endpoint may send from (anti-spoofing).
	IPs     []netip.Addr
	Ingress EndpointChains
	Egress  EndpointChains
	// Name is for messages only.
	Name string
}

// EndpointChains lists the chains an endpoint's packets go through in one
// direction.
type EndpointChains struct {
	// Policies are the chains of the policies that select the endpoint and
	// apply in this direction, in evaluation order.
	Policies []string
	// Profiles are the chains of the endpoint's profiles, in order.
	Profiles []string
}

// Chain is the rendered rules of one policy or profile in one direction.
type Chain struct {
	Name    string
	Comment string // "GlobalNetworkPolicy deny-icmp ingress"
	Rules   []RenderedRule
}

// HasPass reports whether a rule of the chain can Pass.
func (c *Chain) HasPass() bool {
	return slices.ContainsFunc(c.Rules, func(r RenderedRule) bool { return r.Action == api.Pass })
}

// SetType is the kind of elements a set holds.
type SetType int

// Set types.
const (
	// SetIPv4Addrs and SetIPv6Addrs hold endpoint addresses (selector sets).
	SetIPv4Addrs SetType = iota + 1
	SetIPv6Addrs
	// SetIPv4Nets and SetIPv6Nets hold CIDRs (a rule's nets).
	SetIPv4Nets
	SetIPv6Nets
	// SetPorts holds port ranges.
	SetPorts
)

func (t SetType) String() string {
	switch t {
	case SetIPv4Addrs:
		return "ipv4_addr"
	case SetIPv6Addrs:
		return "ipv6_addr"
	case SetIPv4Nets:
		return "ipv4_addr interval"
	case SetIPv6Nets:
		return "ipv6_addr interval"
	case SetPorts:
		return "inet_service interval"
	}
	return fmt.Sprintf("SetType(%d)", int(t))
}

// Set is a named set rules look up. Selector sets are named after a hash of
// the canonical selector, so that the set of an unchanged selector keeps
// its name and an endpoint joining it is one element more; net and port
// sets are named after their contents and never change.
type Set struct {
	Name    string
	Type    SetType
	Comment string // the canonical selector, for selector sets
	Addrs   []netip.Addr
	Nets    []netip.Prefix
	Ports   []api.PortRange
}

// Field is what a Match looks at.
type Field int

// Match fields.
const (
	FieldProto Field = iota + 1
	FieldSrcAddr
	FieldDstAddr
	FieldSrcPort
	FieldDstPort
)

// Match is one condition of a rendered rule. Exactly one of Set, Net,
// Proto (for FieldProto) or Ports is meaningful.
type Match struct {
	Field  Field
	Negate bool
	Set    string       // a lookup in this set
	Net    netip.Prefix // one CIDR
	Proto  uint8
	Ports  api.PortRange // one port or range
}

// RenderedRule is a rule in the data plane's terms: every match must hold;
// then the action (Allow, Deny, Log or Pass).
type RenderedRule struct {
	// Family restricts the rule to IPv4 (4) or IPv6 (6); 0 is both.
	Family    int
	Matches   []Match
	Action    api.Action
	LogPrefix string // for Log
	Comment   string // which rule of which resource
}

// String renders the rule in nft syntax; a Pass is written "pass" (the data
// plane sets a mark and returns).
func (r RenderedRule) String() string {
	var parts []string
	ip := "ip"
	switch r.Family {
	case 4:
		parts = append(parts, "meta nfproto ipv4")
	case 6:
		parts = append(parts, "meta nfproto ipv6")
		ip = "ip6"
	}
	for _, m := range r.Matches {
		op := ""
		if m.Negate {
			op = "!= "
		}
		var val string
		switch {
		case m.Set != "":
			val = "@" + m.Set
		case m.Field == FieldProto:
			val = api.ProtocolName(m.Proto)
		case m.Field == FieldSrcAddr || m.Field == FieldDstAddr:
			val = m.Net.String()
		default:
			val = m.Ports.String()
		}
		var what string
		switch m.Field {
		case FieldProto:
			what = "meta l4proto"
		case FieldSrcAddr:
			what = ip + " saddr"
		case FieldDstAddr:
			what = ip + " daddr"
		case FieldSrcPort:
			what = "th sport"
		case FieldDstPort:
			what = "th dport"
		}
		parts = append(parts, what+" "+op+val)
	}
	switch r.Action {
	case api.Allow:
		parts = append(parts, "accept")
	case api.Deny:
		parts = append(parts, "drop")
	case api.Log:
		parts = append(parts, fmt.Sprintf("log prefix %q", r.LogPrefix))
	case api.Pass:
		parts = append(parts, "pass")
	}
	return strings.Join(parts, " ")
}

// String renders the whole state, deterministically (golden files).
func (s *DesiredState) String() string {
	var b strings.Builder
	for _, ep := range s.Endpoints {
		ips := make([]string, len(ep.IPs))
		for i, a := range ep.IPs {
			ips[i] = a.String()
		}
		fmt.Fprintf(&b, "endpoint %s (%s) ips [%s]\n", ep.Iface, ep.Name, strings.Join(ips, " "))
		for _, d := range []struct {
			name string
			c    EndpointChains
		}{{"ingress", ep.Ingress}, {"egress", ep.Egress}} {
			fmt.Fprintf(&b, "  %s: policies [%s] profiles [%s]\n", d.name, strings.Join(d.c.Policies, " "), strings.Join(d.c.Profiles, " "))
		}
	}
	for _, c := range s.Chains {
		fmt.Fprintf(&b, "chain %s  # %s\n", c.Name, c.Comment)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "  %s  # %s\n", r, r.Comment)
		}
	}
	for _, set := range s.Sets {
		fmt.Fprintf(&b, "set %s %s", set.Name, set.Type)
		if set.Comment != "" {
			fmt.Fprintf(&b, "  # %s", set.Comment)
		}
		b.WriteString("\n  {")
		var elems []string
		for _, a := range set.Addrs {
			elems = append(elems, a.String())
		}
		for _, n := range set.Nets {
			elems = append(elems, n.String())
		}
		for _, p := range set.Ports {
			elems = append(elems, p.String())
		}
		b.WriteString(strings.Join(elems, ", "))
		b.WriteString("}\n")
	}
	return b.String()
}

// Chain and set name prefixes. Chain names are readable; the data plane
// adds its own base and dispatch chains, whose names never start with these.
const (
	gnpChainPrefix     = "gnp"
	npChainPrefix      = "np"
	profileChainPrefix = "pro"
)

// maxChainName keeps chain names well below the kernel's 256 bytes.
const maxChainName = 200

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func chainName(prefix string, dir Direction, name string) string {
	d := "i"
	if dir == Egress {
		d = "e"
	}
	n := prefix + "-" + d + "-" + name
	if len(n) > maxChainName {
		n = n[:maxChainName-17] + "-" + shortHash(name)
	}
	return n
}

// PolicyChainName is the chain of a policy ("GlobalNetworkPolicy" or
// "NetworkPolicy") in one direction.
func PolicyChainName(kind, name string, dir Direction) string {
	if kind == "NetworkPolicy" {
		return chainName(npChainPrefix, dir, name)
	}
	return chainName(gnpChainPrefix, dir, name)
}

// ProfileChainName is the chain of a profile in one direction.
func ProfileChainName(name string, dir Direction) string {
	return chainName(profileChainPrefix, dir, name)
}

// SelectorSetName is the set of addresses of the endpoints a selector
// selects, for one IP family (4 or 6): a hash of the canonical selector, so
// that equal selectors share a set.
func SelectorSetName(sel api.Selector, fam int) string {
	return fmt.Sprintf("s%d-%s", fam, shortHash(sel.String()))
}

// setRegistry collects the sets the rendered chains use.
type setRegistry struct {
	e         *Evaluator
	sets      map[string]*Set
	selectors map[string]selectorSet // the selector sets among them, by name
}

// selectorSet is what a selector set holds: the addresses of one family of
// the endpoints sel selects.
type selectorSet struct {
	sel api.Selector
	fam int
}

func (r *setRegistry) selector(sel api.Selector, fam int) string {
	name := SelectorSetName(sel, fam)
	if _, ok := r.sets[name]; ok {
		return name
	}
	r.selectors[name] = selectorSet{sel: sel, fam: fam}
	s := &Set{Name: name, Type: SetIPv4Addrs, Comment: sel.String()}
	if fam == 6 {
		s.Type = SetIPv6Addrs
	}
	for a := range r.e.members(sel) {
		if family(a) == fam {
			s.Addrs = append(s.Addrs, a)
		}
	}
	slices.SortFunc(s.Addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	r.sets[name] = s
	return name
}

func (r *setRegistry) nets(nets []netip.Prefix, fam int) string {
	sorted := slices.Clone(nets)
	slices.SortFunc(sorted, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	sorted = slices.Compact(sorted)
	var key []string
	for _, n := range sorted {
		key = append(key, n.String())
	}
	name := fmt.Sprintf("n%d-%s", fam, shortHash(strings.Join(key, ",")))
	if _, ok := r.sets[name]; !ok {
		t := SetIPv4Nets
		if fam == 6 {
			t = SetIPv6Nets
		}
		r.sets[name] = &Set{Name: name, Type: t, Nets: sorted}
	}
	return name
}

func (r *setRegistry) ports(ports []api.PortRange) string {
	sorted := slices.Clone(ports)
	slices.SortFunc(sorted, func(a, b api.PortRange) int {
		if a.Min != b.Min {
			return int(a.Min) - int(b.Min)
		}
		return int(a.Max) - int(b.Max)
	})
	sorted = slices.Compact(sorted)
	var key []string
	for _, p := range sorted {
		key = append(key, p.String())
	}
	name := "pt-" + shortHash(strings.Join(key, ","))
	if _, ok := r.sets[name]; !ok {
		r.sets[name] = &Set{Name: name, Type: SetPorts, Ports: sorted}
	}
	return name
}

// logPrefix is what the kernel log shows for a Log rule (at most 127 bytes).
func logPrefix(where string) string {
	p := "calico " + strings.ReplaceAll(where, `"`, "") + ": "
	if len(p) > 127 {
		p = p[:125] + ": "
	}
	return p
}

// render turns one rule into one rendered rule, or two (IPv4 and IPv6) when
// it looks addresses up in selector sets and is not tied to one family.
func (r *setRegistry) render(cr *compiledRule) []RenderedRule {
	fams := []int{cr.family}
	if cr.family == 0 && (cr.src.hasAddressMatches || cr.dst.hasAddressMatches) {
		fams = []int{4, 6}
	}
	var out []RenderedRule
	for _, fam := range fams {
		rr := RenderedRule{Family: fam, Action: cr.action, Comment: cr.where}
		if cr.action == api.Log {
			rr.LogPrefix = logPrefix(cr.where)
		}
		if cr.proto >= 0 {
			rr.Matches = append(rr.Matches, Match{Field: FieldProto, Proto: uint8(cr.proto)})
		}
		if cr.notProto >= 0 {
			rr.Matches = append(rr.Matches, Match{Field: FieldProto, Negate: true, Proto: uint8(cr.notProto)})
		}
		for _, side := range []struct {
			c           *compiledEntity
			addr, portF Field
		}{{&cr.src, FieldSrcAddr, FieldSrcPort}, {&cr.dst, FieldDstAddr, FieldDstPort}} {
			c := side.c
			for _, n := range []struct {
				nets   []netip.Prefix
				negate bool
			}{{c.nets, false}, {c.notNets, true}} {
				switch len(n.nets) {
				case 0:
				case 1:
					rr.Matches = append(rr.Matches, Match{Field: side.addr, Negate: n.negate, Net: n.nets[0]})
				default:
					rr.Matches = append(rr.Matches, Match{Field: side.addr, Negate: n.negate, Set: r.nets(n.nets, fam)})
				}
			}
			if c.sel != nil {
				rr.Matches = append(rr.Matches, Match{Field: side.addr, Set: r.selector(c.sel, fam)})
			}
			if c.notSel != nil {
				rr.Matches = append(rr.Matches, Match{Field: side.addr, Negate: true, Set: r.selector(c.notSel, fam)})
			}
			for _, p := range []struct {
				ports  []api.PortRange
				negate bool
			}{{c.ports, false}, {c.notPorts, true}} {
				switch len(p.ports) {
				case 0:
				case 1:
					rr.Matches = append(rr.Matches, Match{Field: side.portF, Negate: p.negate, Ports: p.ports[0]})
				default:
					rr.Matches = append(rr.Matches, Match{Field: side.portF, Negate: p.negate, Set: r.ports(p.ports)})
				}
			}
		}
		out = append(out, rr)
	}
	return out
}

func (r *setRegistry) chain(name, comment string, rules []compiledRule) Chain {
	c := Chain{Name: name, Comment: comment}
	for i := range rules {
		c.Rules = append(c.Rules, r.render(&rules[i])...)
	}
	return c
}

// Compute works out what node's kernel should enforce under m: a chain for
// every policy and profile a local endpoint uses (in the directions it
// uses them), the selector sets those chains look up (with the addresses of
// matching endpoints on every node), and per local endpoint (Node == node,
// Iface set) the ordered chains of each direction. An invalid resource is
// an error: the caller keeps enforcing the last good state.
func Compute(m *Model, node string) (*DesiredState, error) {
	e, err := NewEvaluator(m)
	if err != nil {
		return nil, err
	}
	return e.Compute(node)
}

// Compute is Compute for the evaluator's model.
func (e *Evaluator) Compute(node string) (*DesiredState, error) {
	ds, _, err := e.compute(node)
	return ds, err
}

// compute is Compute, also returning the registry of the sets it made.
func (e *Evaluator) compute(node string) (*DesiredState, *setRegistry, error) {
	reg := &setRegistry{e: e, sets: map[string]*Set{}, selectors: map[string]selectorSet{}}
	chains := map[string]Chain{}
	use := func(name string, comment func() string, rules []compiledRule) {
		if _, ok := chains[name]; !ok {
			chains[name] = reg.chain(name, comment(), rules)
		}
	}
	ds := &DesiredState{}
	ifaces := map[string]string{}
	for _, info := range e.eps {
		ep := info.ep
		if ep.Node != node {
			continue
		}
		if ep.Iface == "" {
			return nil, nil, fmt.Errorf("endpoint %q on node %s has no interface name", ep.Name, node)
		}
		if other, dup := ifaces[ep.Iface]; dup {
			return nil, nil, fmt.Errorf("endpoints %q and %q both use interface %s", other, ep.Name, ep.Iface)
		}
		ifaces[ep.Iface] = ep.Name
		ds.Endpoints = append(ds.Endpoints, e.localEndpoint(info, use))
	}
	sort.Slice(ds.Endpoints, func(i, j int) bool { return ds.Endpoints[i].Iface < ds.Endpoints[j].Iface })
	for _, c := range chains {
		ds.Chains = append(ds.Chains, c)
	}
	sort.Slice(ds.Chains, func(i, j int) bool { return ds.Chains[i].Name < ds.Chains[j].Name })
	for _, s := range reg.sets {
		ds.Sets = append(ds.Sets, *s)
	}
	sort.Slice(ds.Sets, func(i, j int) bool { return ds.Sets[i].Name < ds.Sets[j].Name })
	return ds, reg, nil
}

// localEndpoint is what the kernel enforces for one local endpoint: its
// addresses and, unless held, the chains of each direction; use is told of
// every policy and profile chain it goes through (nil: nobody is).
func (e *Evaluator) localEndpoint(info epInfo, use func(name string, comment func() string, rules []compiledRule)) LocalEndpoint {
	ep := info.ep
	le := LocalEndpoint{Iface: ep.Iface, Name: ep.Name, IPs: slices.Clone(ep.IPs)}
	for i, a := range le.IPs {
		le.IPs[i] = a.Unmap()
	}
	slices.SortFunc(le.IPs, func(a, b netip.Addr) int { return a.Compare(b) })
	le.IPs = slices.Compact(le.IPs)
	if ep.Held { // no chains: the data plane drops all it sends and is sent
		return le
	}
	if use == nil {
		use = func(string, func() string, []compiledRule) {}
	}
	for _, dir := range []Direction{Ingress, Egress} {
		var ec EndpointChains
		for _, p := range e.applicable(info.labels, dir) {
			name := PolicyChainName(p.kind, p.name, dir)
			use(name, func() string { return fmt.Sprintf("%s %s %s", p.kind, p.name, dir) }, p.rules[dir])
			ec.Policies = append(ec.Policies, name)
		}
		for _, pname := range ep.Profiles {
			p := e.profiles[pname]
			if p == nil {
				continue // an unknown profile allows nothing
			}
			name := ProfileChainName(pname, dir)
			if slices.Contains(ec.Profiles, name) {
				continue
			}
			use(name, func() string { return fmt.Sprintf("Profile %s %s", pname, dir) }, p.rules[dir])
			ec.Profiles = append(ec.Profiles, name)
		}
		if dir == Ingress {
			le.Ingress = ec
		} else {
			le.Egress = ec
		}
	}
	return le
}

// DefaultProfile is the profile of a calico network, as issue #5 asks: its
// endpoints get the label key=value (labelsToApply), accept traffic from
// endpoints carrying the same label (on any host) and, when open, from
// anywhere; they may send anywhere.
func DefaultProfile(name, key, value string, open bool) api.Profile {
	in := api.Rule{Action: api.Allow, Source: api.EntityRule{Selector: fmt.Sprintf("%s == '%s'", key, value)}}
	if open {
		in = api.Rule{Action: api.Allow}
	}
	return api.Profile{Name: name, ProfileSpec: api.ProfileSpec{
		Ingress:       []api.Rule{in},
		Egress:        []api.Rule{{Action: api.Allow}},
		LabelsToApply: map[string]string{key: value},
	}}
}
