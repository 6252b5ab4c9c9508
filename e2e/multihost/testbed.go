//go:build e2e

// Package multihost is the multi-host end-to-end test: three "hosts" made of
// network namespaces on this machine, each with its own dockerd and its own
// calico-libnetwork daemon, joined by a router namespace, sharing a
// three-member etcd cluster over TLS, with an "outside" host behind the
// router for NAT.
//
//	              subnet A 10.201.1.0/24              subnet B 10.201.2.0/24
//	host1 (.11) ─┐                                  ┌─ host3 (.13)
//	             ├─ br0 .1 ── router ── .1 (h3) ────┘
//	host2 (.12) ─┘              │
//	                        .1 (out) ── outside 203.0.113.100/24
//
// Nothing here touches the machine's own network namespace (no address,
// route or link is added there), the system dockerd, or the root mount
// namespace's /run/docker/plugins: each host's dockerd runs under
// `unshare -m` with that host's plugin folder bind-mounted on
// /run/docker/plugins, entered into the host's network namespace with
// nsenter; the host's daemon joins both namespaces. Every name carries a
// per-run prefix ("cmh" + 6 hex digits), and leftovers of runs that were
// killed are swept at the next start (see sweep.go).
package multihost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
)

// Topology. The addresses only exist inside the namespaces this package
// makes.
const (
	SubnetA      = "10.201.1.0/24"
	SubnetB      = "10.201.2.0/24"
	OutsideNet   = "203.0.113.0/24"
	OutsideAddr  = "203.0.113.100"
	RouterAOnA   = "10.201.1.1"
	RouterOnB    = "10.201.2.1"
	RouterOnOut  = "203.0.113.1"
	namePrefix   = "cmh" // every netns, run dir and label starts with it
	baseDir      = "/tmp/calico-multihost"
	keptLogsDir  = "/tmp/calico-multihost-logs"
	LabelKey     = "calico-multihost" // docker label on every container the tests run
	HostIfName   = "eth0"
	dockerdReady = 90 * time.Second
)

type hostSpec struct {
	short   string // h1: netns suffix and router-side port name
	addr    string // with prefix length
	gateway string
	subnet  string // A or B
}

var hostSpecs = []hostSpec{
	{"h1", "10.201.1.11/24", RouterAOnA, "A"},
	{"h2", "10.201.1.12/24", RouterAOnA, "A"},
	{"h3", "10.201.2.13/24", RouterOnB, "B"},
}

// Options tune a testbed.
type Options struct {
	// LogLevel of the daemons (default debug).
	LogLevel string
	// DaemonEnv is extra environment for every daemon.
	DaemonEnv []string
}

// Testbed is one three-host set-up. Build it with New; it is torn down by
// t.Cleanup whatever happens.
type Testbed struct {
	T       testing.TB
	ID      string // cmh + 6 hex digits
	Dir     string // run directory: logs, data roots, certificates
	Router  string // netns names
	Outside string
	Hosts   []*Host
	Etcd    *EtcdCluster
	Store   *datastore.Store // the test's own etcd client (through loopback proxies)

	opts    Options
	bin     string // calico-libnetwork binary
	ctl     string // calicoctl binary ("" when it does not build)
	image   []byte // the busybox rootfs tar
	failed  bool
	closeMu sync.Mutex
	closed  bool
}

// Host is one simulated machine.
type Host struct {
	tb         *Testbed
	Index      int          // 0-based
	Name       string       // node name: host1
	Short      string       // h1
	NetNS      string       // netns name
	Addr       netip.Prefix // its address on the host subnet
	Gateway    netip.Addr
	Subnet     string
	Dir        string
	DockerSock string
	PluginDir  string // the folder bind-mounted on /run/docker/plugins
	DataDir    string // the daemon's --data-dir

	mu      sync.Mutex
	dockerd *Proc
	daemon  *Proc
}

// NSPath is the host's network namespace file.
func (h *Host) NSPath() string { return "/run/netns/" + h.NetNS }

// IP is the host's address.
func (h *Host) IP() netip.Addr { return h.Addr.Addr() }

func (h *Host) String() string { return h.Name }

