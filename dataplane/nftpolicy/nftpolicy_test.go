package nftpolicy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func f64(v float64) *float64 { return &v }

const tcp, icmp = api.ProtoTCP, api.ProtoICMP

// Two endpoints of net1 reach each other; net2's endpoint is cut off from
// both in both directions (TCP and ICMP, IPv4 and IPv6); the host reaches
// everyone; everyone reaches the host.
func TestIsolationBetweenNetworks(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("a1", "calia1000001", "10.65.1.1", "fd00:65::1:1", "net1", nil)
	h.addEndpoint("a2", "calia2000002", "10.65.1.2", "fd00:65::1:2", "net1", nil)
	h.addEndpoint("b1", "calib1000001", "10.65.2.1", "fd00:65::2:1", "net2", nil)
	h.apply()
	h.check(h.matrix([]string{"a1", "a2", "b1"}, 80), map[probe]bool{
		{"a1", "a2", tcp, 80, false}:   true,
		{"a2", "a1", icmp, 0, false}:   true,
		{"a1", "a2", icmp, 0, true}:    true,
		{"a1", "b1", tcp, 80, false}:   false,
		{"b1", "a1", tcp, 80, false}:   false,
		{"a1", "b1", icmp, 0, false}:   false,
		{"b1", "a2", icmp, 0, false}:   false,
		{"b1", "a1", tcp, 80, true}:    false,
		{"a2", "b1", icmp, 0, true}:    false,
		{"host", "b1", tcp, 80, false}: true,
		{"host", "a1", icmp, 0, true}:  true,
		{"b1", "host", tcp, 80, false}: true,
		{"b1", "host", icmp, 0, false}: true,
	})
}

// Only role=frontend reaches role=db, and only on tcp/5432; ICMP to the db
// is blocked; the db's own egress is unaffected.
func TestFrontendToDatabaseOnly5432(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("fe", "calife0000001", "10.65.1.1", "fd00:65::1:1", "net1", map[string]string{"role": "frontend"})
	h.addEndpoint("db", "calidb0000001", "10.65.1.2", "fd00:65::1:2", "net1", map[string]string{"role": "db"})
	h.addEndpoint("other", "caliot0000001", "10.65.1.3", "", "net1", map[string]string{"role": "other"})
	h.model.NetworkPolicies = []api.NetworkPolicy{{Name: "allow-frontend-to-db", PolicySpec: api.PolicySpec{
		Order: f64(100), Selector: "role == 'db'",
		Ingress: []api.Rule{{
			Action: api.Allow, Protocol: "TCP",
			Source:      api.EntityRule{Selector: "role == 'frontend'"},
			Destination: api.EntityRule{Ports: []api.Port{"5432"}},
		}},
	}}}
	h.apply()
	h.check(h.matrix([]string{"fe", "db", "other"}, 80, 5432), map[probe]bool{
		{"fe", "db", tcp, 5432, false}:    true,
		{"fe", "db", tcp, 5432, true}:     true,
		{"fe", "db", tcp, 80, false}:      false,
		{"fe", "db", icmp, 0, false}:      false,
		{"fe", "db", icmp, 0, true}:       false,
		{"other", "db", tcp, 5432, false}: false,
		{"db", "fe", icmp, 0, false}:      true,
		{"other", "fe", tcp, 80, false}:   true,
		{"host", "db", tcp, 80, false}:    true,
	})

	// Deleting the policy restores the profile's behaviour.
	h.model.NetworkPolicies = nil
	st := h.apply()
	if st.ChainsDeleted == 0 || st.ElementsDeleted == 0 {
		t.Errorf("policy delete: %v", st)
	}
	h.check([]probe{{"fe", "db", icmp, 0, false}, {"other", "db", tcp, 5432, false}}, map[probe]bool{
		{"fe", "db", icmp, 0, false}:      true,
		{"other", "db", tcp, 5432, false}: true,
	})
}

