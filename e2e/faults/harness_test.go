//go:build e2e

package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// netns is a network namespace of the test's own, removed at cleanup.
func netns(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "cflt" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return name
}

// daemon is one calico-libnetwork process in a namespace of the test's own.
type daemon struct {
	t                              *testing.T
	ns, dir, dataDir, plugins, log string
	args                           []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// newDaemon prepares (but does not start) a daemon in ns with extra flags.
func newDaemon(t *testing.T, ns string, extra ...string) *daemon {
	dir := t.TempDir()
	d := &daemon{t: t, ns: ns, dir: dir, dataDir: filepath.Join(dir, "data"), plugins: filepath.Join(dir, "plugins"),
		log: filepath.Join(dir, "daemon.log")}
	d.args = append([]string{"--data-dir", d.dataDir, "--plugin-dir", d.plugins, "--nodename", "faults-" + ns,
		"--log-level", "debug", "--docker-host", "unix://" + filepath.Join(dir, "no-docker.sock")}, extra...)
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("daemon log %s ends:\n%s", d.log, tail(d.log, 40))
		}
	})
	return d
}

func (d *daemon) netSock() string  { return filepath.Join(d.plugins, "calico.sock") }
func (d *daemon) ipamSock() string { return filepath.Join(d.plugins, "calico-ipam.sock") }

// start runs the daemon and waits until both sockets answer.
func (d *daemon) start() {
	d.t.Helper()
	d.mu.Lock()
	logf, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== faults: start at %s ====\n", time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command("ip", append([]string{"netns", "exec", d.ns, bin}, d.args...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		d.mu.Unlock()
		d.t.Fatal(err)
	}
	logf.Close()
	d.cmd, d.done = cmd, make(chan struct{})
	done := d.done
	go func() { _ = cmd.Wait(); close(done) }()
	d.mu.Unlock()
	err = eventually(90*time.Second, func() error {
		select {
		case <-done:
			return fmt.Errorf("daemon exited; log:\n%s", tail(d.log, 20))
		default:
		}
		if _, _, err := post(d.netSock(), "/Plugin.Activate", nil); err != nil {
			return err
		}
		_, _, err := post(d.ipamSock(), "/Plugin.Activate", nil)
		return err
	})
	if err != nil {
		d.t.Fatalf("daemon did not serve: %v", err)
	}
}

// kill9 kills the daemon as a crash would (ip netns exec replaces itself
// with the daemon, so the process is the daemon).
func (d *daemon) kill9() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (d *daemon) kill() { d.kill9() }

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ETCD_") || strings.HasPrefix(k, "CALICO_") || k == "NODENAME" || k == "IP" || k == "DOCKER_HOST" || k == "NO_DEFAULT_POOLS" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// store opens the daemon's embedded datastore, as calicoctl does.
func (d *daemon) store() *datastore.Store {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dataDir, datastore.EndpointFile))
	if err != nil {
		d.t.Fatal(err)
	}
	ep := strings.TrimSpace(string(b))
	if target, ok := strings.CutPrefix(ep, "http://"); ok { // a loopback port inside the namespace
		ep = "http://" + nsProxy(d.t, "/run/netns/"+d.ns, target)
	} // else a unix socket in the data dir: reachable from any namespace
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{ep}})
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { s.Close() })
	return s
}