// prereqFail reports a missing prerequisite: a failure when
// CALICO_E2E_REQUIRED=1 (CI), else a skip.
func prereqFail(t testing.TB, format string, a ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, a...)
	if os.Getenv("CALICO_E2E_REQUIRED") == "1" {
		line := strings.Repeat("=", 78)
		fmt.Printf("\n%s\nMULTI-HOST E2E FAILED: prerequisite missing and CALICO_E2E_REQUIRED=1:\n%s\n%s\n\n", line, msg, line)
		t.Fatalf("prerequisite missing (CALICO_E2E_REQUIRED=1): %s", msg)
	}
	t.Skipf("SKIPPED: prerequisite missing: %s (set CALICO_E2E_REQUIRED=1 to make this a failure)", msg)
}

// ensureTools finds each binary, installing its Debian package when it is
// missing and apt-get exists.
func ensureTools(t testing.TB, tools [][2]string) {
	t.Helper()
	for _, tl := range tools {
		bin, pkg := tl[0], tl[1]
		if _, err := exec.LookPath(bin); err == nil {
			continue
		}
		if err := e2eutil.AptInstall(pkg); err != nil {
			prereqFail(t, "%s is missing: %v", bin, err)
		}
		if _, err := exec.LookPath(bin); err != nil {
			prereqFail(t, "%s still missing after installing %s", bin, pkg)
		}
	}
}

// staticBusybox returns a statically linked busybox (the image has no libc).
func staticBusybox(t testing.TB) string {
	t.Helper()
	p, err := e2eutil.StaticBusybox()
	if err != nil {
		prereqFail(t, "%v", err)
	}
	return p
}

// CheckPrereqs fails (CALICO_E2E_REQUIRED=1) or skips when the machine
// cannot run the testbed. extra are more [binary, package] pairs.
func CheckPrereqs(t testing.TB, extra ...[2]string) {
	t.Helper()
	if os.Geteuid() != 0 {
		prereqFail(t, "the multi-host e2e test needs root (network namespaces, dockerd)")
	}
	tools := [][2]string{
		{"ip", "iproute2"}, {"nsenter", "util-linux"}, {"unshare", "util-linux"},
		{"dockerd", "docker.io"}, {"docker", "docker.io"}, {"containerd", "containerd"}, {"runc", "runc"},
		{"iptables", "iptables"}, {"etcd", "etcd-server"}, {"tcpdump", "tcpdump"}, {"go", "golang-go"},
		{"ping", "iputils-ping"}, {"nft", "nftables"},
	}
	ensureTools(t, append(tools, extra...))
	staticBusybox(t)
	for _, f := range []string{"/proc/self/ns/net", "/proc/self/ns/mnt"} {
		if _, err := os.Stat(f); err != nil {
			prereqFail(t, "no namespace support: %v", err)
		}
	}
}

