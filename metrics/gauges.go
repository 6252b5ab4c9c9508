package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sources are the daemon's parts read when the metrics are scraped; a nil
// one is not exported.
type Sources struct {
	DatastoreReachable func() bool
	NodeUp             func() bool      // this daemon holds its node's claim
	LastHeartbeat      func() time.Time // the claim's lease last renewed
	Routes             func() int       // routes to other hosts' blocks wanted
	Peers              func() (all, live int)
	Veths              func() (int, error)
	NFTables           func() (NFTCounts, error)
	Policy             func() (endpoints, policies int)
	GCCollected        func() uint64
	Ready              func() bool
	DataPath           func() DataPathCounts
}

// DataPathCounts is the eBPF redirect path's state.
type DataPathCounts struct {
	On                         bool
	Endpoints, Uplinks         int
	ToEndpoint, Out, Passed    uint64
	Decapsulated, Encapsulated uint64 // of ToEndpoint, of Out: VXLAN done by the program
}

// NFTCounts is the size of the policy table.
type NFTCounts struct {
	Chains, Rules, Sets, Elements int
}

// gauge is one exported reading.
type gauge struct {
	name, help string
	read       func() float64
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Watch registers the sources' readings.
func (m *Metrics) Watch(s Sources) {
	var gs []gauge
	add := func(ok bool, name, help string, read func() float64) {
		if ok {
			gs = append(gs, gauge{name, help, read})
		}
	}
	add(s.DatastoreReachable != nil, "datastore_reachable", "1 while etcd answers the daemon.", func() float64 { return b2f(s.DatastoreReachable()) })
	add(s.NodeUp != nil, "node_up", "1 while this daemon holds its node's claim (its liveness, on an etcd lease).", func() float64 { return b2f(s.NodeUp()) })
	add(s.LastHeartbeat != nil, "node_last_heartbeat_timestamp_seconds", "When the node claim's lease was last renewed (unix seconds).", func() float64 {
		if t := s.LastHeartbeat(); !t.IsZero() {
			return float64(t.UnixNano()) / 1e9
		}
		return 0
	})
	add(s.Routes != nil, "routing_routes", "Routes to other hosts' blocks (and this host's blackholes) the route sync wants.", func() float64 { return float64(s.Routes()) })
	add(s.Peers != nil, "routing_peers", "Other nodes known to the route sync.", func() float64 { n, _ := s.Peers(); return float64(n) })
	add(s.Peers != nil, "routing_peers_live", "Other nodes whose daemon holds its claim.", func() float64 { _, n := s.Peers(); return float64(n) })
	add(s.Veths != nil, "dataplane_veths", "Container veths on this host (cali..., with our alias).", func() float64 { n, _ := s.Veths(); return float64(n) })
	add(s.Policy != nil, "policy_endpoints", "This host's endpoints the policy agent enforces.", func() float64 { n, _ := s.Policy(); return float64(n) })
	add(s.Policy != nil, "policy_policies", "Policy resources in force (profiles, network and global network policies).", func() float64 { _, n := s.Policy(); return float64(n) })
	if s.DataPath != nil {
		read := memo(func() (DataPathCounts, error) { return s.DataPath(), nil })
		dp := func() DataPathCounts { c, _ := read(); return c }
		add(true, "dataplane_bpf_redirect_on", "1 while the eBPF redirect path is loaded (--bpf-redirect auto on a kernel that can run it).", func() float64 { return b2f(dp().On) })
		add(true, "dataplane_bpf_endpoints", "Endpoint veths the eBPF redirect path is on.", func() float64 { return float64(dp().Endpoints) })
		add(true, "dataplane_bpf_uplinks", "Uplinks and tunnel devices the eBPF redirect path is on.", func() float64 { return float64(dp().Uplinks) })
		for _, c := range []struct {
			name, help string
			pick       func(DataPathCounts) uint64
		}{
			{"to_endpoint", "Packets the eBPF path redirected straight into a container.", func(c DataPathCounts) uint64 { return c.ToEndpoint }},
			{"out", "Packets the eBPF path redirected out of an uplink, a tunnel or to a container's host-side veth.", func(c DataPathCounts) uint64 { return c.Out }},
			{"decapsulated", "Of the packets redirected into a container, those the eBPF path took out of VXLAN itself.", func(c DataPathCounts) uint64 { return c.Decapsulated }},
			{"encapsulated", "Of the packets redirected out, those the eBPF path put into VXLAN itself (past vxlan.calico).", func(c DataPathCounts) uint64 { return c.Encapsulated }},
			{"passed", "Packets the eBPF path's programs left to the kernel's path (not established TCP, not marked by policy, SYN/FIN/RST, no neighbour yet...).", func(c DataPathCounts) uint64 { return c.Passed }},
		} {
			m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "dataplane_bpf", Name: c.name + "_packets_total", Help: c.help},
				func() float64 { return float64(c.pick(dp())) }))
		}
	}
	add(s.Ready != nil, "ready", "1 while /readyz answers ready.", func() float64 { return b2f(s.Ready()) })
	if s.NFTables != nil {
		s.NFTables = memo(s.NFTables) // one kernel read per scrape, not four
		for _, g := range []struct {
			name string
			pick func(NFTCounts) int
		}{{"chains", func(c NFTCounts) int { return c.Chains }}, {"rules", func(c NFTCounts) int { return c.Rules }},
			{"sets", func(c NFTCounts) int { return c.Sets }}, {"set_elements", func(c NFTCounts) int { return c.Elements }}} {
			add(true, "dataplane_nftables_"+g.name, "The policy table's "+g.name+", read from the kernel.", func() float64 { c, _ := s.NFTables(); return float64(g.pick(c)) })
		}
	}
	for _, g := range gs {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: g.name, Help: g.help}, g.read))
	}
	if s.GCCollected != nil {
		m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "ipam", Name: "garbage_collected_total",
			Help: "Records the garbage collector released (addresses, endpoints, blocks, handles)."}, func() float64 { return float64(s.GCCollected()) }))
	}
}

// memo keeps read's answer for a second.
func memo[T any](read func() (T, error)) func() (T, error) {
	var mu sync.Mutex
	var at time.Time
	var v T
	var err error
	return func() (T, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) > time.Second {
			v, err = read()
			at = time.Now()
		}
		return v, err
	}
}
