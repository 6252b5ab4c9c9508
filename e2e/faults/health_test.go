//go:build e2e

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
)

// metricsAddr is where the daemon serves /metrics, /livez and /readyz in
// its namespace (the default --metrics-addr).
const metricsAddr = "127.0.0.1:9091"

// nsHTTP is an HTTP client whose connections are made inside ns.
func nsHTTP(ns string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return e2eutil.DialInNetNS("/run/netns/"+ns, network, addr, 3*time.Second)
		}}}
}

// get fetches a path of the daemon's metrics address in ns.
func get(c *http.Client, path string) (int, string, error) {
	resp, err := c.Get("http://" + metricsAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// readyz asks /readyz and decodes its answer.
func readyz(c *http.Client) (int, api.Readiness, error) {
	code, body, err := get(c, "/readyz")
	var r api.Readiness
	if err == nil {
		err = json.Unmarshal([]byte(body), &r)
	}
	return code, r, err
}

// /readyz says unready, naming the datastore, while etcd is stopped, and
// ready again once it is back; /livez answers all along; the datastore
// gauge follows.
func TestReadyzFollowsEtcd(t *testing.T) {
	begin(t)
	ns := netns(t)
	etcd, endpoint := etcdOnVeth(t, ns, "10.251.78")
	d := newDaemon(t, ns, "--etcd-endpoints", endpoint)
	d.start()
	c := nsHTTP(ns)
	steps := []struct {
		name      string
		do        func()
		ready     bool
		reachable string
	}{
		{"etcd up", func() {}, true, "1"},
		{"etcd stopped", func() {
			if err := etcd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			_ = etcd.Wait()
		}, false, "0"},
		{"etcd back", func() { etcd = restartEtcd(t, etcd) }, true, "1"},
	}
	for _, st := range steps {
		st.do()
		start := time.Now()
		var last api.Readiness
		err := eventually(45*time.Second, func() error {
			code, r, err := readyz(c)
			if err != nil {
				return err
			}
			last = r
			if r.Ready != st.ready || (code == 200) != st.ready {
				return fmt.Errorf("/readyz answered %d %+v", code, r)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: /readyz did not say ready=%v within 45s: %v", st.name, st.ready, err)
		}
		t.Logf("%s: /readyz said ready=%v after %s: %+v", st.name, st.ready, time.Since(start).Round(100*time.Millisecond), last.Checks)
		if !st.ready && !checkFails(last, "datastore", endpoint) {
			t.Errorf("%s: the datastore check does not fail naming %s: %+v", st.name, endpoint, last.Checks)
		}
		if !st.ready && checkFails(last, "sockets", "") {
			t.Errorf("%s: the sockets check fails while the sockets serve (etcd's wait spilled over?): %+v", st.name, last.Checks)
		}
		if code, body, err := get(c, "/livez"); err != nil || code != 200 || body != "ok\n" {
			t.Errorf("%s: /livez = %d %q %v", st.name, code, body, err)
		}
		_, metrics, err := get(c, "/metrics")
		if err != nil || !strings.Contains(metrics, "\ncalico_libnetwork_datastore_reachable "+st.reachable+"\n") {
			t.Errorf("%s: /metrics lacks calico_libnetwork_datastore_reachable %s (%v)", st.name, st.reachable, err)
		}
	}
}

// checkFails says whether r's check name fails with a detail naming what.
func checkFails(r api.Readiness, name, what string) bool {
	for _, c := range r.Checks {
		if c.Name == name && !c.OK && strings.Contains(c.Detail, what) {
			return true
		}
	}
	return false
}