// New builds the testbed: sweeps leftovers of killed runs, creates the
// namespaces and links, the etcd cluster, a dockerd and a daemon per host,
// and imports the test image into every dockerd. The testbed is torn down
// when the test ends, pass or fail.
func New(t testing.TB, opts Options) *Testbed {
	t.Helper()
	CheckPrereqs(t)
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	Sweep(func(format string, a ...any) { t.Logf(format, a...) })

	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		t.Fatal(err)
	}
	id := namePrefix + hex.EncodeToString(rb[:])
	tb := &Testbed{T: t, ID: id, Dir: filepath.Join(baseDir, id), opts: opts,
		Router: id + "-rt", Outside: id + "-out"}
	if err := os.MkdirAll(tb.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeOwner(tb.Dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tb.Close)
	t.Logf("testbed %s in %s", id, tb.Dir)
	started := time.Now()

	var wg sync.WaitGroup
	var buildErr error
	var buildTook, etcdTook time.Duration
	dockerdTook := make([]time.Duration, len(hostSpecs))
	wg.Add(1)
	go func() { defer wg.Done(); st := time.Now(); buildErr = tb.buildBinaries(); buildTook = time.Since(st) }()
	var imgErr error
	wg.Add(1)
	go func() { defer wg.Done(); tb.image, imgErr = e2eutil.BusyboxRootfs(staticBusybox(t)) }()

	if err := tb.makeTopology(); err != nil {
		wg.Wait()
		t.Fatalf("testbed topology: %v", err)
	}
	pki, err := NewPKI(filepath.Join(tb.Dir, "pki"), tb.memberIPs())
	if err != nil {
		wg.Wait()
		t.Fatalf("etcd certificates: %v", err)
	}
	tb.Etcd = &EtcdCluster{tb: tb, PKI: pki}
	var etcdErr error
	wg.Add(1)
	go func() { defer wg.Done(); st := time.Now(); etcdErr = tb.Etcd.start(); etcdTook = time.Since(st) }()
	dockerErrs := make([]error, len(tb.Hosts))
	for i, h := range tb.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := time.Now()
			dockerErrs[i] = h.startDockerd()
			dockerdTook[i] = time.Since(st)
		}()
	}
	wg.Wait()
	for _, err := range append([]error{buildErr, imgErr, etcdErr}, dockerErrs...) {
		if err != nil {
			t.Fatalf("testbed set-up: %v", err)
		}
	}
	t.Logf("testbed %s: build %s, etcd cluster %s, dockerds %v", id, buildTook.Round(100*time.Millisecond), etcdTook.Round(100*time.Millisecond), dockerdTook)
	errs := make([]error, len(tb.Hosts))
	for i, h := range tb.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.importImage(tb.image); err != nil {
				errs[i] = err
				return
			}
			errs[i] = h.StartDaemon()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("testbed set-up: %v", err)
		}
	}
	t.Logf("testbed %s ready in %s: 3 hosts, etcd cluster %s, dockerd and calico-libnetwork on each",
		id, time.Since(started).Round(100*time.Millisecond), strings.Join(tb.Etcd.ClientURLs(), ","))
	return tb
}

func (tb *Testbed) memberIPs() []netip.Addr {
	var out []netip.Addr
	for _, s := range hostSpecs {
		out = append(out, netip.MustParsePrefix(s.addr).Addr())
	}
	return out
}

// moduleRoot is the repository root (where go.mod is).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(mod), nil
}

var (
	buildOnce sync.Once
	builtBin  string
	builtCtl  string
	buildErr  error
)

// buildBinaries builds the daemon (and calicoctl, when it builds) once per
// test process.
func (tb *Testbed) buildBinaries() error {
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir := filepath.Join(baseDir, "bin-"+strings.ReplaceAll(ownerToken(), " ", "-"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "calico-libnetwork")
		c := exec.Command("go", "build", "-o", builtBin, "./cmd/calico-libnetwork")
		c.Dir = root
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := c.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build calico-libnetwork: %v\n%s", err, out)
			return
		}
		ctl := filepath.Join(dir, "calicoctl")
		c = exec.Command("go", "build", "-o", ctl, "./cmd/calicoctl")
		c.Dir = root
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := c.CombinedOutput(); err != nil {
			fmt.Printf("multihost: calicoctl does not build (%v); pools are written with the ipam package instead\n%s\n", err, lastLines(string(out), 5))
		} else {
			builtCtl = ctl
		}
	})
	tb.bin, tb.ctl = builtBin, builtCtl
	return buildErr
}

// ---------------------------------------------------------------------------
// Topology