// A Deny at a lower order beats an Allow at a higher one; swapping the
// orders is a policy change applied incrementally.
func TestLowerOrderDenyBeatsAllow(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("a1", "calia1000001", "10.65.1.1", "", "net1", nil)
	h.addEndpoint("b1", "calib1000001", "10.65.2.1", "", "net2", nil)
	deny := api.GlobalNetworkPolicy{Name: "deny-icmp", PolicySpec: api.PolicySpec{Order: f64(10), Ingress: []api.Rule{{Action: api.Deny, Protocol: "ICMP"}}}}
	allow := api.NetworkPolicy{Name: "allow-all", PolicySpec: api.PolicySpec{Order: f64(20), Ingress: []api.Rule{{Action: api.Allow}}}}
	h.model.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{deny}
	h.model.NetworkPolicies = []api.NetworkPolicy{allow}
	h.apply()
	probes := h.matrix([]string{"a1", "b1"}, 80)
	h.check(probes, map[probe]bool{
		{"a1", "b1", icmp, 0, false}: false,
		{"b1", "a1", icmp, 0, false}: false,
		{"a1", "b1", tcp, 80, false}: true, // allow-all opens the networks to each other
	})

	h.model.GlobalNetworkPolicies[0].Order = f64(30)
	before := h.counts()
	st := h.apply()
	if st.RulesWritten == 0 || st.SetsAdded != 0 || st.ChainsRewritten != 0 {
		t.Errorf("order change: %v, want only new policy-group chains", st)
	}
	if after := h.counts(); after.Rules != before.Rules {
		t.Errorf("rules %d -> %d after reordering two policies", before.Rules, after.Rules)
	}
	h.check(probes, map[probe]bool{{"a1", "b1", icmp, 0, false}: true})
}

// Pass leaves the policies for the profiles; the pass mark is cleared
// before the packet leaves our table.
func TestPassGoesToProfiles(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("a1", "calia1000001", "10.65.1.1", "fd00:65::1:1", "net1", nil)
	h.addEndpoint("a2", "calia2000002", "10.65.1.2", "fd00:65::1:2", "net1", nil)
	h.addEndpoint("b1", "calib1000001", "10.65.2.1", "fd00:65::2:1", "net2", nil)
	h.model.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{
		{Name: "pass-web", PolicySpec: api.PolicySpec{Order: f64(1), Ingress: []api.Rule{
			{Action: api.Log, Protocol: "TCP"},
			{Action: api.Pass, Protocol: "TCP", Destination: api.EntityRule{Ports: []api.Port{"80"}}},
		}}},
		{Name: "deny-rest", PolicySpec: api.PolicySpec{Order: f64(2), Ingress: []api.Rule{{Action: api.Deny}}}},
	}
	// Something after us on the path that would see a leaked pass mark.
	run(t, h.ns, "nft", "add table inet watch; add chain inet watch post { type filter hook postrouting priority 100; }; "+
		"add rule inet watch post meta mark & 0x00100000 != 0 counter")
	h.apply()
	h.check(h.matrix([]string{"a1", "a2", "b1"}, 80, 5432), map[probe]bool{
		{"a1", "a2", tcp, 80, false}:     true,  // passed, the profile allows net1
		{"a1", "a2", tcp, 80, true}:      true,  // IPv6 too
		{"b1", "a2", tcp, 80, false}:     false, // passed, the profile refuses net2
		{"a1", "a2", tcp, 5432, false}:   false, // deny-rest
		{"a1", "a2", icmp, 0, false}:     false,
		{"host", "a2", tcp, 5432, false}: true,
	})
	if out := run(t, h.ns, "nft", "list", "table", "inet", "watch"); !strings.Contains(out, "counter packets 0 bytes 0") {
		t.Errorf("the pass mark leaked out of our table:\n%s", out)
	}
}

