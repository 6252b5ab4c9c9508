package policy

import (
	"flag"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./policy/ -run %s -update to create it)", err, t.Name())
	}
	if string(want) != got {
		t.Errorf("%s differs from the rendering (go test ./policy/ -run %s -update to accept):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

// renderModel exercises every rendering feature on node "a".
func renderModel() *Model {
	m := testModel()
	m.NetworkPolicies = []api.NetworkPolicy{
		np("allow-db", ptr(100.0), "role == 'db'", []api.Rule{{
			Action: api.Allow, Protocol: "TCP",
			Source:      api.EntityRule{Selector: "role == 'frontend'"},
			Destination: api.EntityRule{Ports: []api.Port{"5432"}},
		}}, nil),
		np("to-db", nil, "role == 'frontend'", nil, []api.Rule{{Action: api.Allow, Destination: api.EntityRule{Selector: "role == 'db'"}}}),
	}
	m.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{
		gnp("deny-icmp", ptr(5.0), "has(role)", []api.Rule{{Action: api.Log, Protocol: "ICMP"}, {Action: api.Deny, Protocol: "ICMP"}}, nil),
		gnp("pass-internal", ptr(1.0), "role == 'db'", []api.Rule{
			{Action: api.Pass, Source: api.EntityRule{Nets: []string{"10.0.0.0/16", "192.168.0.0/16"}, NotNets: []string{"10.0.9.0/24"}}},
			{Action: api.Allow, Protocol: "UDP", NotProtocol: "TCP", Source: api.EntityRule{NotSelector: "role in {'db', 'cache'}", Ports: []api.Port{"53"}},
				Destination: api.EntityRule{Ports: []api.Port{"1000:2000", "3000"}, NotPorts: []api.Port{"1500:1501"}}},
			{Action: api.Deny, Protocol: "ICMPv6", Destination: api.EntityRule{Nets: []string{"fd00::/8"}}},
		}, nil),
		// Selects nothing on node a: no chain.
		gnp("unused", nil, "role == 'nobody'", []api.Rule{{Action: api.Allow}}, nil),
	}
	return m
}

func TestComputeGolden(t *testing.T) {
	ds, err := Compute(renderModel(), "a")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "compute", ds.String())
}

func TestComputeErrors(t *testing.T) {
	m := testModel()
	m.Endpoints[1].Iface = m.Endpoints[0].Iface
	if _, err := Compute(m, "a"); err == nil || !strings.Contains(err.Error(), "both use interface calife") {
		t.Errorf("duplicate interface: %v", err)
	}
	m = testModel()
	m.Endpoints[0].Iface = ""
	if _, err := Compute(m, "a"); err == nil || !strings.Contains(err.Error(), `endpoint "fe" on node a has no interface name`) {
		t.Errorf("missing interface: %v", err)
	}
	m = testModel()
	m.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{gnp("x", nil, "a ==", nil, nil)}
	if _, err := Compute(m, "a"); err == nil || !strings.Contains(err.Error(), `GlobalNetworkPolicy "x": spec.selector`) {
		t.Errorf("invalid policy: %v", err)
	}
}

// Adding an endpoint whose labels are already known changes set members and
// the endpoint list, never a chain.
func TestComputeNewEndpointOnlyChangesSets(t *testing.T) {
	m := renderModel()
	before, err := Compute(m, "a")
	if err != nil {
		t.Fatal(err)
	}
	db2 := *m.endpoint("db")
	db2.Name, db2.Iface, db2.IPs = "db2", "calidb2", []netip.Addr{netip.MustParseAddr("10.0.1.9")}
	m.Endpoints = append(m.Endpoints, db2)
	after, err := Compute(m, "a")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(before.Chains, after.Chains, func(a, b Chain) bool { return a.Name == b.Name && slices.EqualFunc(a.Rules, b.Rules, ruleEqual) }) {
		t.Error("chains changed when an endpoint was added")
	}
	if len(after.Endpoints) != len(before.Endpoints)+1 {
		t.Errorf("endpoints %d -> %d", len(before.Endpoints), len(after.Endpoints))
	}
	var grown []string
	for i, s := range after.Sets {
		if !slices.Equal(s.Addrs, before.Sets[i].Addrs) {
			grown = append(grown, s.Comment)
		}
	}
	slices.Sort(grown)
	if strings.Join(grown, ";") != `calico/network == "net1";role == "db";role in {"cache", "db"}` {
		t.Errorf("sets that changed: %v", grown)
	}
}

func ruleEqual(a, b RenderedRule) bool { return a.String() == b.String() && a.Comment == b.Comment }

// simulate runs a desired state the way the data plane does, for one
// endpoint and one new connection.
func simulate(ds *DesiredState, ep *LocalEndpoint, pkt Packet) bool {
	if pkt.Established || (pkt.Dir == Ingress && pkt.FromHost) {
		return true
	}
	sim := newSimulator(ds, pkt)
	ec := ep.Ingress
	if pkt.Dir == Egress {
		ec = ep.Egress
	}
	if len(ec.Policies) > 0 {
		passed := false
		for _, name := range ec.Policies {
			v := sim.run(sim.chains[name])
			if v == "accept" {
				return true
			}
			if v == "drop" {
				return false
			}
			if v == "pass" {
				passed = true
				break
			}
		}
		if !passed {
			return false
		}
	}
	for _, name := range ec.Profiles {
		switch sim.run(sim.chains[name]) {
		case "accept":
			return true
		case "drop":
			return false
		}
	}
	return false
}

// simulator runs one packet through a desired state's chains.
type simulator struct {
	chains map[string]*Chain
	sets   map[string]*Set
	pkt    Packet
}

func newSimulator(ds *DesiredState, pkt Packet) *simulator {
	sim := &simulator{chains: map[string]*Chain{}, sets: map[string]*Set{}, pkt: pkt}
	for i := range ds.Chains {
		sim.chains[ds.Chains[i].Name] = &ds.Chains[i]
	}
	for i := range ds.Sets {
		sim.sets[ds.Sets[i].Name] = &ds.Sets[i]
	}
	return sim
}

func (sim *simulator) inSet(name string, addr netip.Addr, port uint16, isPort bool) bool {
	s := sim.sets[name]
	if isPort {
		return slices.ContainsFunc(s.Ports, func(r api.PortRange) bool { return r.Contains(port) })
	}
	return slices.Contains(s.Addrs, addr) || slices.ContainsFunc(s.Nets, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// run returns "accept", "drop", "pass" or "" (fell off the end).
func (sim *simulator) run(c *Chain) string {
	pkt := sim.pkt
rules:
	for _, r := range c.Rules {
		if r.Family != 0 && r.Family != family(pkt.Src) {
			continue
		}
		for _, m := range r.Matches {
			if sim.matches(m) == m.Negate {
				continue rules
			}
		}
		switch r.Action {
		case api.Allow:
			return "accept"
		case api.Deny:
			return "drop"
		case api.Pass:
			return "pass"
		}
	}
	return ""
}

// matches says whether the packet matches m, before m.Negate.
func (sim *simulator) matches(m Match) bool {
	pkt := sim.pkt
	var ok bool
	switch m.Field {
	case FieldProto:
		ok = pkt.Proto == m.Proto
	case FieldSrcAddr, FieldDstAddr:
		a := pkt.Src
		if m.Field == FieldDstAddr {
			a = pkt.Dst
		}
		if m.Set != "" {
			ok = sim.inSet(m.Set, a, 0, false)
		} else {
			ok = m.Net.Contains(a)
		}
	case FieldSrcPort, FieldDstPort:
		p := pkt.SrcPort
		if m.Field == FieldDstPort {
			p = pkt.DstPort
		}
		if m.Set != "" {
			ok = sim.inSet(m.Set, netip.Addr{}, p, true)
		} else {
			ok = m.Ports.Contains(p)
		}
	}
	return ok
}

// The rendered state, run as the data plane runs it, decides every packet
// the way the Evaluator (the reference model) does.
func TestComputeAgreesWithDecide(t *testing.T) {
	m := renderModel()
	m.GlobalNetworkPolicies = append(m.GlobalNetworkPolicies,
		gnp("frontend-out", ptr(50.0), "role == 'frontend'", nil, []api.Rule{
			{Action: api.Deny, Protocol: "UDP", Destination: api.EntityRule{NotNets: []string{"10.0.0.0/8"}}},
			{Action: api.Pass, Protocol: "TCP", Destination: api.EntityRule{NotPorts: []api.Port{"22", "8000:8100"}}},
			{Action: api.Allow, Destination: api.EntityRule{Selector: "calico/network == 'net2'"}},
		}),
		gnp("v6-only", ptr(60.0), "all()", []api.Rule{
			{Action: api.Allow, Protocol: "58", Source: api.EntityRule{Nets: []string{"fd00:1::/64"}}},
			{Action: api.Log, NotProtocol: "TCP"},
		}, nil),
	)
	e, err := NewEvaluator(m)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := e.Compute("a")
	if err != nil {
		t.Fatal(err)
	}
	var addrs4, addrs6 []netip.Addr
	for _, ep := range m.Endpoints {
		for _, a := range ep.IPs {
			if a.Is4() {
				addrs4 = append(addrs4, a)
			} else {
				addrs6 = append(addrs6, a)
			}
		}
	}
	addrs4 = append(addrs4, netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("10.0.9.9"), netip.MustParseAddr("10.0.200.1"))
	addrs6 = append(addrs6, netip.MustParseAddr("fd00:1::99"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fd01::1"))
	protos := []uint8{api.ProtoTCP, api.ProtoUDP, api.ProtoICMP, api.ProtoICMPv6, api.ProtoSCTP, 47}
	ports := []uint16{22, 53, 80, 999, 1000, 1499, 1500, 1501, 1502, 2000, 2001, 3000, 5432, 8000, 8100, 40000}
	rng := rand.New(rand.NewSource(1))
	pick := func(s []netip.Addr) netip.Addr { return s[rng.Intn(len(s))] }
	checked, allowed := 0, 0
	for i := 0; i < 20000; i++ {
		le := &ds.Endpoints[rng.Intn(len(ds.Endpoints))]
		var ep *Endpoint
		for j := range m.Endpoints {
			if m.Endpoints[j].Iface == le.Iface {
				ep = &m.Endpoints[j]
			}
		}
		pool := addrs4
		if rng.Intn(3) == 0 {
			pool = addrs6
		}
		own := ep.IPs[rng.Intn(len(ep.IPs))]
		if own.Is4() != pool[0].Is4() {
			continue
		}
		pkt := Packet{Dir: Direction(rng.Intn(2)), Proto: protos[rng.Intn(len(protos))], SrcPort: ports[rng.Intn(len(ports))], DstPort: ports[rng.Intn(len(ports))]}
		if pkt.Dir == Ingress {
			pkt.Src, pkt.Dst = pick(pool), own
		} else {
			pkt.Src, pkt.Dst = own, pick(pool)
		}
		want := e.Decide(ep, pkt)
		if got := simulate(ds, le, pkt); got != want.Allow {
			t.Fatalf("endpoint %s, %+v: rendered state says allow=%v, model says %v", ep.Name, pkt, got, want)
		}
		checked++
		if want.Allow {
			allowed++
		}
	}
	if allowed < checked/10 || allowed > checked*9/10 {
		t.Errorf("%d of %d packets allowed: the cases are not varied enough", allowed, checked)
	}
}
