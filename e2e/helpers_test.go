//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Kernel marks the product puts on what it creates.
const (
	aliasPrefix = "calico-libnetwork:"
	routeProto  = "77" // routes to local endpoints
	// routes between hosts: blackholes for this host's blocks, routes to
	// other hosts' blocks
	blockRouteProto = "78"
	hostMAC         = "ee:ee:ee:ee:ee:ee"
	gatewayV4       = "169.254.1.1"
	gatewayV6       = "fe80::ecee:eeff:feee:eeee"
	defaultPool     = "192.168.0.0/16"
	// forwardChain is the daemon's iptables chain, jumped to from FORWARD.
	forwardChain = "CALICO-LIBNETWORK-FWD"
)

// ---------------------------------------------------------------- daemon

// daemon is the calico-libnetwork process under test. Tests stop, kill and
// restart it; every start appends to the same log.
type daemon struct {
	bin, dataDir, pluginDir, logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	exit error         // cmd.Wait's result
}

func (d *daemon) netSock() string  { return filepath.Join(d.pluginDir, "calico.sock") }
func (d *daemon) ipamSock() string { return filepath.Join(d.pluginDir, "calico-ipam.sock") }

// suiteGCGrace is the suite daemon's garbage collection grace period.
const suiteGCGrace = 30 * time.Second

// daemonEnv is the environment without the settings the daemon reads, so
// only the flags the suite passes count.
func daemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CALICO_DATA_DIR", "NODENAME", "ETCD_ENDPOINTS", "ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE",
			"IP", "CALICO_PLUGIN_DIR", "CALICO_LIBNETWORK_VETH_MTU", "LOG_LEVEL", "NO_DEFAULT_POOLS", "CALICO_BPF_REDIRECT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// start runs the daemon and waits until both sockets answer Plugin.Activate.
func (d *daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		select {
		case <-d.done:
		default:
			return errors.New("daemon already running")
		}
	}
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "==== e2e: starting the daemon at %s ====\n", time.Now().UTC().Format(time.RFC3339Nano))
	// A short grace period, so that the garbage a test makes on purpose
	// (kill -9, a wiped datastore) is collected before the suite's last
	// check that nothing is left.
	cmd := exec.Command(d.bin, "--data-dir", d.dataDir, "--plugin-dir", d.pluginDir, "--log-level", "debug",
		"--ipam-gc-grace", suiteGCGrace.String(), "--ipam-gc-interval", "5s")
	cmd.Env = daemonEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", d.bin, err)
	}
	logf.Close()
	d.cmd, d.done, d.exit = cmd, make(chan struct{}), nil
	done := d.done
	go func() {
		err := cmd.Wait()
		d.mu.Lock()
		d.exit = err
		d.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("daemon exited at start (%v); its log ends:\n%s", d.exit, tail(d.logPath, 20))
		case <-time.After(100 * time.Millisecond):
		}
		if activate(d.netSock()) == nil && activate(d.ipamSock()) == nil {
			return nil
		}
	}
	_ = cmd.Process.Kill()
	return fmt.Errorf("daemon did not serve %s and %s within 90s; its log ends:\n%s", d.netSock(), d.ipamSock(), tail(d.logPath, 20))
}

func (d *daemon) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// stop sends sig and waits for the daemon to exit; it returns the exit
// error (nil for exit status 0).
func (d *daemon) stop(sig syscall.Signal) error {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("daemon did not exit within 30s of %v; killed", sig)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exit
}

// ensureDaemon returns a cleanup that restarts the daemon if a test left it
// stopped, so later tests find it serving.
func ensureDaemon(t *testing.T) func() {
	return func() {
		if !dmn.running() {
			if err := dmn.start(); err != nil {
				t.Errorf("restart the daemon after the test: %v", err)
			}
		}
	}
}