// nsProxy listens on a loopback port of the test's namespace and forwards
// each connection to addr inside the namespace at nsPath.
func nsProxy(t *testing.T, nsPath, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				up, err := e2eutil.DialInNetNS(nsPath, "tcp", addr, 3*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
				go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return l.Addr().String()
}

func post(sock, path string, body []byte) (int, []byte, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// call posts req (JSON) to a handler and decodes its answer; a non-empty
// Err/Error field is returned as an error.
func call(sock, path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	code, out, err := post(sock, path, body)
	if err != nil {
		return err
	}
	var e struct{ Err, Error string }
	_ = json.Unmarshal(out, &e)
	if msg := e.Err + e.Error; msg != "" || code != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", path, code, strings.TrimSpace(msg+" "+map[bool]string{true: string(out)}[msg == ""]))
	}
	if resp != nil {
		return json.Unmarshal(out, resp)
	}
	return nil
}

func mustCall(t *testing.T, sock, path string, req, resp any) {
	t.Helper()
	if err := call(sock, path, req, resp); err != nil {
		t.Fatal(err)
	}
}

// state is everything the daemons store except what changes by itself
// (node heartbeats, claims, the collector's leadership), for comparing
// before and after a replay.
func state(t *testing.T, s *datastore.Store) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.Read(ctx, datastore.GetPrefix(api.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range res.Reads[0] {
		k := strings.TrimPrefix(r.Key, api.Prefix)
		if strings.HasPrefix(k, "nodes/") || strings.HasPrefix(k, "nodeclaims/") || k == "gc-leader" {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s rev=%d %s", k, r.ModRevision, r.Value))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func snapshot(t *testing.T, s *datastore.Store) *ipam.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, err := ipam.LoadSnapshot(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// Docker's requests, as the engine sends them.
type (
	requestPool struct {
		AddressSpace, Pool, SubPool string
		Options                     map[string]string
		V6                          bool
	}
	requestPoolResp struct {
		PoolID, Pool string
		Data         map[string]string
	}
	requestAddress struct {
		PoolID, Address string
		Options         map[string]string
	}
	requestAddressResp struct{ Address string }
	releaseAddress     struct{ PoolID, Address string }
	ipamData           struct{ AddressSpace, Pool, Gateway string }
	createNetwork      struct {
		NetworkID string
		Options   map[string]any
		IPv4Data  []ipamData
		IPv6Data  []ipamData
	}
	endpointIface  struct{ Address, AddressIPv6, MacAddress string }
	createEndpoint struct {
		NetworkID, EndpointID string
		Interface             endpointIface
		Options               map[string]any
	}
	createEndpointResp struct{ Interface *endpointIface }
	endpointReq        struct{ NetworkID, EndpointID string }
	joinReq            struct {
		NetworkID, EndpointID, SandboxKey string
		Options                           map[string]any
	}
	joinResp struct {
		InterfaceName struct{ SrcName, DstPrefix string }
		Gateway       string
		StaticRoutes  []struct {
			Destination string
			RouteType   int
			NextHop     string
		}
	}
)

// endpointLife drives one endpoint through Docker's calls, step by step.
type endpointLife struct {
	d                    *daemon
	netID, epID, mac, ip string
	poolID               string
}

func newLife(d *daemon, netID, poolID string) *endpointLife {
	var b [32]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	return &endpointLife{d: d, netID: netID, poolID: poolID, epID: id,
		mac: fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])}
}

func (e *endpointLife) request(t *testing.T, fixed string) {
	t.Helper()
	var r requestAddressResp
	mustCall(t, e.d.ipamSock(), "/IpamDriver.RequestAddress", requestAddress{PoolID: e.poolID, Address: fixed,
		Options: map[string]string{"com.docker.network.endpoint.macaddress": e.mac}}, &r)
	e.ip = r.Address
}

func (e *endpointLife) create(t *testing.T) {
	t.Helper()
	mustCall(t, e.d.netSock(), "/NetworkDriver.CreateEndpoint", createEndpoint{NetworkID: e.netID, EndpointID: e.epID,
		Interface: endpointIface{Address: e.ip, MacAddress: e.mac}}, nil)
}

func (e *endpointLife) join(t *testing.T) {
	t.Helper()
	mustCall(t, e.d.netSock(), "/NetworkDriver.Join", joinReq{NetworkID: e.netID, EndpointID: e.epID, SandboxKey: "/var/run/docker/netns/faults"}, nil)
}

func (e *endpointLife) leave(t *testing.T) {
	t.Helper()
	mustCall(t, e.d.netSock(), "/NetworkDriver.Leave", endpointReq{NetworkID: e.netID, EndpointID: e.epID}, nil)
}

func (e *endpointLife) delete(t *testing.T) {
	t.Helper()
	mustCall(t, e.d.netSock(), "/NetworkDriver.DeleteEndpoint", endpointReq{NetworkID: e.netID, EndpointID: e.epID}, nil)
}

func (e *endpointLife) release(t *testing.T) {
	t.Helper()
	mustCall(t, e.d.ipamSock(), "/IpamDriver.ReleaseAddress", releaseAddress{PoolID: e.poolID, Address: addrOnly(e.ip)}, nil)
}

func (e *endpointLife) hostIface() string { return "cali" + e.epID[:11] }

func addrOnly(cidr string) string {
	a, _, _ := strings.Cut(cidr, "/")
	return a
}

// network creates a calico network on the default IPv4 pool and returns
// its ID and the pool ID Docker would use.
func network(t *testing.T, d *daemon) (string, string) {
	t.Helper()
	var pool requestPoolResp
	mustCall(t, d.ipamSock(), "/IpamDriver.RequestPool", requestPool{AddressSpace: ipamdriver.LocalAddressSpace}, &pool)
	var b [32]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	mustCall(t, d.netSock(), "/NetworkDriver.CreateNetwork", createNetwork{NetworkID: id,
		IPv4Data: []ipamData{{AddressSpace: ipamdriver.LocalAddressSpace, Pool: pool.Pool, Gateway: "0.0.0.0/0"}}}, nil)
	return id, pool.PoolID
}

// linkExists reports whether ns has a link called name.
func linkExists(ns, name string) bool {
	return exec.Command("ip", "-n", ns, "link", "show", name).Run() == nil
}

// fakeEngine stands in for the Docker engine's two read calls the garbage
// collector makes (GET /networks?filters and GET /networks/ID), answering
// with the endpoints the test says Docker knows. Docker cannot be stopped
// between RequestAddress and CreateEndpoint; the single-host suite covers
// the collector against a real engine.
type fakeEngine struct {
	mu        sync.Mutex
	netID     string
	endpoints map[string]string // endpoint ID -> MAC
}

func startEngine(t *testing.T, d *daemon, netID string) *fakeEngine {
	t.Helper()
	e := &fakeEngine{netID: netID, endpoints: map[string]string{}}
	sock := filepath.Join(d.dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		p := r.URL.Path
		if i := strings.Index(p, "/networks"); i >= 0 {
			p = p[i:]
		}
		containers := map[string]any{}
		for id, mac := range e.endpoints {
			containers["c"+id[:12]] = map[string]string{"EndpointID": id, "MacAddress": mac}
		}
		nw := map[string]any{"Id": e.netID, "Name": "faults", "Driver": "calico", "Containers": containers,
			"IPAM": map[string]any{"Driver": "calico-ipam"}}
		switch {
		case p == "/networks":
			_ = json.NewEncoder(w).Encode([]any{nw})
		case p == "/networks/"+e.netID:
			_ = json.NewEncoder(w).Encode(nw)
		case strings.HasSuffix(p, "/_ping"):
			_, _ = w.Write([]byte("OK"))
		default:
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	for i, a := range d.args {
		if a == "--docker-host" {
			d.args[i+1] = "unix://" + sock
		}
	}
	return e
}

func (e *fakeEngine) knows(epID, mac string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.endpoints[epID] = mac
}
