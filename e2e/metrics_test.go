//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricsURL is the suite daemon's default --metrics-addr: the suite runs
// in the daemon's namespace (the sandbox's), so its loopback is ours.
const metricsURL = "http://127.0.0.1:9091"

// scrapeMetrics reads /metrics as Prometheus does and sums each series by
// name{labels} and by bare name (all its series together).
func scrapeMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(metricsURL + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s/metrics: %v", metricsURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics answered %d: %s", resp.StatusCode, b)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		series := l[:i]
		out[series] = v
		if name, _, ok := strings.Cut(series, "{"); ok {
			out[name] += v
		}
	}
	return out
}

func callSeries(metric, socket, call string) string {
	return fmt.Sprintf(`calico_libnetwork_docker_%s{call="%s",socket="%s"}`, metric, call, socket)
}

// delta is what a series should have moved by between two scrapes.
type delta struct {
	series string
	by     float64
}

func checkDeltas(before, after map[string]float64, want []delta) []string {
	var bad []string
	for _, d := range want {
		if got := after[d.series] - before[d.series]; got != d.by {
			bad = append(bad, fmt.Sprintf("%s moved by %g (%g -> %g), want %g", d.series, got, before[d.series], after[d.series], d.by))
		}
	}
	return bad
}

// After a docker run and a docker rm, read over HTTP from the running
// daemon: the Docker call counters moved by one call each, the IPAM
// counters and gauges and the veth and policy endpoint gauges went up by
// one and back, and the driver's steps were timed.
func TestMetricsFollowDockerRunAndRm(t *testing.T) {
	begin(t)
	net := newNetwork(t)
	gauges := func(by float64) []delta {
		return []delta{
			{"calico_libnetwork_ipam_host_addresses_in_use", by},
			{"calico_libnetwork_dataplane_veths", by},
			{"calico_libnetwork_policy_endpoints", by},
		}
	}
	var c *container
	steps := []struct {
		name string
		do   func()
		want []delta
	}{
		{"docker run", func() { c = runContainer(t, net) }, append(gauges(1),
			delta{callSeries("calls_total", "ipam", "IpamDriver.RequestAddress"), 1},
			delta{callSeries("calls_total", "network", "NetworkDriver.CreateEndpoint"), 1},
			delta{callSeries("calls_total", "network", "NetworkDriver.Join"), 1},
			delta{callSeries("call_duration_seconds_count", "network", "NetworkDriver.Join"), 1},
			delta{callSeries("call_errors_total", "network", "NetworkDriver.Join"), 0},
			delta{`calico_libnetwork_docker_call_step_duration_seconds_count{call="Join",step="veth"}`, 1},
			delta{"calico_libnetwork_ipam_allocations_total", 1},
			delta{"calico_libnetwork_ipam_releases_total", 0},
		)},
		{"docker rm", func() { docker(t, "rm", "-f", c.name) }, append(gauges(-1),
			delta{callSeries("calls_total", "network", "NetworkDriver.Leave"), 1},
			delta{`calico_libnetwork_docker_call_step_duration_seconds_count{call="Leave",step="veth-delete"}`, 1},
			delta{callSeries("calls_total", "network", "NetworkDriver.DeleteEndpoint"), 1},
			delta{callSeries("calls_total", "ipam", "IpamDriver.ReleaseAddress"), 1},
			delta{callSeries("call_errors_total", "ipam", "IpamDriver.ReleaseAddress"), 0},
			delta{"calico_libnetwork_ipam_releases_total", 1},
			delta{"calico_libnetwork_ipam_allocations_total", 0},
		)},
	}
	for _, st := range steps {
		before := scrapeMetrics(t)
		st.do()
		var bad []string
		deadline := time.Now().Add(15 * time.Second) // the gauges follow the watch
		for {
			bad = checkDeltas(before, scrapeMetrics(t), st.want)
			if len(bad) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, b := range bad {
			t.Errorf("after %s: %s", st.name, b)
		}
	}
	after := scrapeMetrics(t)
	for _, name := range []string{"calico_libnetwork_node_up", "calico_libnetwork_datastore_reachable", "calico_libnetwork_ready"} {
		if after[name] != 1 {
			t.Errorf("%s = %g, want 1", name, after[name])
		}
	}
	if after["calico_libnetwork_ipam_blocks_owned"] < 1 {
		t.Errorf("calico_libnetwork_ipam_blocks_owned = %g, want at least the block the container's address came from", after["calico_libnetwork_ipam_blocks_owned"])
	}
	for _, path := range []string{"/livez", "/readyz"} {
		resp, err := http.Get(metricsURL + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s answered %d: %s", path, resp.StatusCode, b)
		}
	}
}