// logSince returns the daemon log written after offset (see logSize).
func logSince(offset int) string {
	s := readFile(dmn.logPath)
	if offset > len(s) {
		return ""
	}
	return s[offset:]
}

func logSize() int { return len(readFile(dmn.logPath)) }

// ---------------------------------------------------------------- plugin sockets

func unixClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

// post sends body to path on the plugin socket sock.
func post(sock, path string, body []byte) (int, []byte, error) {
	resp, err := unixClient(sock).Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func activate(sock string) error {
	code, body, err := post(sock, "/Plugin.Activate", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("Plugin.Activate on %s: HTTP %d: %s", sock, code, body)
	}
	return nil
}

// ---------------------------------------------------------------- docker

// dockerRun runs the docker CLI with a timeout.
func dockerRun(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return strings.TrimSpace(o.String()), strings.TrimSpace(e.String()), err
}

// docker runs the docker CLI and fails the test if it fails.
func docker(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := dockerRun(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// dockerFails runs the docker CLI, expects it to fail and returns stderr.
func dockerFails(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := dockerRun(args...)
	if err == nil {
		t.Fatalf("docker %s succeeded, want an error; stdout: %s", strings.Join(args, " "), out)
	}
	return errOut
}

var nameSeq atomic.Int64

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// uniqueName gives a docker object name derived from the test name.
func uniqueName(t testing.TB, kind string) string {
	n := strings.ToLower(unsafeChars.ReplaceAllString(strings.TrimPrefix(t.Name(), "Test"), "-"))
	if len(n) > 40 {
		n = n[:40]
	}
	return fmt.Sprintf("e2e-%s-%s-%s%d", runID, strings.Trim(n, "-"), kind, nameSeq.Add(1))
}

// calicoNetArgs are the flags every calico network needs.
func calicoNetArgs() []string {
	return []string{"--driver", "calico", "--ipam-driver", "calico-ipam", "--label", labelArg()}
}

// newNetwork creates a calico network and removes it when the test ends.
func newNetwork(t testing.TB, extra ...string) string {
	t.Helper()
	name := uniqueName(t, "net")
	args := append(append([]string{"network", "create"}, calicoNetArgs()...), extra...)
	docker(t, append(args, name)...)
	t.Cleanup(func() { removeNetwork(t, name) })
	return name
}

var stuck sync.Map // network name -> true: kept by Docker's endpoint-count bug

func dockerStuck(name string) bool { _, ok := stuck.Load(name); return ok }

// removeNetwork removes a network. Docker before 28.1 keeps a per-network
// endpoint reference count that concurrent `docker run`/`docker rm` on one
// network can leave too high, after which `docker network rm` answers "has
// active endpoints" although no container is attached, until dockerd
// restarts (moby/moby#42119; the count was dropped in Docker 28.1). That
// case is retried for a while and then logged, not failed: it is Docker's
// state, and the suite's names are unique per run.
func removeNetwork(t testing.TB, name string) {
	deadline := time.Now().Add(5 * time.Second)
	for try := 1; ; try++ {
		_, errOut, err := dockerRun("network", "rm", name)
		switch {
		case err == nil:
			if try > 1 {
				t.Logf("docker network rm %s succeeded at try %d (Docker still counted removed endpoints)", name, try)
			}
			return
		case strings.Contains(errOut, "No such network") || strings.Contains(errOut, "not found"):
			return
		case strings.Contains(errOut, "active endpoints") && time.Now().Before(deadline):
			time.Sleep(500 * time.Millisecond)
			continue
		}
		containers, _, _ := dockerRun("network", "inspect", "-f", "{{len .Containers}}", name)
		if strings.Contains(errOut, "active endpoints") && containers == "0" {
			stuck.Store(name, true)
			t.Logf("WARNING: docker network rm %s: %s, but no container is attached: Docker's stale endpoint count "+
				"(moby/moby#42119); the network stays until dockerd restarts", name, errOut)
			return
		}
		t.Errorf("docker network rm %s: %v: %s (containers on it: %s)", name, err, errOut, containers)
		return
	}
}

type container struct {
	name string
	id   string
}

// runContainer starts a sleeping container on network (docker run -d) and
// force-removes it when the test ends.
func runContainer(t testing.TB, network string, extra ...string) *container {
	t.Helper()
	c, errOut, err := tryRunContainer(t, network, extra...)
	if err != nil {
		t.Fatalf("docker run on %s %v: %v: %s", network, extra, err, errOut)
	}
	return c
}

// tryRunContainer is runContainer that returns docker's error; the cleanup
// is registered either way (a failed `docker run -d` can leave a created
// container behind).
func tryRunContainer(t testing.TB, network string, extra ...string) (*container, string, error) {
	name := uniqueName(t, "c")
	t.Cleanup(func() { removeContainer(t, name) })
	args := []string{"run", "-d", "--label", labelArg(), "--name", name, "--net", network}
	args = append(args, extra...)
	args = append(args, Image, "sleep", "3600")
	id, errOut, err := dockerRun(args...)
	return &container{name: name, id: id}, errOut, err
}

func removeContainer(t testing.TB, name string) {
	_, errOut, err := dockerRun("rm", "-f", name)
	if err != nil && !strings.Contains(errOut, "No such container") {
		t.Errorf("docker rm -f %s: %v: %s", name, err, errOut)
	}
}

// endpoint is what Docker reports about a container on one network.
type endpoint struct {
	EndpointID          string
	IPAddress           string
	IPPrefixLen         int
	GlobalIPv6Address   string
	GlobalIPv6PrefixLen int
	MacAddress          string
	Gateway             string
	IPv6Gateway         string
}

// hostIface is the host side veth of the endpoint.
func (e endpoint) hostIface() string { return "cali" + e.EndpointID[:11] }

func (c *container) endpoint(t testing.TB, network string) endpoint {
	t.Helper()
	var nets map[string]endpoint
	out := docker(t, "inspect", "-f", "{{json .NetworkSettings.Networks}}", c.name)
	if err := json.Unmarshal([]byte(out), &nets); err != nil {
		t.Fatalf("decode docker inspect of %s: %v: %s", c.name, err, out)
	}
	ep, ok := nets[network]
	if !ok || ep.EndpointID == "" {
		t.Fatalf("container %s is not on network %s: %s", c.name, network, out)
	}
	return ep
}

// ip is the container's IPv4 address on network, as Docker reports it.
func (c *container) ip(t testing.TB, network string) string {
	t.Helper()
	ep := c.endpoint(t, network)
	if ep.IPAddress == "" {
		t.Fatalf("container %s has no IPv4 address on %s", c.name, network)
	}
	return ep.IPAddress
}

func (c *container) exec(t testing.TB, args ...string) string {
	t.Helper()
	return docker(t, append([]string{"exec", c.name}, args...)...)
}

// ping checks that c reaches ip (a few tries: the very first packet may
// race the neighbour entry).
func (c *container) ping(ip string) error {
	args := []string{"exec", c.name, "ping", "-c", "1", "-W", "2"}
	if strings.Contains(ip, ":") {
		args = append(args, "-6")
	}
	var last string
	for i := 0; i < 3; i++ {
		out, errOut, err := dockerRun(append(args, ip)...)
		if err == nil {
			return nil
		}
		last = out + " " + errOut
	}
	return fmt.Errorf("%s cannot ping %s: %s", c.name, ip, strings.TrimSpace(last))
}

func (c *container) mustPing(t testing.TB, ip string) {
	t.Helper()
	if err := c.ping(ip); err != nil {
		t.Fatal(err)
	}
}

// mustNotPing checks that policy stops c's pings to ip (3 echo requests, 1 s
// each: an allowed path answers the first within milliseconds).
func (c *container) mustNotPing(t testing.TB, ip string) {
	t.Helper()
	args := []string{"exec", c.name, "ping", "-c", "3", "-W", "1"}
	if strings.Contains(ip, ":") {
		args = append(args, "-6")
	}
	if out, _, err := dockerRun(append(args, ip)...); err == nil {
		t.Fatalf("%s reached %s, which policy should stop:\n%s", c.name, ip, out)
	}
}

// tcpReach reports whether c can open a TCP connection to ip:port, where
// the peer runs `nc -l -p port` answering "hello".
func (c *container) tcpReach(ip string, port int) bool {
	out, _, _ := dockerRun("exec", c.name, "sh", "-c", fmt.Sprintf("nc -w 2 %s %d </dev/null", ip, port))
	return strings.Contains(out, "hello")
}

// ---------------------------------------------------------------- kernel

type link struct {
	Name      string   `json:"ifname"`
	Alias     string   `json:"ifalias"`
	Address   string   `json:"address"`
	Operstate string   `json:"operstate"`
	Flags     []string `json:"flags"`
	MTU       int      `json:"mtu"`
}

type route struct {
	Type  string `json:"type"`
	Dst   string `json:"dst"`
	Dev   string `json:"dev"`
	Scope string `json:"scope"`
}

func ipJSON(v any, args ...string) error {
	out, err := exec.Command("ip", append([]string{"-j"}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return err
	}
	if len(bytes.TrimSpace(out)) == 0 {
		out = []byte("[]")
	}
	return json.Unmarshal(out, v)
}

// hostLink returns the host's link of that name, or nil.
func hostLink(t testing.TB, name string) *link {
	t.Helper()
	var links []link
	if err := ipJSON(&links, "link", "show"); err != nil {
		t.Fatal(err)
	}
	for i := range links {
		if links[i].Name == name {
			return &links[i]
		}
	}
	return nil
}

// ourLinks lists the links carrying the product's alias, by name.
func ourLinks() (map[string]link, error) {
	var links []link
	if err := ipJSON(&links, "link", "show"); err != nil {
		return nil, err
	}
	out := map[string]link{}
	for _, l := range links {
		if strings.HasPrefix(l.Alias, aliasPrefix) {
			out[l.Name] = l
		}
	}
	return out, nil
}

// ourRoutes lists the IPv4 and IPv6 routes with the product's protocol.
func ourRoutes() ([]route, error) {
	var v4, v6 []route
	if err := ipJSON(&v4, "-4", "route", "show", "proto", routeProto); err != nil {
		return nil, err
	}
	if err := ipJSON(&v6, "-6", "route", "show", "proto", routeProto); err != nil {
		return nil, err
	}
	return append(v4, v6...), nil
}

// blockRoutes lists the routes with the product's protocol number for
// routes between hosts (blackholes for this host's blocks, routes to other
// hosts' blocks).
func blockRoutes() ([]route, error) {
	var v4, v6 []route
	if err := ipJSON(&v4, "-4", "route", "show", "proto", blockRouteProto); err != nil {
		return nil, err
	}
	if err := ipJSON(&v6, "-6", "route", "show", "proto", blockRouteProto); err != nil {
		return nil, err
	}
	return append(v4, v6...), nil
}

// hostRoute returns our route to ip, or nil.
func hostRoute(t testing.TB, ip string) *route {
	t.Helper()
	rs, err := ourRoutes()
	if err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr(ip)
	for i := range rs {
		dst := strings.TrimSuffix(strings.TrimSuffix(rs[i].Dst, "/32"), "/128")
		if a, err := netip.ParseAddr(dst); err == nil && a == want {
			return &rs[i]
		}
	}
	return nil
}

// assertHostSide checks the host half of an endpoint: the veth and the
// route to each address.
func assertHostSide(t testing.TB, ep endpoint) {
	t.Helper()
	name := ep.hostIface()
	l := hostLink(t, name)
	if l == nil {
		t.Fatalf("host side veth %s of endpoint %s is missing", name, ep.EndpointID[:12])
	}
	if l.Address != hostMAC {
		t.Errorf("%s has MAC %s, want %s", name, l.Address, hostMAC)
	}
	if !aliasOf(l.Alias, ep.EndpointID) {
		t.Errorf("%s has alias %q, want %q followed by [node/]%s", name, l.Alias, aliasPrefix, ep.EndpointID)
	}
	if !contains(l.Flags, "UP") {
		t.Errorf("%s is not up: flags %v", name, l.Flags)
	}
	for _, ip := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
		if ip == "" {
			continue
		}
		r := hostRoute(t, ip)
		if r == nil {
			t.Errorf("no route with proto %s to %s on the host", routeProto, ip)
			continue
		}
		// IPv6 routes have no scope: the kernel shows none.
		if r.Dev != name || (!strings.Contains(ip, ":") && r.Scope != "link") {
			t.Errorf("route to %s is %+v, want dev %s scope link", ip, *r, name)
		}
	}
}

// assertHostSideGone checks that nothing of the endpoint is left on the host.
// Leave answers before the kernel has finished deleting the veth (that
// takes tens of milliseconds): it has a second to be gone.
func assertHostSideGone(t testing.TB, ep endpoint) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); hostLink(t, ep.hostIface()) != nil && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if l := hostLink(t, ep.hostIface()); l != nil {
		t.Errorf("veth %s of removed endpoint %s is still there a second after its container was removed", ep.hostIface(), ep.EndpointID[:12])
	}
	links, err := ourLinks()
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range links {
		if aliasOf(l.Alias, ep.EndpointID) {
			t.Errorf("link %s still carries the alias of removed endpoint %s", name, ep.EndpointID[:12])
		}
	}
	for _, ip := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
		if ip == "" {
			continue
		}
		if r := hostRoute(t, ip); r != nil && r.Dev == ep.hostIface() {
			t.Errorf("route to %s via %s is still there", ip, r.Dev)
		}
	}
}

