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

// stateBuilder collects the table's wanted contents while build runs.
type stateBuilder struct {
	s       *state
	prefix  string
	pass    uint32
	canPass map[string]bool // given chain -> has a Pass rule
	// Endpoint maps and address sets, filled per endpoint.
	fromMap, toMap, addrs4, addrs6 *set
}

// build turns the desired state into the table's wanted contents.
func (e *Enforcer) build(ds *policy.DesiredState) (*state, error) {
	b := &stateBuilder{
		s:      &state{tableExists: true, chains: map[string]*chain{}, sets: map[string]*set{}},
		prefix: e.cfg.IfacePrefix, pass: e.cfg.PassMark, canPass: map[string]bool{},
	}
	b.baseChains()
	b.endpointSets(len(ds.Endpoints))
	if err := b.givenChains(ds); err != nil {
		return nil, err
	}
	if err := b.endpoints(ds.Endpoints); err != nil {
		return nil, err
	}
	if err := b.givenSets(ds.Sets); err != nil {
		return nil, err
	}
	return b.s, nil
}

func (b *stateBuilder) add(name string, hook *nftables.ChainHook, rules ...rule) {
	b.s.chains[name] = &chain{name: name, hook: hook, rules: rules}
}

func nb() *builder { return &builder{} }

// baseChains: only packets on endpoint interfaces go further; then state,
// anti-spoofing and the per-endpoint dispatch.
func (b *stateBuilder) baseChains() {
	prefix := b.prefix
	b.add(chainFwdFrom, nftables.ChainHookForward,
		nb().ifnamePrefix(true, prefix).add("jump "+chainFromWL, jump(chainFromWL)).rule("from endpoints: their egress policy"))
	b.add(chainFwdTo, nftables.ChainHookForward,
		nb().ifnamePrefix(false, prefix).add("jump "+chainToWL, jump(chainToWL)).rule("to endpoints: their ingress policy"))
	b.add(chainInput, nftables.ChainHookInput,
		nb().ifnamePrefix(true, prefix).add("jump "+chainWLToHost, jump(chainWLToHost)).rule("from endpoints to this host: their egress policy"))

	established := nb().ctState("established,related", expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED).
		add("accept", verdict(expr.VerdictAccept)).rule("connections are stateful")
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
	unknown := nb().add("drop", verdict(expr.VerdictDrop)).rule("an interface no endpoint claims")
	b.add(chainFromWL, nil, established, invalid, spoof4, spoof6, dispatch(true, mapFromWL), unknown)
	b.add(chainToWL, nil, established, invalid, dispatch(false, mapToWL), unknown)
	b.add(chainWLToHost, nil,
		nb().nfproto(6).l4proto(policy.ProtoICMPv6, false).add("icmpv6 type 130-136",
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{130}, ToData: []byte{136}}).
			add("accept", verdict(expr.VerdictAccept)).rule("IPv6 neighbour discovery"),
		nb().add("goto "+chainFromWL, &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainFromWL}).rule("then as any traffic from the endpoint"))
}

// dispatch jumps to the endpoint's own chain through the interface map m.
func dispatch(in bool, m string) rule {
	key, word := expr.MetaKeyOIFNAME, "oifname"
	if in {
		key, word = expr.MetaKeyIIFNAME, "iifname"
	}
	return nb().add(word+" vmap @"+m, &expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: m, IsDestRegSet: true, DestRegister: 0}).rule("per-endpoint chains")
}

func (b *stateBuilder) newSet(name string, proto nftables.Set, size int) *set {
	proto.Name = name
	st := &set{proto: proto, elems: make(map[string]nftables.SetElement, size)}
	b.s.sets[name] = st
	return st
}

func put(st *set, el nftables.SetElement) { st.elems[elemID(el)] = el }

// endpointSets makes the interface maps and address sets the base chains use.
func (b *stateBuilder) endpointSets(size int) {
	// Interface names are host-endian strings to nft (for its listing).
	he := binaryutil.NativeEndian
	b.fromMap = b.newSet(mapFromWL, nftables.Set{IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: he}, size)
	b.toMap = b.newSet(mapToWL, nftables.Set{IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: he}, size)
	b.addrs4 = b.newSet(setWLAddrs4, nftables.Set{KeyType: typeIfAddr4}, size)
	b.addrs6 = b.newSet(setWLAddrs6, nftables.Set{KeyType: typeIfAddr6}, size)
}

// givenChains adds the policy and profile chains.
func (b *stateBuilder) givenChains(ds *policy.DesiredState) error {
	isProfile := map[string]bool{}
	for _, ep := range ds.Endpoints {
		for _, n := range append(append([]string(nil), ep.Ingress.Profiles...), ep.Egress.Profiles...) {
			isProfile[n] = true
		}
	}
	for i := range ds.Chains {
		c := &ds.Chains[i]
		if b.s.chains[c.Name] != nil || strings.HasPrefix(c.Name, "ep-") || strings.HasPrefix(c.Name, "pols-") {
			return fmt.Errorf("chain name %q is taken by the data plane", c.Name)
		}
		if len(c.Name) > 250 {
			return fmt.Errorf("chain name %q is too long", c.Name)
		}
		rules := make([]rule, 0, len(c.Rules))
		for _, rr := range c.Rules {
			r, err := policyRule(rr, isProfile[c.Name], b.pass)
			if err != nil {
				return fmt.Errorf("chain %s: %w", c.Name, err)
			}
			rules = append(rules, r)
		}
		b.add(c.Name, nil, rules...)
		b.canPass[c.Name] = c.HasPass()
	}
	return nil
}