func (tb *Testbed) makeTopology() error {
	for _, s := range hostSpecs {
		h := &Host{tb: tb, Index: len(tb.Hosts), Name: "host" + strings.TrimPrefix(s.short, "h"), Short: s.short,
			NetNS: tb.ID + "-" + s.short, Addr: netip.MustParsePrefix(s.addr), Gateway: netip.MustParseAddr(s.gateway),
			Subnet: s.subnet, Dir: filepath.Join(tb.Dir, s.short)}
		h.DockerSock = filepath.Join(h.Dir, "docker.sock")
		h.PluginDir = filepath.Join(h.Dir, "plugins")
		h.DataDir = filepath.Join(h.Dir, "calico")
		for _, d := range []string{h.Dir, h.PluginDir, h.DataDir} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		tb.Hosts = append(tb.Hosts, h)
	}
	var script []string
	add := func(f string, a ...any) { script = append(script, fmt.Sprintf(f, a...)) }
	for _, n := range append([]string{tb.Router, tb.Outside}, tb.hostNetNSes()...) {
		add("netns add %s", n)
	}
	for _, n := range append([]string{tb.Router, tb.Outside}, tb.hostNetNSes()...) {
		add("-n %s link set lo up", n)
	}
	rt := tb.Router
	add("-n %s link add br0 type bridge", rt)
	add("-n %s addr add %s/24 dev br0", rt, RouterAOnA)
	add("-n %s link set br0 up", rt)
	for _, h := range tb.Hosts {
		add("-n %s link add %s type veth peer name %s netns %s", rt, h.Short, HostIfName, h.NetNS)
		if h.Subnet == "A" {
			add("-n %s link set %s master br0", rt, h.Short)
		} else {
			add("-n %s addr add %s/24 dev %s", rt, RouterOnB, h.Short)
		}
		add("-n %s link set %s up", rt, h.Short)
		add("-n %s addr add %s dev %s", h.NetNS, h.Addr, HostIfName)
		add("-n %s link set %s up", h.NetNS, HostIfName)
		add("-n %s route add default via %s", h.NetNS, h.Gateway)
	}
	add("-n %s link add out type veth peer name %s netns %s", rt, HostIfName, tb.Outside)
	add("-n %s addr add %s/24 dev out", rt, RouterOnOut)
	add("-n %s link set out up", rt)
	add("-n %s addr add %s/24 dev %s", tb.Outside, OutsideAddr, HostIfName)
	add("-n %s link set %s up", tb.Outside, HostIfName)
	add("-n %s route add default via %s", tb.Outside, RouterOnOut)
	for _, line := range script {
		if out, err := exec.Command("ip", strings.Fields(line)...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", line, err, strings.TrimSpace(string(out)))
		}
	}
	if err := writeSysctl(tb.Router, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	// The kernel must have VXLAN: probe it in the router namespace.
	probe := exec.Command("ip", "-n", rt, "link", "add", "mhprobe", "type", "vxlan", "id", "42", "dstport", "4790")
	if out, err := probe.CombinedOutput(); err != nil {
		prereqFail(tb.T, "the kernel cannot create VXLAN devices (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "-n", rt, "link", "del", "mhprobe").Run()
	return nil
}

func (tb *Testbed) hostNetNSes() []string {
	var out []string
	for _, h := range tb.Hosts {
		out = append(out, h.NetNS)
	}
	return out
}

// writeSysctl sets a sysctl inside a namespace through /proc/sys (which
// follows the writer's network namespace).
func writeSysctl(netns, key, val string) error {
	c := exec.Command("nsenter", "--net=/run/netns/"+netns, "--", "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", val, key))
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %v: %s", key, val, netns, err, out)
	}
	return nil
}

// NSExec runs a command in a network namespace (by name) and returns its
// combined output.
func NSExec(ctx context.Context, netns string, argv ...string) (string, error) {
	c := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + netns, "--"}, argv...)...)
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %v: %s", netns, strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Exec runs a command in the host's network namespace.
func (h *Host) Exec(t testing.TB, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := NSExec(ctx, h.NetNS, argv...)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return out
}

// ---------------------------------------------------------------------------
// Processes

// Proc is a background process with its log.
type Proc struct {
	Name    string
	LogPath string
	argv    []string
	env     []string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

func startProc(name, logPath string, env []string, argv ...string) (*Proc, error) {
	p := &Proc{Name: name, LogPath: logPath, argv: argv, env: env}
	return p, p.start()
}

func (p *Proc) start() error {
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "==== %s start %s: %s\n", time.Now().Format(time.RFC3339Nano), p.Name, strings.Join(p.argv, " "))
	c := exec.Command(p.argv[0], p.argv[1:]...)
	c.Stdout, c.Stderr = f, f
	c.Env = append(os.Environ(), p.env...)
	// Its own process group: a ^C to the test does not hit it half-way
	// through a step; the cleanup (or the next run's sweep) stops it.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done, p.err = c, make(chan struct{}), nil
	go func(c *exec.Cmd, done chan struct{}) {
		err := c.Wait()
		p.err = err
		close(done)
	}(c, p.done)
	return nil
}

