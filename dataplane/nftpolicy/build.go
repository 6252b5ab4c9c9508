package nftpolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

func nameHash(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:8])
}

var (
	typeIfAddr4 = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
	typeIfAddr6 = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIP6Addr)
)

// build turns the desired state into the table's wanted contents: the base
// chains, one chain per policy or profile, the per-endpoint dispatch (maps,
// address sets and the chains they jump to), then the policies' own sets.
func (e *Enforcer) build(ds *policy.DesiredState) (*state, error) {
	s := &state{tableExists: true, chains: map[string]*chain{}, sets: map[string]*set{}}
	prefix, m := e.cfg.IfacePrefix, marks{pass: e.cfg.PassMark, allow: e.cfg.AllowMark}
	s.addBaseChains(prefix, m.allow, e.cfg.AcceptedCTMark)
	canPass, err := s.addPolicyChains(ds, m)
	if err != nil {
		return nil, err
	}
	if err := s.addEndpoints(ds.Endpoints, prefix, m, canPass); err != nil {
		return nil, err
	}
	if err := s.addPolicySets(ds.Sets); err != nil {
		return nil, err
	}
	return s, nil
}

func nb() *builder { return &builder{} }

func (s *state) addChain(name string, hook *nftables.ChainHook, rules ...rule) {
	s.chains[name] = &chain{name: name, hook: hook, rules: rules}
}

func (s *state) newSet(name string, proto nftables.Set, size int) *set {
	proto.Name = name
	st := &set{proto: proto, elems: make(map[string]nftables.SetElement, size)}
	s.sets[name] = st
	return st
}

func (st *set) put(el nftables.SetElement) { st.elems[elemID(el)] = el }

// addBaseChains adds the hooked chains and the ones every endpoint passes
// through. Forwarded packets meet one base chain: a packet of a known
// connection is accepted by its first rule, so only a flow's first packet
// (and invalid ones) walks the endpoint chains; from-wl returns only when
// the sender's egress policy allows, and the packet then meets the
// receiver's ingress policy, if it goes to an endpoint.
func (s *state) addBaseChains(prefix string, allow, accepted uint32) {
	established := nb().ctState("established,related", expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED).
		add("accept", verdict(expr.VerdictAccept)).rule("connections are stateful: policy is for a flow's first packet")
	s.addChain(chainForward, nftables.ChainHookForward, established,
		nb().ifnamePrefix(true, prefix).add("jump "+chainFromWL, jump(chainFromWL)).rule("from endpoints: their egress policy"),
		nb().ifnamePrefix(false, prefix).add("jump "+chainToWL, jump(chainToWL)).rule("to endpoints: their ingress policy"))
	s.addChain(chainInput, nftables.ChainHookInput,
		nb().ifnamePrefix(true, prefix).add("jump "+chainWLToHost, jump(chainWLToHost)).rule("from endpoints to this host: their egress policy"))

	invalid := nb().ctState("invalid", expr.CtStateBitINVALID).add("drop", verdict(expr.VerdictDrop)).rule("not part of any valid connection")
	spoof4 := nb().nfproto(4).add("iifname . ip saddr != @"+setWLAddrs4,
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		lookup(setWLAddrs4, true)).add("drop", verdict(expr.VerdictDrop)).rule("an endpoint sends from its own addresses only")
	ll, _ := addrPayload(6, true)
	spoof6 := nb().nfproto(6).add("ip6 saddr != fe80::/10", append([]expr.Any{ll}, prefixMatch(netip.MustParsePrefix("fe80::/10"), true)...)...).
		add("iifname . ip6 saddr != @"+setWLAddrs6,
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			lookup(setWLAddrs6, true)).add("drop", verdict(expr.VerdictDrop)).rule("an endpoint sends from its own addresses only")
	allowed := nb().add(fmt.Sprintf("meta mark & 0x%08x != 0 meta mark set meta mark & 0x%08x return", allow, ^allow),
		append(append(hasMark(allow), clearMark(allow)...), verdict(expr.VerdictReturn))...).rule("egress allowed: allow mark off, on to the receiver's ingress policy")
	unknown := nb().add("drop", verdict(expr.VerdictDrop)).rule("an interface no endpoint claims")
	// The allow mark is cleared first: a packet arriving with it set must
	// not pass as allowed.
	// The conntrack mark set here stays only when the packet is let through
	// by every table (a dropped packet's connection is never confirmed).
	ctMark := nb().add(fmt.Sprintf("ct mark set ct mark | 0x%08x", accepted), setCTMark(accepted)...).rule("a connection policy let through: the eBPF redirect path may carry the rest of it")
	s.addChain(chainFromWL, nil, ctMark, invalid, markOff(allow, "allow mark off"), spoof4, spoof6, dispatchRule(true, mapFromWL), allowed, unknown)
	s.addChain(chainToWL, nil, ctMark, invalid, dispatchRule(false, mapToWL), unknown)
	s.addChain(chainWLToHost, nil, established,
		nb().nfproto(6).l4proto(api.ProtoICMPv6, false).add("icmpv6 type 130-136",
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{130}, ToData: []byte{136}}).
			add("accept", verdict(expr.VerdictAccept)).rule("IPv6 neighbour discovery"),
		nb().add("goto "+chainFromWL, &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainFromWL}).rule("then as any traffic from the endpoint; allowed, it returns to the input chain and is accepted there"))
}

