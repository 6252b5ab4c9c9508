package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// testNow is the fixed clock of every test.
var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// harness runs calicoctl against a real embedded etcd.
type harness struct {
	t         *testing.T
	store     *datastore.Store
	env       map[string]string
	dataDir   string
	pluginDir string
	cfgFile   string // the default config file (absent unless written)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	s := testetcd.Start(t)
	h := &harness{
		t: t, store: s,
		env:       map[string]string{"ETCD_ENDPOINTS": s.Endpoints()[0]},
		dataDir:   t.TempDir(),
		pluginDir: shortTempDir(t),
	}
	h.cfgFile = filepath.Join(t.TempDir(), "calicoctl.cfg")
	return h
}

// shortTempDir is a temporary directory with a short path: unix socket
// paths are limited to 108 bytes.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type result struct {
	out, err string
	code     int
}

// run runs calicoctl with args and stdin.
func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	var out, errb bytes.Buffer
	env := &Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
		Getenv:            func(k string) string { return h.env[k] },
		Now:               func() time.Time { return testNow },
		Hostname:          func() (string, error) { return "host-1", nil },
		DefaultConfigFile: h.cfgFile,
		DefaultDataDir:    h.dataDir,
		DefaultPluginDir:  h.pluginDir,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Main(ctx, args, env)
	return result{out: out.String(), err: errb.String(), code: code}
}

// ok runs calicoctl and fails the test unless it succeeds.
func (h *harness) ok(stdin string, args ...string) string {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != 0 {
		h.t.Fatalf("calicoctl %s: exit %d, stderr: %s", strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

// fail runs calicoctl, expects exit 1 with a one-line error containing
// every one of want, and returns the error line.
func (h *harness) fail(stdin string, args []string, want ...string) string {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != 1 {
		h.t.Fatalf("calicoctl %s: exit %d, want 1; stdout: %s stderr: %s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	assertOneLine(h.t, r.err)
	for _, w := range want {
		if !strings.Contains(r.err, w) {
			h.t.Errorf("calicoctl %s: error %q does not contain %q", strings.Join(args, " "), strings.TrimSpace(r.err), w)
		}
	}
	return strings.TrimSpace(r.err)
}

func assertOneLine(t *testing.T, s string) {
	t.Helper()
	s = strings.TrimSuffix(s, "\n")
	if s == "" || strings.Contains(s, "\n") {
		t.Errorf("stderr is not one line: %q", s)
	}
	for _, bad := range []string{"Usage:", "goroutine ", "panic", "Flags:"} {
		if strings.Contains(s, bad) {
			t.Errorf("stderr holds %q: %q", bad, s)
		}
	}
}

var rvRE = regexp.MustCompile(`("?resourceVersion"?: )"\d+"`)

// golden compares got with testdata/name.golden (rewritten with -update).
// Resource versions are masked: they are etcd revisions.
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = rvRE.ReplaceAllString(got, `$1"<rv>"`)
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
		t.Fatalf("read golden file (run go test ./ctl -update to create it): %v", err)
	}
	if string(want) != got {
		t.Errorf("output differs from %s (go test ./ctl -update rewrites it)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

// addPool writes a pool through the same code calicoctl uses.
func (h *harness) addPool(name, cidr string, blockSize int) {
	h.t.Helper()
	p := api.IPPool{Name: name, CIDR: cidr, BlockSize: blockSize}
	if _, err := ipam.PutPool(context.Background(), h.store, p, ipam.PutCreate, 0); err != nil {
		h.t.Fatal(err)
	}
}

// allocate takes an address for handle on host with the daemon's allocator.
func (h *harness) allocate(host, handle string, family int) netip.Addr {
	h.t.Helper()
	ip, err := newAllocator(h, host).Allocate(context.Background(), handle, ipam.Selection{Family: family})
	if err != nil {
		h.t.Fatalf("allocate for %s on %s: %v", handle, host, err)
	}
	return ip
}

// addEndpoint writes an endpoint record as the network driver does.
func (h *harness) addEndpoint(host, id, network string, ip netip.Addr, mac string) {
	h.t.Helper()
	e := api.Endpoint{ID: id, NetworkID: network, Host: host, MAC: mac, HostIface: "cali" + id[:11], CreatedAt: testNow}
	if ip.Is4() {
		e.IPv4 = netip.PrefixFrom(ip, 32)
	} else {
		e.IPv6 = netip.PrefixFrom(ip, 128)
	}
	if err := h.store.Put(context.Background(), api.EndpointKey(host, id), e); err != nil {
		h.t.Fatal(err)
	}
}

// addNode writes a node record as the daemon does.
func (h *harness) addNode(n api.Node) {
	h.t.Helper()
	if err := h.store.Put(context.Background(), api.NodeKey(n.Name), n); err != nil {
		h.t.Fatal(err)
	}
}

// addClaim records a live daemon's claim on name, as a running daemon holds
// it (without a lease: the harness's daemon never dies).
func (h *harness) addClaim(name string) {
	h.t.Helper()
	c := api.NodeClaim{HostID: "test", PID: 4242, Since: testNow.Add(-time.Hour)}
	if err := h.store.Put(context.Background(), api.NodeClaimKey(name), c); err != nil {
		h.t.Fatal(err)
	}
}

// fakeDaemon serves Plugin.Activate (and Calico.Version when version is
// set) on the two plugin sockets in dir, as the daemon does.
func fakeDaemon(t *testing.T, dir, version string, sockets ...string) {
	t.Helper()
	impl := map[string]string{api.NetworkSocket: "NetworkDriver", api.IPAMSocket: "IpamDriver"}
	for _, name := range sockets {
		l, err := net.Listen("unix", filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		what := impl[name]
		mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(map[string][]string{"Implements": {what}})
		})
		if version != "" && name == api.NetworkSocket {
			mux.HandleFunc("/Calico.Version", func(w http.ResponseWriter, r *http.Request) {
				json.NewEncoder(w).Encode(map[string]string{"Version": version, "GitCommit": "abc1234"})
			})
		}
		srv := &http.Server{Handler: mux}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
	}
}

// fakeStatusDaemon serves a network socket at path that answers
// /Calico.Status with st.
func fakeStatusDaemon(t *testing.T, path string, st api.DaemonStatus) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string][]string{"Implements": {"NetworkDriver"}})
	})
	mux.HandleFunc("/Calico.Status", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(st) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// newAllocator is the daemon's allocator acting as host, logging nowhere.
func newAllocator(h *harness, host string) *ipam.Allocator {
	a := ipam.New(h.store, host, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a.SetClock(func() time.Time { return testNow })
	return a
}