// Pid is the process ID (the exec chain keeps it: unshare, nsenter and sh
// all exec the next step).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends sig and waits up to timeout for the exit; then SIGKILL.
func (p *Proc) Stop(sig syscall.Signal, timeout time.Duration) error {
	if p == nil || p.cmd == nil || p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s did not exit within %s of %s; killed", p.Name, timeout, sig)
}

// Restart starts the same command again (after it exited).
func (p *Proc) Restart() error { return p.start() }

// Log returns the process's log.
func (p *Proc) Log() string { b, _ := os.ReadFile(p.LogPath); return string(b) }

// ---------------------------------------------------------------------------
// dockerd

func (h *Host) startDockerd() error {
	cfg := filepath.Join(h.Dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o644); err != nil {
		return err
	}
	// unshare -m: a private mount namespace in which the host's plugin
	// folder is /run/docker/plugins; nsenter --net: the host's network
	// namespace (not `ip netns exec`, which remounts /sys and hides the
	// cgroups). dockerd starts its own containerd under its exec-root.
	script := `set -e; mkdir -p /run/docker/plugins; mount --bind "$0" /run/docker/plugins; exec "$@"`
	argv := []string{"unshare", "-m", "--propagation", "private", "--",
		"nsenter", "--net=" + h.NSPath(), "--",
		"sh", "-c", script, h.PluginDir,
		"dockerd",
		"--data-root", filepath.Join(h.Dir, "docker"),
		"--exec-root", filepath.Join(h.Dir, "exec"),
		"--pidfile", filepath.Join(h.Dir, "docker.pid"),
		"--config-file", cfg,
		"-H", "unix://" + h.DockerSock,
		"--bridge=none",
		"--log-level", "info",
	}
	p, err := startProc(h.Name+" dockerd", filepath.Join(h.Dir, "dockerd.log"), nil, argv...)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.dockerd = p
	h.mu.Unlock()
	deadline := time.Now().Add(dockerdReady)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s dockerd exited at start (%v); log %s ends:\n%s", h.Name, p.err, p.LogPath, tail(p.LogPath, 25))
		}
		if _, err := h.DockerErr(5*time.Second, "version", "--format", "{{.Server.Version}}"); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s dockerd did not answer within %s; log %s ends:\n%s", h.Name, dockerdReady, p.LogPath, tail(p.LogPath, 25))
}

// DockerdPID is the host's dockerd process ID.
func (h *Host) DockerdPID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dockerd.Pid()
}

// ---------------------------------------------------------------------------
// The calico-libnetwork daemon

// StartDaemon starts (or restarts) the host's daemon and waits until it
// serves both plugin sockets.
func (h *Host) StartDaemon() error {
	h.mu.Lock()
	p := h.daemon
	h.mu.Unlock()
	tb := h.tb
	if p == nil {
		argv := []string{"nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", h.DockerdPID()), "--net=" + h.NSPath(), "--",
			tb.bin,
			"--data-dir", h.DataDir,
			"--nodename", h.Name,
			"--etcd-endpoints", strings.Join(tb.Etcd.ClientURLs(), ","),
			"--etcd-ca-cert-file", tb.Etcd.PKI.CA,
			"--etcd-cert-file", tb.Etcd.PKI.ClientCert,
			"--etcd-key-file", tb.Etcd.PKI.ClientKey,
			"--plugin-dir", "/run/docker/plugins",
			"--docker-host", "unix://" + h.DockerSock,
			"--ip6", "none",
			"--log-level", tb.opts.LogLevel,
		}
		// Each way of finding the node address is used by one host.
		switch h.Index {
		case 0: // autodetect: the interface holding the default route
		case 1:
			argv = append(argv, "--ip", h.Addr.String())
		default:
			argv = append(argv, "--ip", "can-reach="+h.Gateway.String())
		}
		// The daemon reads its settings from the environment too: blank
		// whatever the caller's environment may hold (an empty value
		// counts as unset), so only the flags above apply.
		var env []string
		for _, k := range []string{"CALICO_DATA_DIR", "NODENAME", "ETCD_ENDPOINTS", "ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE",
			"IP", "IP6", "IP_AUTODETECTION_METHOD", "CALICO_PLUGIN_DIR", "CALICO_LIBNETWORK_VETH_MTU", "LOG_LEVEL", "DOCKER_HOST",
			"CALICO_NETWORK_DRIVER_NAME", "CALICO_IPAM_DRIVER_NAME", "CALICO_BPF_REDIRECT", "CALICO_POLICY"} {
			env = append(env, k+"=")
		}
		env = append(append(env, "NO_DEFAULT_POOLS=true"), tb.opts.DaemonEnv...)
		var err error
		if p, err = startProc(h.Name+" calico-libnetwork", filepath.Join(h.Dir, "daemon.log"), env, argv...); err != nil {
			return err
		}
		h.mu.Lock()
		h.daemon = p
		h.mu.Unlock()
	} else {
		if !p.Exited() {
			return fmt.Errorf("%s daemon is still running (pid %d)", h.Name, p.Pid())
		}
		if err := p.Restart(); err != nil {
			return err
		}
	}
	return h.waitDaemon(p, 60*time.Second)
}