// An endpoint sends only from its own addresses; an interface that no
// endpoint claims passes nothing; adding an endpoint with labels already in
// use adds set and map elements and no rule.
func TestNewEndpointAddsElementsNotRules(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("fe", "calife0000001", "10.65.1.1", "fd00:65::1:1", "net1", map[string]string{"role": "frontend"})
	h.addEndpoint("db", "calidb0000001", "10.65.1.2", "fd00:65::1:2", "net1", map[string]string{"role": "db"})
	h.model.NetworkPolicies = []api.NetworkPolicy{{Name: "allow-frontend-to-db", PolicySpec: api.PolicySpec{
		Selector: "role == 'db'",
		Ingress: []api.Rule{{Action: api.Allow, Protocol: "TCP",
			Source: api.EntityRule{Selector: "role == 'frontend'"}, Destination: api.EntityRule{Ports: []api.Port{"5432"}}}},
	}}}
	h.apply()
	before := h.counts()

	// The veth of a second frontend exists before the endpoint is known:
	// its traffic is dropped, whatever the profile says.
	fe2 := h.addEndpoint("fe2", "calife0000002", "10.65.1.3", "fd00:65::1:3", "net1", map[string]string{"role": "frontend"})
	h.removeFromModel("fe2")
	for _, p := range []probe{{"fe2", "host", icmp, 0, false}, {"fe2", "host", tcp, 80, true}, {"fe", "fe2", tcp, 80, false}, {"host", "fe2", icmp, 0, false}} {
		// (The host still reaches it: the output hook is not filtered.)
		if got, want := h.do(p), p.src == "host"; got != want {
			t.Errorf("%v on an interface no endpoint claims: allowed=%v, want %v", p, got, want)
		}
	}
	h.model.Endpoints = append(h.model.Endpoints, fe2.Endpoint)
	st := h.apply()
	after := h.counts()
	if st.RulesWritten != 0 || st.ChainsAdded != 0 || st.ChainsRewritten != 0 || st.SetsAdded != 0 || after.Rules != before.Rules {
		t.Errorf("new endpoint: %v; rules %d -> %d; want elements only", st, before.Rules, after.Rules)
	}
	// fe2 joins the frontend and net1 sets (v4 and v6), the two maps and
	// the two address sets.
	if st.ElementsAdded != 8 || st.ElementsDeleted != 0 {
		t.Errorf("new endpoint: %d elements added, %d deleted, want 8 and 0", st.ElementsAdded, st.ElementsDeleted)
	}
	h.check(h.matrix([]string{"fe", "db", "fe2"}, 5432), map[probe]bool{
		{"fe2", "db", tcp, 5432, false}: true,
		{"fe2", "db", tcp, 5432, true}:  true,
		{"fe2", "fe", icmp, 0, false}:   true,
	})

	// A spoofed source address is dropped (the host would route the reply,
	// and fe2's egress allows everything).
	run(t, fe2.ns, "ip", "addr", "add", "10.65.1.99/32", "dev", "cali0")
	run(t, fe2.ns, "ip", "-6", "addr", "add", "fd00:65::1:99/128", "dev", "cali0", "nodad")
	run(t, h.ns, "ip", "route", "add", "10.65.1.99/32", "dev", "calife0000002")
	run(t, h.ns, "ip", "-6", "route", "add", "fd00:65::1:99/128", "dev", "calife0000002")
	for _, to := range []string{hostAddr4, "10.65.1.1", hostAddr6, "fd00:65::1:1"} {
		from := "10.65.1.3"
		spoofed := "10.65.1.99"
		if strings.Contains(to, ":") {
			from, spoofed = "fd00:65::1:3", "fd00:65::1:99"
		}
		if _, err := testns.Run(fe2.ns, "busybox", "ping", "-c", "1", "-W", "1", "-I", spoofed, to); err == nil {
			t.Errorf("a packet from %s, an address fe2 does not own, reached %s", spoofed, to)
		}
		if _, err := testns.Run(fe2.ns, "busybox", "ping", "-c", "1", "-W", "1", "-I", from, to); err != nil {
			t.Errorf("fe2's own address %s no longer reaches %s", from, to)
		}
	}

	// Removing it deletes exactly those elements.
	h.removeFromModel("fe2")
	st = h.apply()
	if st.ElementsDeleted != 8 || st.ElementsAdded != 0 || st.RulesWritten != 0 || st.ChainsDeleted != 0 {
		t.Errorf("endpoint removed: %v", st)
	}
}