// aliasOf tells whether a link alias marks the endpoint's veth: the product
// writes calico-libnetwork:[<node>/]<endpoint ID>.
func aliasOf(alias, endpointID string) bool {
	rest, ok := strings.CutPrefix(alias, aliasPrefix)
	if !ok {
		return false
	}
	if i := strings.LastIndex(rest, "/"); i >= 0 {
		rest = rest[i+1:]
	}
	return rest == endpointID
}

func sysctl(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc/sys", path))
	if err != nil {
		t.Fatalf("read sysctl: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// hostPing pings ip from the host with the host's busybox.
func hostPing(ip string) error {
	args := []string{"ping", "-c", "1", "-W", "2"}
	if strings.Contains(ip, ":") {
		args = append(args, "-6")
	}
	var out []byte
	var err error
	for i := 0; i < 3; i++ {
		if out, err = exec.Command(busybox, append(args, ip)...).CombinedOutput(); err == nil {
			return nil
		}
	}
	return fmt.Errorf("host cannot ping %s: %v: %s", ip, err, out)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func inPrefix(t testing.TB, ip, prefix string) bool {
	t.Helper()
	a, err := netip.ParseAddr(ip)
	if err != nil {
		t.Fatalf("bad address %q: %v", ip, err)
	}
	return netip.MustParsePrefix(prefix).Contains(a)
}

// v6Subnet returns the /64 number n inside the daemon's default IPv6 pool.
func v6Subnet(t testing.TB, n uint16) netip.Prefix {
	t.Helper()
	if defaultV6 == "" {
		t.Fatal("the daemon's log did not name its default IPv6 pool")
	}
	p := netip.MustParsePrefix(defaultV6)
	b := p.Addr().As16()
	b[6], b[7] = byte(n>>8), byte(n)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// runOut runs a host command and fails the test if it fails.
func runOut(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