func (h *Host) waitDaemon(p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s daemon exited at start (%v); log %s ends:\n%s", h.Name, p.err, p.LogPath, tail(p.LogPath, 30))
		}
		ok := true
		for _, s := range []string{"calico.sock", "calico-ipam.sock"} {
			c, err := net.DialTimeout("unix", filepath.Join(h.PluginDir, s), time.Second)
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok && strings.Contains(lastRun(p.Log()), "calico-libnetwork serving") {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s daemon not serving within %s; log %s ends:\n%s", h.Name, timeout, p.LogPath, tail(p.LogPath, 30))
}

// lastRun is the part of a log written since the process last started.
func lastRun(log string) string {
	if i := strings.LastIndex(log, "==== "); i >= 0 {
		return log[i:]
	}
	return log
}

// Daemon is the host's daemon process.
func (h *Host) Daemon() *Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.daemon
}

// StopDaemon signals the daemon and waits for it to exit.
func (h *Host) StopDaemon(sig syscall.Signal) error {
	return h.Daemon().Stop(sig, 20*time.Second)
}

// DaemonLog is everything the daemon logged, across restarts.
func (h *Host) DaemonLog() string { return h.Daemon().Log() }

// ---------------------------------------------------------------------------
// Teardown

// Failed marks the testbed as failed even when the test is not (keeps logs).
func (tb *Testbed) Failed() { tb.failed = true }

// Close tears everything down: containers, dockerds, daemons, etcd, the
// namespaces and the run directory (the logs are kept when the test failed
// or CALICO_E2E_KEEP is set). It runs from t.Cleanup and is idempotent.
func (tb *Testbed) Close() {
	tb.closeMu.Lock()
	defer tb.closeMu.Unlock()
	if tb.closed {
		return
	}
	tb.closed = true
	t := tb.T
	failed := t.Failed() || tb.failed
	if failed {
		tb.dumpDiagnostics()
	}
	if tb.Store != nil {
		tb.Store.Close()
	}
	if tb.Etcd != nil {
		tb.Etcd.closeProxies()
	}
	// Containers first (so no shim or container process is orphaned), then
	// daemons and dockerds, then etcd.
	var wg sync.WaitGroup
	for _, h := range tb.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.mu.Lock()
			dd, dm := h.dockerd, h.daemon
			h.mu.Unlock()
			if dd != nil && !dd.Exited() {
				if out, err := h.DockerErr(30*time.Second, "ps", "-aq"); err == nil {
					if ids := strings.Fields(out); len(ids) > 0 {
						_, _ = h.DockerErr(60*time.Second, append([]string{"rm", "-f"}, ids...)...)
					}
				}
			}
			if dm != nil {
				_ = dm.Stop(syscall.SIGTERM, 10*time.Second)
			}
			if dd != nil {
				_ = dd.Stop(syscall.SIGTERM, 20*time.Second)
			}
		}()
	}
	wg.Wait()
	if tb.Etcd != nil {
		for _, m := range tb.Etcd.Members {
			if m.proc != nil {
				_ = m.proc.Stop(syscall.SIGTERM, 10*time.Second)
			}
		}
	}
	keep := failed || os.Getenv("CALICO_E2E_KEEP") != ""
	if keep {
		dst := filepath.Join(keptLogsDir, tb.ID)
		if err := keepLogs(tb.Dir, dst); err == nil {
			t.Logf("testbed logs kept in %s", dst)
		}
	}
	// Whatever is still there (a process that did not stop, the
	// namespaces, the directory) goes the same way as a killed run's.
	if left := cleanupRun(tb.ID, func(format string, a ...any) { t.Logf(format, a...) }); left != "" {
		t.Errorf("testbed %s: cleanup left: %s", tb.ID, left)
	}
}

