// Command policy-bench measures the nftables policy data plane (issue #5,
// item 6) in a throwaway network namespace, and prints markdown tables:
//
//   - with 1,000 endpoints and 100 policies on one host: the time to apply
//     one policy change and one new endpoint (compute + kernel transaction),
//     the first full apply, a restarted daemon's resync, and the size of
//     the table;
//   - the number of kernel rules as endpoints and policies grow (it follows
//     the policies, not endpoints × policies);
//   - same-host TCP throughput between two endpoints with policy on and off.
//
// It needs root (network namespaces, nftables) and touches nothing outside
// the namespaces it creates.
//
//	go run ./cmd/policy-bench -rounds 5
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

const (
	node     = "bench"
	networks = 10
	roles    = 20
)

func main() {
	endpoints := flag.Int("endpoints", 1000, "local endpoints")
	policies := flag.Int("policies", 100, "policies")
	rounds := flag.Int("rounds", 5, "repetitions of each change (the median is reported)")
	tputTime := flag.Duration("throughput-time", 3*time.Second, "how long each throughput run lasts (0: skip)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "policy-bench: run as root: it creates network namespaces and nftables tables")
		os.Exit(2)
	}
	if err := run(*endpoints, *policies, *rounds, *tputTime); err != nil {
		fmt.Fprintln(os.Stderr, "policy-bench:", err)
		os.Exit(1)
	}
}

// benchModel: endpoints spread over networks (each with its default
// profile) and roles; policy j selects role r(j mod roles), lets the next
// role in on its own TCP port, and some also deny, pass, log or police
// egress.
func benchModel(nEP, nPol int) *policy.Model {
	m := &policy.Model{}
	for n := 0; n < networks; n++ {
		name := fmt.Sprintf("net%d", n)
		m.Profiles = append(m.Profiles, policy.DefaultProfile(name, "calico/network", name, false))
	}
	for i := 0; i < nEP; i++ {
		m.Endpoints = append(m.Endpoints, benchEndpoint(i))
	}
	for j := 0; j < nPol; j++ {
		m.NetworkPolicies = append(m.NetworkPolicies, benchPolicy(j, 5000+j))
	}
	return m
}

func benchEndpoint(i int) policy.Endpoint {
	return policy.Endpoint{
		Name:     fmt.Sprintf("ep%d", i),
		Node:     node,
		Iface:    fmt.Sprintf("cali%011x", i),
		IPs:      []netip.Addr{netip.AddrFrom4([4]byte{10, 64, byte(i / 250), byte(i%250 + 1)}), netip.MustParseAddr(fmt.Sprintf("fd00:64::%x", i+1))},
		Labels:   map[string]string{"role": fmt.Sprintf("r%d", (i/networks)%roles)},
		Profiles: []string{fmt.Sprintf("net%d", i%networks)},
	}
}

func benchPolicy(j, port int) api.NetworkPolicy {
	order := float64(j)
	p := api.NetworkPolicy{Name: fmt.Sprintf("policy-%d", j), PolicySpec: api.PolicySpec{
		Order:    &order,
		Selector: fmt.Sprintf("role == 'r%d'", j%roles),
		Ingress: []api.Rule{{
			Action: api.Allow, Protocol: "TCP",
			Source:      api.EntityRule{Selector: fmt.Sprintf("role == 'r%d'", (j+1)%roles)},
			Destination: api.EntityRule{Ports: []api.Port{api.Port(fmt.Sprint(port))}},
		}},
	}}
	if j%3 == 0 {
		p.Ingress = append([]api.Rule{{Action: api.Deny, Protocol: "UDP", Source: api.EntityRule{NotNets: []string{"10.0.0.0/8", "192.168.0.0/16"}}}}, p.Ingress...)
	}
	if j%7 == 0 {
		p.Ingress = append(p.Ingress, api.Rule{Action: api.Pass, Source: api.EntityRule{Selector: fmt.Sprintf("role in {'r%d', 'r%d'}", (j+2)%roles, (j+3)%roles)}})
	}
	if j%10 == 0 {
		p.Types = []string{"Ingress", "Egress"}
		p.Egress = []api.Rule{{Action: api.Log, Protocol: "TCP", Destination: api.EntityRule{Ports: []api.Port{"22", "2000:2100"}}}, {Action: api.Allow}}
	}
	return p
}

type timing struct {
	compute, apply time.Duration
	stats          nftpolicy.Stats
}

func median(ts []timing) timing {
	slices.SortFunc(ts, func(a, b timing) int { return int((a.compute + a.apply) - (b.compute + b.apply)) })
	return ts[len(ts)/2]
}

