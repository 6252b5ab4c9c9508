package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// testModel: two networks with default profiles; frontend, db and other on
// net1 (other on another node), x on net2, and an endpoint without profile.
func testModel() *Model {
	ep := func(name, node, iface, net string, labels map[string]string, ips ...string) Endpoint {
		e := Endpoint{Name: name, Node: node, Iface: iface, Labels: labels}
		if net != "" {
			e.Profiles = []string{net}
		}
		for _, ip := range ips {
			e.IPs = append(e.IPs, netip.MustParseAddr(ip))
		}
		return e
	}
	return &Model{
		Profiles: []api.Profile{
			DefaultProfile("net1", "calico/network", "net1", false),
			DefaultProfile("net2", "calico/network", "net2", false),
			DefaultProfile("open", "calico/network", "open", true),
		},
		Endpoints: []Endpoint{
			ep("fe", "a", "calife", "net1", map[string]string{"role": "frontend"}, "10.0.1.1", "fd00:1::1"),
			ep("db", "a", "calidb", "net1", map[string]string{"role": "db"}, "10.0.1.2", "fd00:1::2"),
			ep("other", "b", "caliother", "net1", map[string]string{"role": "other"}, "10.0.1.3"),
			ep("x", "a", "calix", "net2", map[string]string{"role": "frontend"}, "10.0.2.1"),
			ep("web", "a", "caliweb", "open", nil, "10.0.3.1"),
			ep("bare", "a", "calibare", "", nil, "10.0.4.1"),
		},
	}
}

func (m *Model) endpoint(name string) *Endpoint {
	for i := range m.Endpoints {
		if m.Endpoints[i].Name == name {
			return &m.Endpoints[i]
		}
	}
	return nil
}

func gnp(name string, order *float64, sel string, in, out []api.Rule, types ...string) api.GlobalNetworkPolicy {
	return api.GlobalNetworkPolicy{Name: name, PolicySpec: api.PolicySpec{Order: order, Selector: sel, Ingress: in, Egress: out, Types: types}}
}

func np(name string, order *float64, sel string, in, out []api.Rule, types ...string) api.NetworkPolicy {
	return api.NetworkPolicy{Name: name, PolicySpec: api.PolicySpec{Order: order, Selector: sel, Ingress: in, Egress: out, Types: types}}
}

type flow struct {
	src, dst string // endpoint names, "host" (this host) or an address
	proto    uint8
	port     uint16
	v6       bool
}

func (m *Model) packetFor(t *testing.T, f flow) (src, dst *Endpoint, pkt Packet) {
	t.Helper()
	addr := func(who string) (*Endpoint, netip.Addr) {
		if a, err := netip.ParseAddr(who); err == nil {
			return nil, a
		}
		if who == "host" {
			if f.v6 {
				return nil, netip.MustParseAddr("fd99::1")
			}
			return nil, netip.MustParseAddr("10.99.0.1")
		}
		e := m.endpoint(who)
		if e == nil {
			t.Fatalf("no endpoint %q", who)
		}
		for _, a := range e.IPs {
			if a.Is6() == f.v6 {
				return e, a
			}
		}
		t.Fatalf("endpoint %q has no address of that family", who)
		return nil, netip.Addr{}
	}
	src, s := addr(f.src)
	dst, d := addr(f.dst)
	return src, dst, Packet{Proto: f.proto, Src: s, Dst: d, SrcPort: 40000, DstPort: f.port, FromHost: f.src == "host"}
}

// decideCheck is one flow and the verdict Decide must give it.
type decideCheck struct {
	f      flow
	allow  bool
	reason string // a part of the verdict's reason
}

