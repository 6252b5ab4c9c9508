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

// build turns the desired state into the table's wanted contents.
func (e *Enforcer) build(ds *policy.DesiredState) (*state, error) {
	s := &state{tableExists: true, chains: map[string]*chain{}, sets: map[string]*set{}}
	prefix, pass := e.cfg.IfacePrefix, e.cfg.PassMark
	add := func(name string, hook *nftables.ChainHook, rules ...rule) {
		s.chains[name] = &chain{name: name, hook: hook, rules: rules}
	}
	nb := func() *builder { return &builder{} }

	// Base chains: only packets on endpoint interfaces go further.
	add(chainFwdFrom, nftables.ChainHookForward,
		nb().ifnamePrefix(true, prefix).add("jump "+chainFromWL, jump(chainFromWL)).rule("from endpoints: their egress policy"))
	add(chainFwdTo, nftables.ChainHookForward,
		nb().ifnamePrefix(false, prefix).add("jump "+chainToWL, jump(chainToWL)).rule("to endpoints: their ingress policy"))
	add(chainInput, nftables.ChainHookInput,
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
	dispatch := func(in bool, m string) rule {
		key, word := expr.MetaKeyOIFNAME, "oifname"
		if in {
			key, word = expr.MetaKeyIIFNAME, "iifname"
		}
		return nb().add(word+" vmap @"+m, &expr.Meta{Key: key, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: m, IsDestRegSet: true, DestRegister: 0}).rule("per-endpoint chains")
	}
	unknown := nb().add("drop", verdict(expr.VerdictDrop)).rule("an interface no endpoint claims")
	add(chainFromWL, nil, established, invalid, spoof4, spoof6, dispatch(true, mapFromWL), unknown)
	add(chainToWL, nil, established, invalid, dispatch(false, mapToWL), unknown)
	add(chainWLToHost, nil,
		nb().nfproto(6).l4proto(policy.ProtoICMPv6, false).add("icmpv6 type 130-136",
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{130}, ToData: []byte{136}}).
			add("accept", verdict(expr.VerdictAccept)).rule("IPv6 neighbour discovery"),
		nb().add("goto "+chainFromWL, &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainFromWL}).rule("then as any traffic from the endpoint"))

	newSet := func(name string, proto nftables.Set, size int) *set {
		proto.Name = name
		st := &set{proto: proto, elems: make(map[string]nftables.SetElement, size)}
		s.sets[name] = st
		return st
	}
	// Interface names are host-endian strings to nft (for its listing).
	he, be := binaryutil.NativeEndian, binaryutil.BigEndian
	fromMap := newSet(mapFromWL, nftables.Set{IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: he}, len(ds.Endpoints))
	toMap := newSet(mapToWL, nftables.Set{IsMap: true, KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: he}, len(ds.Endpoints))
	addrs4 := newSet(setWLAddrs4, nftables.Set{KeyType: typeIfAddr4}, len(ds.Endpoints))
	addrs6 := newSet(setWLAddrs6, nftables.Set{KeyType: typeIfAddr6}, len(ds.Endpoints))
	put := func(st *set, el nftables.SetElement) { st.elems[elemID(el)] = el }

	// Policy and profile chains.
	isProfile := map[string]bool{}
	for _, ep := range ds.Endpoints {
		for _, n := range append(append([]string(nil), ep.Ingress.Profiles...), ep.Egress.Profiles...) {
			isProfile[n] = true
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
			r, err := policyRule(rr, isProfile[c.Name], pass)
			if err != nil {
				return nil, fmt.Errorf("chain %s: %w", c.Name, err)
			}
			rules = append(rules, r)
		}
		add(c.Name, nil, rules...)
		canPass[c.Name] = c.HasPass()
	}

	// Per-endpoint dispatch, shared by endpoints with the same chains.
	group := func(dirName string, ec policy.EndpointChains) (string, error) {
		for _, n := range append(append([]string(nil), ec.Policies...), ec.Profiles...) {
			if _, ok := canPass[n]; !ok {
				return "", fmt.Errorf("chain %s is used but not given", n)
			}
		}
		var rules []rule
		if len(ec.Policies) > 0 {
			tier := "pols-" + dirName + "-" + nameHash(ec.Policies...)
			if s.chains[tier] == nil {
				var tr []rule
				anyPass := false
				for _, p := range ec.Policies {
					anyPass = anyPass || canPass[p]
				}
				if anyPass {
					tr = append(tr, nb().add(fmt.Sprintf("meta mark set meta mark & 0x%08x", ^pass), clearPassMark(pass)...).rule("pass mark off"))
				}
				for _, p := range ec.Policies {
					tr = append(tr, nb().add("jump "+p, jump(p)).rule(""))
					if canPass[p] {
						tr = append(tr, nb().add(fmt.Sprintf("meta mark & 0x%08x != 0 meta mark set meta mark & 0x%08x return", pass, ^pass),
							append(append(hasPassMark(pass), clearPassMark(pass)...), verdict(expr.VerdictReturn))...).rule("Pass: on to the profiles"))
					}
				}
				tr = append(tr, nb().add("drop", verdict(expr.VerdictDrop)).rule("selected by a policy, no rule allowed"))
				add(tier, nil, tr...)
			}
			rules = append(rules, nb().add("jump "+tier, jump(tier)).rule(""))
		}
		for _, p := range ec.Profiles {
			rules = append(rules, nb().add("jump "+p, jump(p)).rule(""))
		}
		rules = append(rules, nb().add("drop", verdict(expr.VerdictDrop)).rule("no profile allowed"))
		name := "ep-" + dirName + "-" + nameHash(strings.Join(ec.Policies, ","), strings.Join(ec.Profiles, ","))
		if s.chains[name] == nil {
			add(name, nil, rules...)
		}
		return name, nil
	}
	seen := map[string]bool{}
	for _, ep := range ds.Endpoints {
		if !strings.HasPrefix(ep.Iface, prefix) || len(ep.Iface) > 15 {
			return nil, fmt.Errorf("endpoint %s: interface %q must start with %q and be at most 15 characters", ep.Name, ep.Iface, prefix)
		}
		if seen[ep.Iface] {
			return nil, fmt.Errorf("interface %s is given twice", ep.Iface)
		}
		seen[ep.Iface] = true
		in, err := group("in", ep.Ingress)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s ingress: %w", ep.Iface, err)
		}
		eg, err := group("eg", ep.Egress)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s egress: %w", ep.Iface, err)
		}
		key := ifnameKey(ep.Iface)
		put(toMap, nftables.SetElement{Key: key, VerdictData: jump(in)})
		put(fromMap, nftables.SetElement{Key: key, VerdictData: jump(eg)})
		for _, a := range ep.IPs {
			a = a.Unmap()
			if a.Is4() {
				put(addrs4, nftables.SetElement{Key: append(append([]byte(nil), key...), a.AsSlice()...)})
			} else {
				put(addrs6, nftables.SetElement{Key: append(append([]byte(nil), key...), a.AsSlice()...)})
			}
		}
	}

	for _, ps := range ds.Sets {
		if s.sets[ps.Name] != nil {
			return nil, fmt.Errorf("set name %q is taken by the data plane", ps.Name)
		}
		comment := strings.ReplaceAll(ps.Comment, `"`, "'")
		switch ps.Type {
		case policy.SetIPv4Addrs, policy.SetIPv6Addrs:
			kt, want4 := nftables.TypeIPAddr, true
			if ps.Type == policy.SetIPv6Addrs {
				kt, want4 = nftables.TypeIP6Addr, false
			}
			st := newSet(ps.Name, nftables.Set{KeyType: kt, KeyByteOrder: be, Comment: comment}, len(ps.Addrs))
			for _, el := range addrElems(ps.Addrs) {
				if (len(el.Key) == 4) != want4 {
					return nil, fmt.Errorf("set %s: address %x of the wrong family", ps.Name, el.Key)
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
					return nil, fmt.Errorf("set %s: net %s of the wrong family", ps.Name, n)
				}
			}
			st := newSet(ps.Name, nftables.Set{KeyType: kt, Interval: true, KeyByteOrder: be, Comment: comment}, 0)
			st.initial = netElems(ps.Nets)
		case policy.SetPorts:
			st := newSet(ps.Name, nftables.Set{KeyType: nftables.TypeInetService, Interval: true, KeyByteOrder: be, Comment: comment}, 0)
			st.initial = portElems(ps.Ports)
		default:
			return nil, fmt.Errorf("set %s: unknown type %v", ps.Name, ps.Type)
		}
	}
	return s, nil
}