func step(e *nftpolicy.Enforcer, m *policy.Model) (timing, error) {
	t0 := time.Now()
	ds, err := policy.Compute(m, node)
	if err != nil {
		return timing{}, err
	}
	t1 := time.Now()
	st, err := e.Apply(ds)
	return timing{compute: t1.Sub(t0), apply: time.Since(t1), stats: st}, err
}

func newNS() (ns.NetNS, func(), error) {
	n, err := testutils.NewNS()
	if err != nil {
		return nil, nil, fmt.Errorf("create a network namespace: %w", err)
	}
	return n, func() { _ = n.Close(); _ = testutils.UnmountNS(n) }, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func run(nEP, nPol, rounds int, tputTime time.Duration) error {
	host, done, err := newNS()
	if err != nil {
		return err
	}
	defer done()
	e, err := nftpolicy.New(nftpolicy.Config{NetNS: int(host.Fd())})
	if err != nil {
		return err
	}
	m := benchModel(nEP, nPol)

	first, err := step(e, m)
	if err != nil {
		return fmt.Errorf("first apply: %w", err)
	}
	counts, err := e.Counts()
	if err != nil {
		return err
	}

	change, err := policyChange(e, m, nPol, rounds)
	if err != nil {
		return fmt.Errorf("policy change: %w", err)
	}
	// One new endpoint with labels already in use, then removed again.
	var add []timing
	for r := 0; r < rounds; r++ {
		m.Endpoints = append(m.Endpoints, benchEndpoint(nEP))
		t, err := step(e, m)
		if err != nil {
			return fmt.Errorf("new endpoint: %w", err)
		}
		add = append(add, t)
		m.Endpoints = m.Endpoints[:nEP]
		if _, err := step(e, m); err != nil {
			return err
		}
	}
	inc, err := incremental(e, m, nEP, rounds)
	if err != nil {
		return fmt.Errorf("new endpoint, incremental: %w", err)
	}
	afterAdd, _ := e.Counts()
	// A restarted daemon: reads the kernel, finds nothing to do.
	var restart []timing
	for r := 0; r < rounds; r++ {
		fresh, _ := nftpolicy.New(nftpolicy.Config{NetNS: int(host.Fd())})
		t, err := step(fresh, m)
		if err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		restart = append(restart, t)
	}
	// Re-applying the same state.
	var same []timing
	for r := 0; r < rounds; r++ {
		t, err := step(e, m)
		if err != nil {
			return err
		}
		same = append(same, t)
	}

	fmt.Printf("## Policy data plane: %d endpoints, %d policies on one host\n\n", nEP, nPol)
	fmt.Printf("nftables table `inet %s`: %d rules in %d chains, %d sets, %d set/map elements (selector sets, verdict maps, anti-spoofing).\n",
		nftpolicy.DefaultTable, counts.Rules, counts.Chains, counts.Sets, counts.Elements)
	fmt.Printf("Medians of %d rounds; compute is policy.Compute (the whole desired state), apply is one nftables transaction;\n"+
		"incremental: compute is policy.Tracker.Update (the endpoint's sets and entries), apply is Enforcer.ApplyDelta.\n\n", rounds)
	fmt.Println("| operation | compute | apply | total | kernel changes |")
	fmt.Println("|---|---:|---:|---:|---|")
	row := func(name string, t timing) {
		fmt.Printf("| %s | %s | %s | %s | %s |\n", name, ms(t.compute), ms(t.apply), ms(t.compute+t.apply), t.stats)
	}
	row("first apply (empty kernel)", first)
	if len(change) > 0 {
		row("one policy change (a port)", median(change))
	}
	row("one new endpoint (known labels)", median(add))
	row("one new endpoint (known labels), incremental", median(inc))
	row("restarted daemon (read kernel, converge)", median(restart))
	row("same state again", median(same))
	fmt.Printf("\nRules before/after a new endpoint: %d / %d.\n\n", counts.Rules, afterAdd.Rules)

	if err := scaling(); err != nil {
		return err
	}
	if tputTime > 0 {
		if err := throughput(m, tputTime); err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
	}
	return nil
}

// policyChange changes a port of one policy, back and forth (nothing
// without policies).
func policyChange(e *nftpolicy.Enforcer, m *policy.Model, nPol, rounds int) ([]timing, error) {
	var out []timing
	mid := nPol / 2
	for r := 0; r < rounds && nPol > 0; r++ {
		m.NetworkPolicies[mid] = benchPolicy(mid, 6000+r)
		t, err := step(e, m)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// incremental measures what the policy agent does for a Join of an
// endpoint whose chains are in use: policy.Tracker's update and the
// enforcer's ApplyDelta (the endpoint added, then removed, each round).
func incremental(e *nftpolicy.Enforcer, m *policy.Model, nEP, rounds int) ([]timing, error) {
	tr, ds, err := policy.NewTracker(m, node)
	if err != nil {
		return nil, err
	}
	if _, err := e.Apply(ds); err != nil {
		return nil, err
	}
	step := func(ep *policy.Endpoint) (timing, error) {
		t0 := time.Now()
		d, err := tr.Update(map[string]*policy.Endpoint{benchEndpoint(nEP).Name: ep})
		if err != nil {
			return timing{}, err
		}
		t1 := time.Now()
		st, err := e.ApplyDelta(d)
		return timing{compute: t1.Sub(t0), apply: time.Since(t1), stats: st}, err
	}
	var out []timing
	for r := 0; r < rounds; r++ {
		ep := benchEndpoint(nEP)
		t, err := step(&ep)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		if _, err := step(nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scaling prints the kernel rule count as endpoints and policies grow.
func scaling() error {
	fmt.Println("### Kernel rules as the host grows")
	fmt.Println()
	fmt.Println("Calico-style per-endpoint chains would need one jump per endpoint and policy that selects it (last column).")
	fmt.Println()
	fmt.Println("| endpoints | policies | rules | chains | elements | endpoint × selecting-policy pairs |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	for _, c := range [][2]int{{250, 100}, {500, 100}, {1000, 100}, {2000, 100}, {1000, 25}, {1000, 50}, {1000, 200}} {
		host, done, err := newNS()
		if err != nil {
			return err
		}
		e, _ := nftpolicy.New(nftpolicy.Config{NetNS: int(host.Fd())})
		m := benchModel(c[0], c[1])
		ds, err := policy.Compute(m, node)
		if err != nil {
			done()
			return err
		}
		if _, err := e.Apply(ds); err != nil {
			done()
			return err
		}
		cnt, err := e.Counts()
		done()
		if err != nil {
			return err
		}
		pairs := 0
		for _, ep := range ds.Endpoints {
			pairs += len(ep.Ingress.Policies) + len(ep.Egress.Policies)
		}
		fmt.Printf("| %d | %d | %d | %d | %d | %d |\n", c[0], c[1], cnt.Rules, cnt.Chains, cnt.Elements, pairs)
	}
	fmt.Println()
	return nil
}

// throughput measures one TCP stream between two endpoints of the same
// host, through the host's routing, with the full policy table (plus a
// policy that selects the receiver) and with no table.
func throughput(m *policy.Model, d time.Duration) error {
	host, done, err := newNS()
	if err != nil {
		return err
	}
	defer done()
	addrs := []string{"10.65.0.1", "10.65.0.2"}
	ifaces := []string{"calitput00001", "calitput00002"}
	ctrs, cdone, err := tputEndpoints(host, addrs, ifaces)
	defer cdone()
	if err != nil {
		return err
	}
	addTputPolicy(m, addrs, ifaces)
	e, _ := nftpolicy.New(nftpolicy.Config{NetNS: int(host.Fd())})
	ds, err := policy.Compute(m, node)
	if err != nil {
		return err
	}
	ln, err := tputSink(ctrs[1])
	if err != nil {
		return err
	}
	defer ln.Close()
	off, on, err := tputRounds(e, ds, func() (float64, error) { return tputStream(ctrs[0], addrs[1], d) })
	if err != nil {
		return err
	}
	fmt.Printf("### Same-host throughput (one TCP stream, %s per run, endpoint to endpoint through the host)\n\n", d)
	fmt.Println("| policy | Gbit/s (median) | runs |")
	fmt.Println("|---|---:|---|")
	fmt.Printf("| off (no table) | %.2f | %s |\n", medianOf(off), samples(off))
	fmt.Printf("| on (%d endpoints, %d policies in the table; the receiver selected by one) | %.2f | %s |\n\n",
		len(ds.Endpoints), len(m.NetworkPolicies)+len(m.GlobalNetworkPolicies), medianOf(on), samples(on))
	// With policy on, a connection policy forbids must not get through.
	return ctrs[1].Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addrs[0]+":5201", 500*time.Millisecond)
		if err == nil {
			c.Close()
			return errors.New("a connection the policy forbids got through")
		}
		return nil
	})
}

// nsSh runs a shell command in the network namespace n.
func nsSh(n ns.NetNS, cmd string) error {
	out, err := exec.Command("nsenter", "--net="+n.Path(), "sh", "-c", cmd).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", cmd, err, out)
	}
	return nil
}

// tputEndpoints gives host an uplink and forwarding, and makes one
// container namespace per address, wired as the driver wires an endpoint
// (veth ifaces[i], proxy ARP, a /32 route, 169.254.1.1 as gateway). done
// removes the containers' namespaces, also after an error.
func tputEndpoints(host ns.NetNS, addrs, ifaces []string) (ctrs []ns.NetNS, done func(), err error) {
	var dones []func()
	done = func() {
		for i := len(dones) - 1; i >= 0; i-- {
			dones[i]()
		}
	}
	if err := nsSh(host, "ip link set lo up; ip link add uplink0 type veth peer name uplink1; ip addr add 10.99.99.1/24 dev uplink0; "+
		"ip link set uplink0 up; ip link set uplink1 up; ip route add default via 10.99.99.2; sysctl -qw net.ipv4.ip_forward=1"); err != nil {
		return nil, done, err
	}
	for i := range addrs {
		c, cdone, err := newNS()
		if err != nil {
			return nil, done, err
		}
		dones = append(dones, cdone)
		ctrs = append(ctrs, c)
		tmp := fmt.Sprintf("tmptput%d", i)
		if err := nsSh(host, fmt.Sprintf("ip link add %s type veth peer name %s; ip link set %s address ee:ee:ee:ee:ee:ee; "+
			"sysctl -qw net.ipv4.conf.%s.proxy_arp=1 net.ipv4.neigh.%s.proxy_delay=0; ip link set %s up; ip link set %s netns %s; ip route add %s/32 dev %s",
			ifaces[i], tmp, ifaces[i], ifaces[i], ifaces[i], ifaces[i], tmp, c.Path(), addrs[i], ifaces[i])); err != nil {
			return nil, done, err
		}
		if err := nsSh(c, fmt.Sprintf("ip link set lo up; ip link set %s name cali0; ip addr add %s/32 dev cali0; ip link set cali0 up; "+
			"ip route add 169.254.1.1 dev cali0 scope link; ip route add default via 169.254.1.1 dev cali0", tmp, addrs[i])); err != nil {
			return nil, done, err
		}
	}
	return ctrs, done, nil
}

// addTputPolicy adds the two endpoints to the model, and a policy that
// selects the receiver and lets only the sender in.
func addTputPolicy(m *policy.Model, addrs, ifaces []string) {
	m.Profiles = append(m.Profiles, policy.DefaultProfile("tput", "calico/network", "tput", false))
	for i := range addrs {
		m.Endpoints = append(m.Endpoints, policy.Endpoint{Name: ifaces[i], Node: node, Iface: ifaces[i], IPs: []netip.Addr{netip.MustParseAddr(addrs[i])},
			Labels: map[string]string{"role": fmt.Sprintf("tput%d", i)}, Profiles: []string{"tput"}})
	}
	m.GlobalNetworkPolicies = append(m.GlobalNetworkPolicies, api.GlobalNetworkPolicy{Name: "tput", PolicySpec: api.PolicySpec{
		Selector: "role == 'tput1'", Ingress: []api.Rule{{Action: api.Allow, Protocol: "TCP",
			Source: api.EntityRule{Selector: "role == 'tput0'"}, Destination: api.EntityRule{Ports: []api.Port{"5201"}}}}}})
}

// tputSink listens on port 5201 in ctr and discards whatever it is sent,
// until the listener is closed.
func tputSink(ctr ns.NetNS) (net.Listener, error) {
	var ln net.Listener
	err := ctr.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", ":5201")
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	return ln, nil
}

// tputStream sends from ctr to addr:5201 for d and returns the rate in
// Gbit/s.
func tputStream(ctr ns.NetNS, addr string, d time.Duration) (float64, error) {
	var gbps float64
	err := ctr.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr+":5201", 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		var sent int64
		start := time.Now()
		for time.Since(start) < d {
			n, err := c.Write(buf)
			sent += int64(n)
			if err != nil {
				return err
			}
		}
		gbps = float64(sent*8) / time.Since(start).Seconds() / 1e9
		return nil
	})
	return gbps, err
}

// tputRounds measures three times without the table, then with it,
// interleaved, and leaves the table applied.
func tputRounds(e *nftpolicy.Enforcer, ds *policy.DesiredState, measure func() (float64, error)) (off, on []float64, err error) {
	for round := 0; round < 3; round++ {
		if err := e.Remove(); err != nil {
			return nil, nil, err
		}
		g, err := measure()
		if err != nil {
			return nil, nil, fmt.Errorf("policy off: %w", err)
		}
		off = append(off, g)
		if _, err := e.Apply(ds); err != nil {
			return nil, nil, err
		}
		if g, err = measure(); err != nil {
			return nil, nil, fmt.Errorf("policy on: %w", err)
		}
		on = append(on, g)
	}
	return off, on, nil
}

func medianOf(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }

func samples(v []float64) string {
	var out []string
	for _, g := range v {
		out = append(out, fmt.Sprintf("%.2f", g))
	}
	return strings.Join(out, ", ")
}