// decideCases are TestDecide's policies over testModel and the flows each
// must allow or deny.
var decideCases = []struct {
	name   string
	np     []api.NetworkPolicy
	gnp    []api.GlobalNetworkPolicy
	checks []decideCheck
}{
	{name: "profiles isolate networks", checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 80, false}, true, `Profile "net1" ingress[0]: Allow`},
		{flow{"fe", "db", api.ProtoICMP, 0, false}, true, ""},
		{flow{"fe", "db", api.ProtoICMPv6, 0, true}, true, ""},
		{flow{"other", "db", api.ProtoUDP, 53, false}, true, ""},
		{flow{"x", "db", api.ProtoTCP, 80, false}, false, "db ingress: no profile allowed ingress"},
		{flow{"db", "x", api.ProtoICMP, 0, false}, false, "x ingress"},
		{flow{"x", "8.8.8.8", api.ProtoTCP, 443, false}, true, `Profile "net2" egress[0]`},
		{flow{"8.8.8.8", "fe", api.ProtoTCP, 80, false}, false, ""},
		{flow{"host", "fe", api.ProtoTCP, 80, false}, true, "from the host itself"},
		{flow{"host", "x", api.ProtoICMP, 0, false}, true, "from the host itself"},
		{flow{"8.8.8.8", "web", api.ProtoTCP, 80, false}, true, `Profile "open"`},
		{flow{"fe", "bare", api.ProtoTCP, 80, false}, false, "no profile allowed"},
		{flow{"bare", "8.8.8.8", api.ProtoTCP, 80, false}, false, "bare egress: no profile allowed egress"},
	}},
	{name: "frontend to db on 5432 only", np: []api.NetworkPolicy{decideAllowDB}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 5432, false}, true, `NetworkPolicy "allow-db" ingress[0]: Allow`},
		{flow{"fe", "db", api.ProtoTCP, 5432, true}, true, ""},
		{flow{"fe", "db", api.ProtoTCP, 5433, false}, false, `selected by NetworkPolicy "allow-db" in ingress and no rule allowed`},
		{flow{"fe", "db", api.ProtoICMP, 0, false}, false, "selected by"},
		{flow{"other", "db", api.ProtoTCP, 5432, false}, false, "selected by"},
		// x is a frontend on another network: the policy allows it.
		{flow{"x", "db", api.ProtoTCP, 5432, false}, true, ""},
		{flow{"db", "fe", api.ProtoICMP, 0, false}, true, "fe ingress"}, // egress is not selected
		{flow{"host", "db", api.ProtoTCP, 22, false}, true, "from the host itself"},
	}},
	{name: "lower order deny beats allow", np: []api.NetworkPolicy{np("allow-all", ptr(10.0), "", []api.Rule{{Action: api.Allow}}, nil)},
		gnp: []api.GlobalNetworkPolicy{gnp("deny-icmp", ptr(5.0), "", []api.Rule{{Action: api.Deny, Protocol: "ICMP"}}, nil)},
		checks: []decideCheck{
			{flow{"fe", "db", api.ProtoICMP, 0, false}, false, `GlobalNetworkPolicy "deny-icmp" ingress[0]: Deny`},
			{flow{"x", "db", api.ProtoTCP, 1, false}, true, `NetworkPolicy "allow-all" ingress[0]: Allow`},
			{flow{"fe", "db", api.ProtoICMPv6, 0, true}, true, "allow-all"}, // ICMP is IPv4 only
		}},
	{name: "higher order deny loses", np: []api.NetworkPolicy{np("allow-all", ptr(1.0), "", []api.Rule{{Action: api.Allow}}, nil)},
		gnp: []api.GlobalNetworkPolicy{gnp("deny-icmp", ptr(5.0), "", []api.Rule{{Action: api.Deny, Protocol: "ICMP"}}, nil)},
		checks: []decideCheck{
			{flow{"fe", "db", api.ProtoICMP, 0, false}, true, "allow-all"},
		}},
	{name: "no order is last", gnp: []api.GlobalNetworkPolicy{
		gnp("a-deny", nil, "", []api.Rule{{Action: api.Deny}}, nil),
		gnp("z-allow-tcp", ptr(1000.0), "", []api.Rule{{Action: api.Allow, Protocol: "TCP"}}, nil),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 1, false}, true, "z-allow-tcp"},
		{flow{"fe", "db", api.ProtoUDP, 1, false}, false, `"a-deny" ingress[0]: Deny`},
	}},
	{name: "ties broken by name", gnp: []api.GlobalNetworkPolicy{
		gnp("b-allow", ptr(1.0), "", []api.Rule{{Action: api.Allow}}, nil),
		gnp("a-deny", ptr(1.0), "", []api.Rule{{Action: api.Deny, Protocol: "UDP"}}, nil),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoUDP, 1, false}, false, "a-deny"},
		{flow{"fe", "db", api.ProtoTCP, 1, false}, true, "b-allow"},
	}},
	{name: "pass skips to the profiles", gnp: []api.GlobalNetworkPolicy{
		gnp("pass-net-traffic", ptr(1.0), "", []api.Rule{{Action: api.Pass, Source: api.EntityRule{Selector: "has(calico/network)"}}}, nil),
		gnp("deny-all", ptr(2.0), "", []api.Rule{{Action: api.Deny}}, nil),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 1, false}, true, `Profile "net1" ingress[0]`},
		{flow{"x", "db", api.ProtoTCP, 1, false}, false, "no profile allowed"}, // passed, but net1's profile refuses net2
		{flow{"8.8.8.8", "web", api.ProtoTCP, 1, false}, false, `"deny-all" ingress[0]: Deny`},
	}},
	{name: "selected without a matching rule is denied even if the profile allows", gnp: []api.GlobalNetworkPolicy{
		gnp("nothing", ptr(1.0), "role == 'db'", []api.Rule{{Action: api.Allow, Protocol: "SCTP"}}, nil),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 80, false}, false, `selected by GlobalNetworkPolicy "nothing"`},
		{flow{"fe", "db", api.ProtoSCTP, 80, false}, true, "nothing"},
	}},
	{name: "log goes on", gnp: []api.GlobalNetworkPolicy{
		gnp("log", ptr(1.0), "", []api.Rule{{Action: api.Log, Protocol: "TCP"}, {Action: api.Allow}}, nil),
	}, checks: []decideCheck{
		{flow{"x", "db", api.ProtoTCP, 1, false}, true, `"log" ingress[1]: Allow`},
	}},
	{name: "egress-only types deny all egress of selected", gnp: []api.GlobalNetworkPolicy{
		gnp("lockdown", nil, "role == 'frontend'", nil, nil, "Egress"),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 5432, false}, false, "fe egress: selected by"},
		{flow{"db", "fe", api.ProtoTCP, 80, false}, true, ""},
		{flow{"host", "fe", api.ProtoTCP, 80, false}, true, ""},
	}},
	{name: "egress rules only make an egress policy", gnp: []api.GlobalNetworkPolicy{
		gnp("web-out", nil, "role == 'frontend'", nil, []api.Rule{tcpTo(443)}),
	}, checks: []decideCheck{
		{flow{"fe", "1.1.1.1", api.ProtoTCP, 443, false}, true, `"web-out" egress[0]: Allow`},
		{flow{"fe", "1.1.1.1", api.ProtoTCP, 80, false}, false, "fe egress: selected"},
		{flow{"db", "fe", api.ProtoTCP, 80, false}, true, ""}, // ingress not selected
	}},
	{name: "nets and notNets", gnp: []api.GlobalNetworkPolicy{
		gnp("nets", nil, "role == 'db'", []api.Rule{{Action: api.Allow, Source: api.EntityRule{Nets: []string{"10.0.0.0/16", "192.168.0.0/16"}, NotNets: []string{"10.0.1.3"}}}}, nil),
	}, checks: []decideCheck{
		{flow{"x", "db", api.ProtoTCP, 1, false}, true, "nets"},
		{flow{"other", "db", api.ProtoTCP, 1, false}, false, "selected"},
		{flow{"192.168.7.7", "db", api.ProtoTCP, 1, false}, true, ""},
		{flow{"10.1.0.1", "db", api.ProtoTCP, 1, false}, false, ""},
		{flow{"fe", "db", api.ProtoTCP, 1, true}, false, ""}, // IPv4 nets never match IPv6
	}},
	{name: "protocol, notProtocol, port ranges and notPorts", gnp: []api.GlobalNetworkPolicy{
		gnp("ports", nil, "role == 'db'", []api.Rule{
			{Action: api.Allow, Protocol: "UDP", Destination: api.EntityRule{Ports: []api.Port{"5000:5999", "7000"}, NotPorts: []api.Port{"5500"}}},
			{Action: api.Allow, NotProtocol: "UDP", Source: api.EntityRule{NotSelector: "role == 'frontend'"}},
		}, nil),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoUDP, 5000, false}, true, "ingress[0]"},
		{flow{"fe", "db", api.ProtoUDP, 5999, false}, true, "ingress[0]"},
		{flow{"fe", "db", api.ProtoUDP, 7000, false}, true, "ingress[0]"},
		{flow{"fe", "db", api.ProtoUDP, 5500, false}, false, ""},
		{flow{"fe", "db", api.ProtoUDP, 6000, false}, false, ""},
		{flow{"fe", "db", api.ProtoTCP, 5000, false}, false, ""}, // frontend excluded by notSelector
		{flow{"other", "db", api.ProtoTCP, 80, false}, true, "ingress[1]"},
		{flow{"other", "db", api.ProtoUDP, 80, false}, false, ""},
		{flow{"8.8.8.8", "db", api.ProtoICMP, 0, false}, true, "ingress[1]"},
	}},
	{name: "source ports", gnp: []api.GlobalNetworkPolicy{
		gnp("sport", nil, "role == 'db'", []api.Rule{{Action: api.Allow, Protocol: "TCP", Source: api.EntityRule{Ports: []api.Port{"40000"}}}}, nil),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 1, false}, true, "sport"},
	}},
	{name: "egress destination selector", np: []api.NetworkPolicy{
		np("to-db", nil, "role == 'frontend'", nil, []api.Rule{{Action: api.Allow, Destination: api.EntityRule{Selector: "role == 'db'"}}}),
	}, checks: []decideCheck{
		{flow{"fe", "db", api.ProtoTCP, 1, false}, true, "to-db"},
		{flow{"fe", "db", api.ProtoICMPv6, 1, true}, true, "to-db"},
		{flow{"fe", "other", api.ProtoTCP, 1, false}, false, "fe egress"},
	}},
}