// dispatchRule jumps to the per-endpoint chain named in the verdict map m,
// by the incoming (in) or outgoing interface.
func dispatchRule(in bool, m string) rule {
	key, word := expr.MetaKeyOIFNAME, "oifname"
	if in {
		key, word = expr.MetaKeyIIFNAME, "iifname"
	}
	return nb().add(word+" vmap @"+m, &expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: m, IsDestRegSet: true, DestRegister: 0}).rule("per-endpoint chains")
}

// addPolicyChains adds one chain per policy and profile and says, per chain
// name, whether it has a Pass rule.
func (s *state) addPolicyChains(ds *policy.DesiredState, m marks) (map[string]bool, error) {
	isProfile, dirOf := map[string]bool{}, map[string]string{}
	for _, ep := range ds.Endpoints {
		for _, n := range append(append([]string(nil), ep.Ingress.Profiles...), ep.Egress.Profiles...) {
			isProfile[n] = true
		}
		for dir, ec := range map[string]policy.EndpointChains{"ingress": ep.Ingress, "egress": ep.Egress} {
			for _, n := range append(append([]string(nil), ec.Policies...), ec.Profiles...) {
				if d, ok := dirOf[n]; ok && d != dir {
					// Allow renders differently in the two directions.
					return nil, fmt.Errorf("chain %q is used for both ingress and egress", n)
				}
				dirOf[n] = dir
			}
		}
	}
	canPass := map[string]bool{}
	for i := range ds.Chains {
		c := &ds.Chains[i]
		if s.chains[c.Name] != nil || strings.HasPrefix(c.Name, "ep-") || strings.HasPrefix(c.Name, "pols-") {
			return nil, fmt.Errorf("chain name %q is taken by the data plane", c.Name)
		}
		if len(c.Name) > 250 {
			return nil, fmt.Errorf("chain name %q is too long", c.Name)
		}
		rules := make([]rule, 0, len(c.Rules))
		for _, rr := range c.Rules {
			r, err := policyRule(rr, isProfile[c.Name], dirOf[c.Name] == "egress", m)
			if err != nil {
				return nil, fmt.Errorf("chain %s: %w", c.Name, err)
			}
			rules = append(rules, r)
		}
		s.addChain(c.Name, nil, rules...)
		canPass[c.Name] = c.HasPass()
	}
	return canPass, nil
}

// addEndpoints fills the dispatch maps and the endpoints' address sets, and
// adds the per-endpoint chains they point to.
func (s *state) addEndpoints(eps []policy.LocalEndpoint, prefix string, m marks, canPass map[string]bool) error {
	// Interface names are host-endian strings to nft (for its listing).
	he := binaryutil.NativeEndian
	s.newSet(mapFromWL, nftables.Set{IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: he}, len(eps))
	s.newSet(mapToWL, nftables.Set{IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: he}, len(eps))
	s.newSet(setWLAddrs4, nftables.Set{KeyType: typeIfAddr4}, len(eps))
	s.newSet(setWLAddrs6, nftables.Set{KeyType: typeIfAddr6}, len(eps))
	seen := map[string]bool{}
	for _, ep := range eps {
		if !strings.HasPrefix(ep.Iface, prefix) || len(ep.Iface) > 15 {
			return fmt.Errorf("endpoint %s: interface %q must start with %q and be at most 15 characters", ep.Name, ep.Iface, prefix)
		}
		if seen[ep.Iface] {
			return fmt.Errorf("interface %s is given twice", ep.Iface)
		}
		seen[ep.Iface] = true
		in, err := s.endpointChain("in", ep.Ingress, m, canPass)
		if err != nil {
			return fmt.Errorf("endpoint %s ingress: %w", ep.Iface, err)
		}
		eg, err := s.endpointChain("eg", ep.Egress, m, canPass)
		if err != nil {
			return fmt.Errorf("endpoint %s egress: %w", ep.Iface, err)
		}
		for name, els := range endpointElems(ep, in, eg) {
			for _, el := range els {
				s.sets[name].put(el)
			}
		}
	}
	return nil
}

// endpointElems are a local endpoint's entries, by set: its interface in
// the dispatch maps (to its ingress chain in, its egress chain eg) and its
// interface and addresses in the anti-spoofing sets.
func endpointElems(ep policy.LocalEndpoint, in, eg string) map[string][]nftables.SetElement {
	key := ifnameKey(ep.Iface)
	out := map[string][]nftables.SetElement{
		mapToWL:   {{Key: key, VerdictData: jump(in)}},
		mapFromWL: {{Key: key, VerdictData: jump(eg)}},
	}
	for _, a := range ep.IPs {
		a = a.Unmap()
		set := setWLAddrs4
		if !a.Is4() {
			set = setWLAddrs6
		}
		out[set] = append(out[set], nftables.SetElement{Key: append(append([]byte(nil), key...), a.AsSlice()...)})
	}
	return out
}