// endpoints points each endpoint's interface at its chains and lists its
// addresses.
func (b *stateBuilder) endpoints(eps []policy.LocalEndpoint) error {
	seen := map[string]bool{}
	for _, ep := range eps {
		if !strings.HasPrefix(ep.Iface, b.prefix) || len(ep.Iface) > 15 {
			return fmt.Errorf("endpoint %s: interface %q must start with %q and be at most 15 characters", ep.Name, ep.Iface, b.prefix)
		}
		if seen[ep.Iface] {
			return fmt.Errorf("interface %s is given twice", ep.Iface)
		}
		seen[ep.Iface] = true
		in, err := b.endpointChain("in", ep.Ingress)
		if err != nil {
			return fmt.Errorf("endpoint %s ingress: %w", ep.Iface, err)
		}
		eg, err := b.endpointChain("eg", ep.Egress)
		if err != nil {
			return fmt.Errorf("endpoint %s egress: %w", ep.Iface, err)
		}
		key := ifnameKey(ep.Iface)
		put(b.toMap, nftables.SetElement{Key: key, VerdictData: jump(in)})
		put(b.fromMap, nftables.SetElement{Key: key, VerdictData: jump(eg)})
		for _, a := range ep.IPs {
			a = a.Unmap()
			if a.Is4() {
				put(b.addrs4, nftables.SetElement{Key: append(append([]byte(nil), key...), a.AsSlice()...)})
			} else {
				put(b.addrs6, nftables.SetElement{Key: append(append([]byte(nil), key...), a.AsSlice()...)})
			}
		}
	}
	return nil
}

// endpointChain returns the per-endpoint dispatch chain for one direction,
// shared by endpoints with the same chains: the policies' tier, then the
// profiles, then drop.
func (b *stateBuilder) endpointChain(dirName string, ec policy.EndpointChains) (string, error) {
	for _, n := range append(append([]string(nil), ec.Policies...), ec.Profiles...) {
		if _, ok := b.canPass[n]; !ok {
			return "", fmt.Errorf("chain %s is used but not given", n)
		}
	}
	var rules []rule
	if len(ec.Policies) > 0 {
		tier := b.tierChain(dirName, ec.Policies)
		rules = append(rules, nb().add("jump "+tier, jump(tier)).rule(""))
	}
	for _, p := range ec.Profiles {
		rules = append(rules, nb().add("jump "+p, jump(p)).rule(""))
	}
	rules = append(rules, nb().add("drop", verdict(expr.VerdictDrop)).rule("no profile allowed"))
	name := "ep-" + dirName + "-" + nameHash(strings.Join(ec.Policies, ","), strings.Join(ec.Profiles, ","))
	if b.s.chains[name] == nil {
		b.add(name, nil, rules...)
	}
	return name, nil
}

// tierChain returns the chain running policies in order: a Pass goes on to
// the profiles, a policy that selects but does not allow drops.
func (b *stateBuilder) tierChain(dirName string, policies []string) string {
	pass := b.pass
	tier := "pols-" + dirName + "-" + nameHash(policies...)
	if b.s.chains[tier] != nil {
		return tier
	}
	var tr []rule
	anyPass := false
	for _, p := range policies {
		anyPass = anyPass || b.canPass[p]
	}
	if anyPass {
		tr = append(tr, nb().add(fmt.Sprintf("meta mark set meta mark & 0x%08x", ^pass), clearPassMark(pass)...).rule("pass mark off"))
	}
	for _, p := range policies {
		tr = append(tr, nb().add("jump "+p, jump(p)).rule(""))
		if b.canPass[p] {
			tr = append(tr, nb().add(fmt.Sprintf("meta mark & 0x%08x != 0 meta mark set meta mark & 0x%08x return", pass, ^pass),
				append(append(hasPassMark(pass), clearPassMark(pass)...), verdict(expr.VerdictReturn))...).rule("Pass: on to the profiles"))
		}
	}
	tr = append(tr, nb().add("drop", verdict(expr.VerdictDrop)).rule("selected by a policy, no rule allowed"))
	b.add(tier, nil, tr...)
	return tier
}

// givenSets adds the policy's named sets.
func (b *stateBuilder) givenSets(sets []policy.Set) error {
	be := binaryutil.BigEndian
	for _, ps := range sets {
		if b.s.sets[ps.Name] != nil {
			return fmt.Errorf("set name %q is taken by the data plane", ps.Name)
		}
		comment := strings.ReplaceAll(ps.Comment, `"`, "'")
		switch ps.Type {
		case policy.SetIPv4Addrs, policy.SetIPv6Addrs:
			kt, want4 := nftables.TypeIPAddr, true
			if ps.Type == policy.SetIPv6Addrs {
				kt, want4 = nftables.TypeIP6Addr, false
			}
			st := b.newSet(ps.Name, nftables.Set{KeyType: kt, KeyByteOrder: be, Comment: comment}, len(ps.Addrs))
			for _, el := range addrElems(ps.Addrs) {
				if (len(el.Key) == 4) != want4 {
					return fmt.Errorf("set %s: address %x of the wrong family", ps.Name, el.Key)
				}
				put(st, el)
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
			st := b.newSet(ps.Name, nftables.Set{KeyType: kt, Interval: true, KeyByteOrder: be, Comment: comment}, 0)
			st.initial = netElems(ps.Nets)
		case policy.SetPorts:
			st := b.newSet(ps.Name, nftables.Set{KeyType: nftables.TypeInetService, Interval: true, KeyByteOrder: be, Comment: comment}, 0)
			st.initial = portElems(ps.Ports)
		default:
			return fmt.Errorf("set %s: unknown type %v", ps.Name, ps.Type)
		}
	}
	return nil
}