// Applying the same state again writes nothing, and neither does a new
// Enforcer (a restarted daemon) that finds the table already right.
func TestReapplyChangesNothing(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("fe", "calife0000001", "10.65.1.1", "fd00:65::1:1", "net1", map[string]string{"role": "frontend"})
	h.addEndpoint("db", "calidb0000001", "10.65.1.2", "fd00:65::1:2", "net1", map[string]string{"role": "db"})
	h.model.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{{Name: "p", PolicySpec: api.PolicySpec{
		Selector: "has(role)", Ingress: []api.Rule{
			{Action: api.Pass, Source: api.EntityRule{Nets: []string{"10.65.0.0/16", "10.66.0.0/16"}}},
			{Action: api.Allow, Protocol: "UDP", Destination: api.EntityRule{Ports: []api.Port{"53", "1000:2000"}}},
		}}}}
	first := h.apply()
	if !first.ReadKernel || !first.TableCreated {
		t.Errorf("first apply: %+v", first)
	}
	snap := h.snapshot()
	if st := h.apply(); st.Changed() || st.ReadKernel {
		t.Errorf("second apply changed something: %v", st)
	}
	restarted, err := New(Config{NetNS: int(h.ns.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	st, err := restarted.Apply(h.desired())
	if err != nil || st.Changed() || !st.ReadKernel {
		t.Errorf("apply after a restart: %v, %v; want a kernel read and no change", st, err)
	}
	if st, err := restarted.Resync(h.desired()); err != nil || st.Changed() {
		t.Errorf("resync: %v, %v", st, err)
	}
	if got := h.snapshot(); got != snap {
		t.Errorf("table changed:\n%s\nwas\n%s", got, snap)
	}
}

// What someone else changes in our table is put right by a resync; other
// tables are never touched, not even by Remove.
func TestResyncRepairsAndOthersUntouched(t *testing.T) {
	nftAvailable(t)
	h := newTestHost(t)
	h.addEndpoint("a1", "calia1000001", "10.65.1.1", "", "net1", nil)
	h.addEndpoint("b1", "calib1000001", "10.65.2.1", "", "net2", nil)
	run(t, h.ns, "nft", "add table inet other; add chain inet other c { type filter hook forward priority 0; }; add rule inet other c ip saddr 1.2.3.4 counter accept; "+
		"add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy accept; }; add rule ip filter FORWARD iifname \"cali*\" accept")
	others := func() string {
		return run(t, h.ns, "nft", "list", "table", "inet", "other") + run(t, h.ns, "nft", "list", "table", "ip", "filter")
	}
	othersBefore := others()
	h.apply()
	snap := h.snapshot()

	// Drift: a profile rule deleted, a set element removed, a chain of ours
	// emptied, a foreign chain added to our table.
	c, err := nftables.New(nftables.WithNetNSFd(int(h.ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyINet}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: "pro-i-net1"})
	if err != nil || len(rules) == 0 {
		t.Fatalf("rules of pro-i-net1: %v", err)
	}
	if err := c.DelRule(rules[0]); err != nil {
		t.Fatal(err)
	}
	c.FlushChain(&nftables.Chain{Name: chainToWL, Table: tbl})
	c.AddChain(&nftables.Chain{Name: "intruder", Table: tbl})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	run(t, h.ns, "nft", "delete element inet "+DefaultTable+" "+mapFromWL+" { \"calia1000001\" }")
	if h.snapshot() == snap {
		t.Fatal("drift not visible")
	}
	// Apply trusts what it wrote; Resync reads the kernel.
	st, err := h.enf.Resync(h.desired())
	if err != nil {
		t.Fatal(err)
	}
	if st.ChainsRewritten != 2 || st.ChainsDeleted != 1 || st.ElementsAdded != 1 {
		t.Errorf("resync: %v", st)
	}
	if got := h.snapshot(); got != snap {
		t.Errorf("after resync:\n%s\nwant\n%s", got, snap)
	}
	h.check(h.matrix([]string{"a1", "b1"}, 80), nil)

	if err := h.enf.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := h.enf.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if got := others(); got != othersBefore {
		t.Errorf("other tables changed:\n%s\nwere\n%s", got, othersBefore)
	}
	if out, _ := testns.Run(h.ns, "nft", "list", "tables"); strings.Contains(out, DefaultTable) {
		t.Errorf("our table is still there: %s", out)
	}
}

// A restarted daemon converges on a state that changed while it was down,
// in one transaction: a connection that policy forbids never gets through,
// and a connection established before keeps working.
func TestRestartKeepsIsolation(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("a1", "calia1000001", "10.65.1.1", "", "net1", map[string]string{"role": "web"})
	h.addEndpoint("a2", "calia2000002", "10.65.1.2", "", "net1", nil)
	h.addEndpoint("b1", "calib1000001", "10.65.2.1", "", "net2", nil)
	h.apply()

	// An established connection a2 -> a1 that must survive.
	serveEcho(t, h.eps["a1"].ns, "9000")
	conn, err := dialEcho(t, h.eps["a2"].ns, "10.65.1.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.roundTrip("before"); err != nil {
		t.Fatal(err)
	}

	var leaks, attempts atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range []probe{{"b1", "a1", tcp, 80, false}, {"a1", "b1", tcp, 80, false}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				attempts.Add(1)
				// A leak would connect within a millisecond.
				if h.doTimeout(p, 100*time.Millisecond) {
					leaks.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	for i := 0; i < 20; i++ {
		// While "down", a policy was added and an endpoint left.
		if i%2 == 0 {
			h.model.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{{Name: "web", PolicySpec: api.PolicySpec{
				Selector: "role == 'web'", Ingress: []api.Rule{{Action: api.Allow, Protocol: "TCP", Source: api.EntityRule{Selector: "calico/network == 'net1'"}}}}}}
		} else {
			h.model.GlobalNetworkPolicies = nil
		}
		restarted, err := New(Config{NetNS: int(h.ns.Fd())})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := restarted.Apply(h.desired()); err != nil || !st.ReadKernel || st.TableCreated {
			t.Fatalf("restart %d: %v, %v", i, st, err)
		}
		h.enf = restarted
	}
	// Keep probing the converged table a little, however slow the probes.
	for deadline := time.Now().Add(10 * time.Second); attempts.Load() < 20 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if leaks.Load() > 0 || attempts.Load() < 20 {
		t.Errorf("%d of %d forbidden connections got through during restarts", leaks.Load(), attempts.Load())
	}
	h.check(h.matrix([]string{"a1", "a2", "b1"}, 80), nil)

	// Now new connections to a1 are denied; the established one goes on.
	h.model.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{{Name: "lockdown", PolicySpec: api.PolicySpec{Selector: "role == 'web'", Types: []string{"Ingress"}}}}
	h.apply()
	if _, err := dialEcho(t, h.eps["a2"].ns, "10.65.1.1:9000"); err == nil {
		t.Error("a new connection got through the lockdown")
	}
	if err := conn.roundTrip("after"); err != nil {
		t.Errorf("established connection broken: %v", err)
	}
}

// counted reads the packets of the counter rule a test put at the top of
// chain.
func (h *testHost) counted(chain string) int {
	h.t.Helper()
	out := run(h.t, h.ns, "nft", "list", "chain", "inet", DefaultTable, chain)
	m := regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "test counter"`).FindStringSubmatch(out)
	if m == nil {
		h.t.Fatalf("no test counter in chain %s:\n%s", chain, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// Established first: the packets of a connection after its first reach
// neither the sender's egress chains nor the receiver's ingress chains
// (counters at the top of from-wl and to-wl count one SYN per connection
// while the forward chain sees every segment); new connections still
// meet policy in both directions.
func TestEstablishedSkipsEndpointChains(t *testing.T) {
	h := newTestHost(t)
	h.addEndpoint("a", "calia0000001", "10.65.1.1", "", "net1", nil)
	h.addEndpoint("b", "calib0000001", "10.65.1.2", "", "net1", map[string]string{"role": "db"})
	h.apply()
	serveEcho(t, h.eps["b"].ns, "9000")
	for _, c := range []string{chainForward, chainFromWL, chainToWL} {
		run(t, h.ns, "nft", "insert", "rule", "inet", DefaultTable, c, "meta", "l4proto", "tcp", "counter", "comment", `"test counter"`)
	}
	conn, err := dialEcho(t, h.eps["a"].ns, "10.65.1.2:9000")
	if err != nil {
		t.Fatal(err)
	}
	const trips = 50
	for i := 0; i < trips; i++ {
		if err := conn.roundTrip(fmt.Sprint("line ", i)); err != nil {
			t.Fatal(err)
		}
	}
	if all := h.counted(chainForward); all < 2*trips {
		t.Fatalf("the forward chain counted %d TCP packets for %d round trips: the counters do not see the traffic, the test proves nothing", all, trips)
	}
	if from, to := h.counted(chainFromWL), h.counted(chainToWL); from != 1 || to != 1 {
		t.Errorf("one connection, %d round trips: from-wl counted %d TCP packets, to-wl %d; want 1 each (the SYN)", trips, from, to)
	}

	// New flows are still policed: the receiver's ingress denies a's new
	// connections; the established one goes on.
	h.model.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{{Name: "db-closed", PolicySpec: api.PolicySpec{
		Selector: "role == 'db'", Types: []string{"Ingress"}}}}
	h.apply()
	if _, err := dialEcho(t, h.eps["a"].ns, "10.65.1.2:9000"); err == nil {
		t.Error("a new connection passed the receiver's ingress policy, which allows nothing")
	}
	if err := conn.roundTrip("after"); err != nil {
		t.Errorf("established connection broken: %v", err)
	}
	// And the sender's egress: a denies its new connections to b while b's
	// ingress allows them.
	h.model.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{{Name: "a-closed", PolicySpec: api.PolicySpec{
		Selector: "!has(role)", Types: []string{"Egress"}}}}
	h.apply()
	if _, err := dialEcho(t, h.eps["a"].ns, "10.65.1.2:9000"); err == nil {
		t.Error("a new connection passed the sender's egress policy, which allows nothing")
	}
	if _, err := dialEcho(t, h.eps["b"].ns, "10.65.1.1:80"); err != nil {
		t.Errorf("b -> a, which no policy selects in b's egress: %v", err)
	}
}
