package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// scrape reads the metrics over HTTP, as Prometheus does.
func scrape(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func wantLines(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(body, "\n"+l+"\n") {
			t.Errorf("metrics lack the line %q", l)
		}
	}
}

func TestMetricsOverHTTP(t *testing.T) {
	m := New()
	ready := true
	srv := httptest.NewServer(m.Handler(func(context.Context) api.Readiness {
		return api.Readiness{Ready: ready, Checks: []api.ReadyCheck{{Name: "datastore", OK: ready}}}
	}))
	defer srv.Close()

	// Docker calls through the wrapper: one good, one failed.
	calls := m.WrapCalls("ipam", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/IpamDriver.ReleaseAddress" {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	for _, p := range []string{"/IpamDriver.RequestAddress", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress"} {
		calls.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", p, nil))
	}
	// Agent passes: a snapshot, a change, a failure, a resync.
	for _, p := range []agent.Pass{
		{Agent: "routing", Mirrored: true, Full: true, Took: time.Millisecond},
		{Agent: "routing", Mirrored: true, Took: time.Millisecond, Lag: 30 * time.Millisecond},
		{Agent: "routing", Mirrored: true, Err: errors.New("no"), Took: time.Millisecond},
		{Agent: "routing", Mirrored: true, Full: true, Took: time.Millisecond},
	} {
		m.Observe(p)
	}
	m.ObserveOp(datastore.OpTxn, "blocks", 2*time.Millisecond, nil)
	m.ObserveCAS("blocks", false)
	m.ObserveCAS("blocks", true)
	m.Watch(Sources{DatastoreReachable: func() bool { return true }, Routes: func() int { return 3 }})

	code, body := scrape(t, srv, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics answered %d", code)
	}
	wantLines(t, body,
		`calico_libnetwork_docker_calls_total{call="IpamDriver.RequestAddress",socket="ipam"} 2`,
		`calico_libnetwork_docker_call_errors_total{call="IpamDriver.ReleaseAddress",socket="ipam"} 1`,
		`calico_libnetwork_docker_call_duration_seconds_count{call="IpamDriver.RequestAddress",socket="ipam"} 2`,
		`calico_libnetwork_ipam_allocations_total 2`,
		`calico_libnetwork_ipam_releases_total 0`,
		`calico_libnetwork_dataplane_applies_total{agent="routing"} 4`,
		`calico_libnetwork_dataplane_apply_failures_total{agent="routing"} 1`,
		`calico_libnetwork_datastore_watch_resyncs_total{agent="routing"} 1`,
		`calico_libnetwork_agent_change_to_kernel_seconds_count{agent="routing"} 1`,
		`calico_libnetwork_agent_change_to_kernel_seconds_bucket{agent="routing",le="0.025"} 0`,
		`calico_libnetwork_agent_change_to_kernel_seconds_bucket{agent="routing",le="0.05"} 1`,
		`calico_libnetwork_datastore_cas_total{record="blocks",result="conflict"} 1`,
		`calico_libnetwork_datastore_operation_duration_seconds_count{op="txn",record="blocks"} 1`,
		`calico_libnetwork_datastore_reachable 1`,
		`calico_libnetwork_routing_routes 3`,
	)
	for _, l := range strings.Split(body, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "calico_libnetwork_") && !strings.HasPrefix(l, "go_") &&
			!strings.HasPrefix(l, "process_") && !strings.HasPrefix(l, "promhttp_") {
			t.Errorf("metric without our prefix: %s", l)
		}
	}

	if code, body := scrape(t, srv, "/livez"); code != 200 || body != "ok\n" {
		t.Errorf("/livez = %d %q", code, body)
	}
	if code, body := scrape(t, srv, "/readyz"); code != 200 || !strings.Contains(body, `"ready":true`) {
		t.Errorf("/readyz while ready = %d %s", code, body)
	}
	ready = false
	if code, body := scrape(t, srv, "/readyz"); code != 503 || !strings.Contains(body, `"ready":false`) {
		t.Errorf("/readyz while not ready = %d %s", code, body)
	}
}

func TestIPAMStats(t *testing.T) {
	m := New()
	s := m.NewIPAMStats("h1")
	pool := func(name, cidr string) datastore.KV {
		return datastore.KV{Key: api.PoolsPrefix + name, Value: []byte(`{"name":"` + name + `","cidr":"` + cidr + `","blockSize":26}`)}
	}
	block := func(cidr, affinity string, holders ...string) datastore.KV {
		allocs := make([]string, 4)
		for i := range allocs {
			allocs[i] = "null"
			if i < len(holders) {
				allocs[i] = `{"host":"` + holders[i] + `","handle":"x"}`
			}
		}
		return datastore.KV{Key: api.BlocksPrefix + strings.ReplaceAll(cidr, "/", "-"),
			Value: []byte(`{"cidr":"` + cidr + `","affinity":"` + affinity + `","allocations":[` + strings.Join(allocs, ",") + `]}`)}
	}
	s.Reset([]datastore.KV{pool("p1", "10.10.0.0/16"), pool("p2", "10.20.0.0/16"),
		block("10.10.0.0/26", "h1", "h1", "h1"), block("10.10.0.64/26", "h2", "h2", "h1"), block("10.20.0.0/26", "h1")})
	if err := s.Apply(true); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler(func(context.Context) api.Readiness { return api.Readiness{Ready: true} }))
	defer srv.Close()
	_, body := scrape(t, srv, "/metrics")
	wantLines(t, body,
		`calico_libnetwork_ipam_blocks_owned 2`,
		`calico_libnetwork_ipam_addresses_in_use{pool="p1"} 4`,
		`calico_libnetwork_ipam_host_addresses_in_use{pool="p1"} 3`,
		`calico_libnetwork_ipam_addresses_in_use{pool="p2"} 0`,
		`calico_libnetwork_ipam_blocks{pool="p1"} 2`,
	)
	// A release (the block rewritten) and a deleted pool move the gauges.
	s.Put(block("10.10.0.0/26", "h1", "h1").Key, block("10.10.0.0/26", "h1", "h1").Value)
	s.Delete(api.PoolsPrefix + "p2")
	s.Delete(block("10.20.0.0/26", "").Key)
	_ = s.Apply(false)
	_, body = scrape(t, srv, "/metrics")
	wantLines(t, body, `calico_libnetwork_ipam_addresses_in_use{pool="p1"} 3`, `calico_libnetwork_ipam_blocks_owned 1`)
	if strings.Contains(body, `pool="p2"`) {
		t.Errorf("a deleted pool's series stayed:\n%s", body)
	}
}
