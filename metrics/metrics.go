// Package metrics owns the daemon's Prometheus registry: what the agents'
// passes, the Docker calls and the datastore requests tell it, and gauges
// read from the daemon's parts when scraped. No global state: the daemon
// makes one Metrics and hands it to the parts (agent.Observer,
// datastore.OpObserver, a wrapper of the plugin sockets' handlers).
package metrics

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
)

// Namespace prefixes every metric name.
const Namespace = "calico_libnetwork"

// Metrics is the daemon's registry and the metrics the parts feed.
type Metrics struct {
	Registry *prometheus.Registry

	calls     *prometheus.CounterVec
	callErrs  *prometheus.CounterVec
	callTime  *prometheus.HistogramVec
	stepTime  *prometheus.HistogramVec
	allocs    prometheus.Counter
	releases  prometheus.Counter
	dsTime    *prometheus.HistogramVec
	dsErrs    *prometheus.CounterVec
	cas       *prometheus.CounterVec
	resyncs   *prometheus.CounterVec
	applyTime *prometheus.HistogramVec
	applies   *prometheus.CounterVec
	applyErrs *prometheus.CounterVec
	lag       *prometheus.HistogramVec
	lastOK    *prometheus.GaugeVec
	seenMu    sync.Mutex
	seenFull  map[string]bool // mirrored agents whose first full pass was seen
}

// latency buckets: from a millisecond (a route) to 10 s (a handler's
// budget is 6 s).
var latency = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// New returns a Metrics with the Go runtime's and the process's metrics
// registered too.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), seenFull: map[string]bool{}}
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.newDocker()
	m.newDatastore()
	m.newAgents()
	return m
}

func (m *Metrics) newDocker() {
	f := prometheus.NewCounterVec
	m.calls = f(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "docker", Name: "calls_total",
		Help: "Docker plugin calls answered, by socket and call."}, []string{"socket", "call"})
	m.callErrs = f(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "docker", Name: "call_errors_total",
		Help: "Docker plugin calls answered with an error, by socket and call."}, []string{"socket", "call"})
	m.callTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "docker", Name: "call_duration_seconds",
		Help: "Time to answer a Docker plugin call.", Buckets: latency}, []string{"socket", "call"})
	m.allocs = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "ipam", Name: "allocations_total",
		Help: "Addresses handed out (successful IpamDriver.RequestAddress calls)."})
	m.releases = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "ipam", Name: "releases_total",
		Help: "Addresses given back (successful IpamDriver.ReleaseAddress calls)."})
	m.stepTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "docker", Name: "call_step_duration_seconds",
		Help: "Time of one step of a network driver call (CreateEndpoint, Join, Leave, DeleteEndpoint), by call and step.", Buckets: stepLatency}, []string{"call", "step"})
	m.Registry.MustRegister(m.calls, m.callErrs, m.callTime, m.stepTime, m.allocs, m.releases)
}

// stepLatency buckets: a step can be one netlink request (tens of
// microseconds) or an etcd write.
var stepLatency = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}

// ObserveStep is the network driver's netdriver.StepObserver.
func (m *Metrics) ObserveStep(call, step string, took time.Duration) {
	m.stepTime.WithLabelValues(call, step).Observe(took.Seconds())
}

func (m *Metrics) newDatastore() {
	m.dsTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "datastore", Name: "operation_duration_seconds",
		Help: "Time of a request to etcd, by kind (get, put, delete, txn) and record.", Buckets: latency}, []string{"op", "record"})
	m.dsErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "datastore", Name: "operation_errors_total",
		Help: "Requests to etcd that failed, by kind and record."}, []string{"op", "record"})
	m.cas = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "datastore", Name: "cas_total",
		Help: "Compare-and-swap transactions by record and result: applied, or conflict (read again and retried; on blocks, handles and affinities these are IPAM's conflicts)."},
		[]string{"record", "result"})
	m.resyncs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "datastore", Name: "watch_resyncs_total",
		Help: "Full passes of a mirrored agent after its first (a re-read snapshot or a periodic resync), by agent."}, []string{"agent"})
	m.Registry.MustRegister(m.dsTime, m.dsErrs, m.cas, m.resyncs)
}

func (m *Metrics) newAgents() {
	m.applyTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "dataplane", Name: "apply_duration_seconds",
		Help: "Time of one pass of an agent (routing, policy, hostprotect, repair, ...): the data plane's apply time.", Buckets: latency}, []string{"agent"})
	m.applies = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "dataplane", Name: "applies_total",
		Help: "Passes of an agent."}, []string{"agent"})
	m.applyErrs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Subsystem: "dataplane", Name: "apply_failures_total",
		Help: "Passes of an agent that failed."}, []string{"agent"})
	m.lag = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: "agent", Name: "change_to_kernel_seconds",
		Help:    "Time from a change in etcd reaching the daemon to the end of the pass that applied it, by agent (policy: a policy or endpoint change; routing: a block claimed to its route).",
		Buckets: latency}, []string{"agent"})
	m.lastOK = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "agent", Name: "last_success_timestamp_seconds",
		Help: "When an agent's last successful pass began (unix seconds)."}, []string{"agent"})
	m.Registry.MustRegister(m.applyTime, m.applies, m.applyErrs, m.lag, m.lastOK)
}

// Observe implements agent.Observer.
func (m *Metrics) Observe(p agent.Pass) {
	m.applies.WithLabelValues(p.Agent).Inc()
	m.applyTime.WithLabelValues(p.Agent).Observe(p.Took.Seconds())
	if p.Err != nil {
		m.applyErrs.WithLabelValues(p.Agent).Inc()
	} else {
		m.lastOK.WithLabelValues(p.Agent).Set(float64(p.At.UnixNano()) / 1e9)
	}
	if p.Lag > 0 {
		m.lag.WithLabelValues(p.Agent).Observe(p.Lag.Seconds())
	}
	if p.Mirrored && p.Full {
		m.seenMu.Lock()
		again := m.seenFull[p.Agent]
		m.seenFull[p.Agent] = true
		m.seenMu.Unlock()
		if again {
			m.resyncs.WithLabelValues(p.Agent).Inc()
		}
	}
}

// ObserveOp implements datastore.OpObserver.
func (m *Metrics) ObserveOp(op, record string, took time.Duration, err error) {
	m.dsTime.WithLabelValues(op, record).Observe(took.Seconds())
	if err != nil {
		m.dsErrs.WithLabelValues(op, record).Inc()
	}
}

// ObserveCAS implements datastore.OpObserver.
func (m *Metrics) ObserveCAS(record string, applied bool) {
	result := "applied"
	if !applied {
		result = "conflict"
	}
	m.cas.WithLabelValues(record, result).Inc()
}

// ObserveCall counts one Docker plugin call (path as Docker sends it,
// "/IpamDriver.RequestAddress").
func (m *Metrics) ObserveCall(socket, path string, took time.Duration, failed bool) {
	call := strings.TrimPrefix(path, "/")
	m.calls.WithLabelValues(socket, call).Inc()
	m.callTime.WithLabelValues(socket, call).Observe(took.Seconds())
	if failed {
		m.callErrs.WithLabelValues(socket, call).Inc()
		return
	}
	switch call {
	case "IpamDriver.RequestAddress":
		m.allocs.Inc()
	case "IpamDriver.ReleaseAddress":
		m.releases.Inc()
	}
}