func tcpTo(port uint16) api.Rule {
	return api.Rule{Action: api.Allow, Protocol: "TCP", Destination: api.EntityRule{Ports: []api.Port{api.Port(itoa(port))}}}
}

var decideAllowDB = np("allow-db", ptr(100.0), "role == 'db'", []api.Rule{{
	Action: api.Allow, Protocol: "TCP",
	Source:      api.EntityRule{Selector: "role == 'frontend'"},
	Destination: api.EntityRule{Ports: []api.Port{"5432"}},
}}, nil)

func TestDecide(t *testing.T) {
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			m := testModel()
			m.NetworkPolicies = tc.np
			m.GlobalNetworkPolicies = tc.gnp
			e, err := NewEvaluator(m)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.checks {
				src, dst, pkt := m.packetFor(t, c.f)
				v := e.Path(src, dst, pkt)
				if v.Allow != c.allow || !strings.Contains(v.Reason, c.reason) {
					t.Errorf("%v: %v, want allow=%v with reason containing %q", c.f, v, c.allow, c.reason)
				}
			}
		})
	}
}

func TestDecideStatefulAndLogged(t *testing.T) {
	m := testModel()
	m.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{gnp("log-deny", nil, "", []api.Rule{{Action: api.Log}, {Action: api.Deny}}, nil)}
	db := m.endpoint("db")
	pkt := Packet{Dir: Ingress, Proto: api.ProtoTCP, Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddr("10.0.1.2"), DstPort: 80}
	v, err := Decide(m, db, pkt)
	if err != nil || v.Allow || len(v.Logged) != 1 || v.Logged[0] != `GlobalNetworkPolicy "log-deny" ingress[0]` {
		t.Fatalf("verdict = %+v, %v", v, err)
	}
	pkt.Established = true
	if v, _ := Decide(m, db, pkt); !v.Allow {
		t.Fatalf("established packet denied: %v", v)
	}
}