// endpointChainName is the chain for one direction ("in" or "eg") of the
// endpoints with the chains ec.
func endpointChainName(dirName string, ec policy.EndpointChains) string {
	return "ep-" + dirName + "-" + nameHash(strings.Join(ec.Policies, ","), strings.Join(ec.Profiles, ","))
}

// endpointChain names (and adds, once) the chain for one direction of an
// endpoint: its policy tier, then its profiles, then drop. Endpoints with
// the same chains share it. In egress, an Allow returns (allow mark set)
// all the way up to from-wl.
func (s *state) endpointChain(dirName string, ec policy.EndpointChains, m marks, canPass map[string]bool) (string, error) {
	for _, n := range append(append([]string(nil), ec.Policies...), ec.Profiles...) {
		if _, ok := canPass[n]; !ok {
			return "", fmt.Errorf("chain %s is used but not given", n)
		}
	}
	egress := dirName == "eg"
	var rules []rule
	jumpTo := func(c string) {
		rules = append(rules, nb().add("jump "+c, jump(c)).rule(""))
		if egress {
			rules = append(rules, returnIfAllowed(m.allow))
		}
	}
	if len(ec.Policies) > 0 {
		tier := "pols-" + dirName + "-" + nameHash(ec.Policies...)
		if s.chains[tier] == nil {
			s.addChain(tier, nil, tierRules(ec.Policies, egress, m, canPass)...)
		}
		jumpTo(tier)
	}
	for _, p := range ec.Profiles {
		jumpTo(p)
	}
	rules = append(rules, nb().add("drop", verdict(expr.VerdictDrop)).rule("no profile allowed"))
	name := endpointChainName(dirName, ec)
	if s.chains[name] == nil {
		s.addChain(name, nil, rules...)
	}
	return name, nil
}

// tierRules jumps to each policy in turn; a Pass (the pass mark set) returns
// to the endpoint chain and so on to the profiles, as does an egress Allow
// (the allow mark set); no verdict means drop.
func tierRules(policies []string, egress bool, m marks, canPass map[string]bool) []rule {
	pass := m.pass
	var tr []rule
	anyPass := false
	for _, p := range policies {
		anyPass = anyPass || canPass[p]
	}
	if anyPass {
		tr = append(tr, markOff(pass, "pass mark off"))
	}
	for _, p := range policies {
		tr = append(tr, nb().add("jump "+p, jump(p)).rule(""))
		if egress {
			tr = append(tr, returnIfAllowed(m.allow))
		}
		if canPass[p] {
			tr = append(tr, nb().add(fmt.Sprintf("meta mark & 0x%08x != 0 meta mark set meta mark & 0x%08x return", pass, ^pass),
				append(append(hasMark(pass), clearMark(pass)...), verdict(expr.VerdictReturn))...).rule("Pass: on to the profiles"))
		}
	}
	return append(tr, nb().add("drop", verdict(expr.VerdictDrop)).rule("selected by a policy, no rule allowed"))
}

// addPolicySets adds the address, network and port sets the policy rules
// look up.
func (s *state) addPolicySets(sets []policy.Set) error {
	be := binaryutil.BigEndian
	for _, ps := range sets {
		if s.sets[ps.Name] != nil {
			return fmt.Errorf("set name %q is taken by the data plane", ps.Name)
		}
		comment := strings.ReplaceAll(ps.Comment, `"`, "'")
		switch ps.Type {
		case policy.SetIPv4Addrs, policy.SetIPv6Addrs:
			kt, want4 := nftables.TypeIPAddr, true
			if ps.Type == policy.SetIPv6Addrs {
				kt, want4 = nftables.TypeIP6Addr, false
			}
			st := s.newSet(ps.Name, nftables.Set{KeyType: kt, KeyByteOrder: be, Comment: comment}, len(ps.Addrs))
			for _, el := range addrElems(ps.Addrs) {
				if (len(el.Key) == 4) != want4 {
					return fmt.Errorf("set %s: address %x of the wrong family", ps.Name, el.Key)
				}
				st.put(el)
			}
		case policy.SetIPv4Nets, policy.SetIPv6Nets:
			kt := nftables.TypeIPAddr
			if ps.Type == policy.SetIPv6Nets {
				kt = nftables.TypeIP6Addr
			}
			for _, n := range ps.Nets {
				if n.Addr().Is4() != (ps.Type == policy.SetIPv4Nets) {
					return fmt.Errorf("set %s: net %s of the wrong family", ps.Name, n)
				}
			}
			st := s.newSet(ps.Name, nftables.Set{KeyType: kt, Interval: true, KeyByteOrder: be, Comment: comment}, 0)
			st.initial = netElems(ps.Nets)
		case policy.SetPorts:
			st := s.newSet(ps.Name, nftables.Set{KeyType: nftables.TypeInetService, Interval: true, KeyByteOrder: be, Comment: comment}, 0)
			st.initial = portElems(ps.Ports)
		default:
			return fmt.Errorf("set %s: unknown type %v", ps.Name, ps.Type)
		}
	}
	return nil
}