// keepLogs copies every *.log file of the run dir.
func keepLogs(src, dst string) error {
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		if info.IsDir() {
			if strings.Contains(p, "/docker/") || strings.HasSuffix(p, "/docker") || strings.Contains(p, "/exec") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".log") {
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		target := filepath.Join(dst, strings.ReplaceAll(rel, "/", "-"))
		_ = os.MkdirAll(dst, 0o755)
		return os.WriteFile(target, b, 0o644)
	})
}

// dumpDiagnostics logs what helps to understand a failure.
func (tb *Testbed) dumpDiagnostics() {
	t := tb.T
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range tb.Hosts {
		var b strings.Builder
		fmt.Fprintf(&b, "==== %s (%s, netns %s)\n", h.Name, h.Addr, h.NetNS)
		for _, argv := range [][]string{
			{"ip", "-d", "link", "show"}, {"ip", "addr", "show"}, {"ip", "route", "show"},
			{"ip", "neigh", "show", "dev", "vxlan.calico"}, {"bridge", "fdb", "show", "dev", "vxlan.calico"},
			{"iptables", "-t", "nat", "-S"}, {"iptables", "-S", "FORWARD"},
		} {
			out, _ := NSExec(ctx, h.NetNS, argv...)
			fmt.Fprintf(&b, "$ %s\n%s", strings.Join(argv, " "), out)
		}
		if out, err := h.DockerErr(10*time.Second, "ps", "-a"); err == nil {
			fmt.Fprintf(&b, "$ docker ps -a\n%s", out)
		}
		if p := h.Daemon(); p != nil {
			fmt.Fprintf(&b, "---- daemon log (last 60 lines of %s)\n%s\n", p.LogPath, tail(p.LogPath, 60))
		}
		t.Log(b.String())
	}
	out, _ := NSExec(ctx, tb.Router, "ip", "route", "show")
	t.Logf("==== router routes\n%s", out)
}

// ---------------------------------------------------------------------------
// Small helpers

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string { return e2eutil.LastLines(s, n) }

// Eventually retries f until it returns nil or timeout passes; the last
// error is returned.
func Eventually(timeout, every time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(every)
	}
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader([]byte(s)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return out
}

func atoi(s string) int { n, _ := strconv.Atoi(strings.TrimSpace(s)); return n }

// ---------------------------------------------------------------------------
// Pools and calicoctl

// calicoctlConfig writes a calicoctl config file for the cluster.
func (tb *Testbed) calicoctlConfig() (string, error) {
	p := filepath.Join(tb.Dir, "calicoctl.cfg")
	body := fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata: {}
spec:
  datastoreType: etcdv3
  etcdEndpoints: %s
  etcdCACertFile: %s
  etcdCertFile: %s
  etcdKeyFile: %s
`, strings.Join(tb.Etcd.ClientURLs(), ","), tb.Etcd.PKI.CA, tb.Etcd.PKI.ClientCert, tb.Etcd.PKI.ClientKey)
	return p, os.WriteFile(p, []byte(body), 0o600)
}

// Calicoctl runs calicoctl on host (inside its network namespace, against
// the cluster), as a user on that machine would.
func (tb *Testbed) Calicoctl(h *Host, args ...string) (string, error) {
	if tb.ctl == "" {
		return "", errors.New("calicoctl did not build")
	}
	cfg, err := tb.calicoctlConfig()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return NSExec(ctx, h.NetNS, append([]string{tb.ctl, "-c", cfg}, args...)...)
}