func TestProfilesInOrderAndLabelsToApply(t *testing.T) {
	m := &Model{
		Profiles: []api.Profile{
			{Name: "first", ProfileSpec: api.ProfileSpec{
				Ingress:       []api.Rule{{Action: api.Pass, Protocol: "UDP"}, {Action: api.Deny, Protocol: "TCP", Destination: api.EntityRule{Ports: []api.Port{"22"}}}},
				LabelsToApply: map[string]string{"tier": "a", "env": "prod"},
			}},
			{Name: "second", ProfileSpec: api.ProfileSpec{
				Ingress:       []api.Rule{{Action: api.Allow}},
				LabelsToApply: map[string]string{"tier": "b"},
			}},
		},
		Endpoints: []Endpoint{{Name: "e", Node: "n", Iface: "calie", Profiles: []string{"missing", "first", "second", "first"}, Labels: map[string]string{"env": "dev"},
			IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}},
	}
	e, err := NewEvaluator(m)
	if err != nil {
		t.Fatal(err)
	}
	ep := &m.Endpoints[0]
	if l := e.EffectiveLabels(ep); l["tier"] != "b" || l["env"] != "dev" {
		t.Fatalf("effective labels = %v, want tier=b (later profile) env=dev (own label)", l)
	}
	pkt := func(proto uint8, port uint16) Packet {
		return Packet{Dir: Ingress, Proto: proto, Src: netip.MustParseAddr("1.2.3.4"), Dst: netip.MustParseAddr("10.0.0.1"), DstPort: port}
	}
	if v := e.Decide(ep, pkt(api.ProtoUDP, 53)); !v.Allow || !strings.Contains(v.Reason, `"second"`) {
		t.Errorf("UDP: %v, want allowed by the second profile after Pass", v)
	}
	if v := e.Decide(ep, pkt(api.ProtoTCP, 22)); v.Allow || !strings.Contains(v.Reason, `"first" ingress[1]: Deny`) {
		t.Errorf("TCP/22: %v, want denied by the first profile", v)
	}
	if v := e.Decide(ep, Packet{Dir: Egress, Proto: api.ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("1.2.3.4")}); v.Allow {
		t.Errorf("egress with no egress rules anywhere: %v, want denied", v)
	}
}

func TestNewEvaluatorReportsEveryInvalidResource(t *testing.T) {
	m := &Model{
		Profiles:              []api.Profile{{Name: "p", ProfileSpec: api.ProfileSpec{Ingress: []api.Rule{{Action: "Bogus"}}}}, {Name: "q"}, {Name: "q"}},
		NetworkPolicies:       []api.NetworkPolicy{np("bad-sel", nil, "a ==", nil, nil)},
		GlobalNetworkPolicies: []api.GlobalNetworkPolicy{gnp("Bad", nil, "", nil, nil)},
	}
	_, err := NewEvaluator(m)
	if err == nil {
		t.Fatal("invalid model accepted")
	}
	for _, want := range []string{`Profile "p": spec.ingress[0].action`, `Profile "q" is given twice`, `NetworkPolicy "bad-sel": spec.selector`, `GlobalNetworkPolicy "Bad": metadata.name`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func itoa(n uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
func ptr[T any](v T) *T { return &v }
