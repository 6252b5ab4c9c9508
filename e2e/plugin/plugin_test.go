//go:build e2e

package plugin_e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
)

const (
	registry  = "127.0.0.1:5000"
	alias     = "calico-libnetwork"             // docker plugin install --alias, as in the README
	fullName  = alias + ":latest"               // how Docker names it
	remoteRef = registry + "/calico-libnetwork" // make plugin-push REGISTRY=127.0.0.1:5000
	image     = "calico-e2e/busybox"
)

// env is one sandbox: the engine's socket and the helper script.
type env struct {
	t       *testing.T
	repo    string
	dir     string
	sandbox string
	host    string // DOCKER_HOST
}

func TestManagedPlugin(t *testing.T) {
	started := time.Now()
	e := setUp(t)

	// The Makefile's version, fixed for the whole run (the tree may change meanwhile).
	version := fmt.Sprintf("e2e-%d", time.Now().Unix())
	if out, err := exec.Command("git", "-C", e.repo, "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	t.Logf("step 1: make image plugin-push REGISTRY=%s (version %s)", registry, version)
	e.mustMake("image", "plugin-push", "REGISTRY="+registry, "VERSION="+version)
	if out := e.docker("run", "--rm", "--network", "none", "calico-libnetwork:"+version, "--version"); !strings.Contains(out, version) {
		t.Fatalf("the image's daemon does not report version %s: %q", version, out)
	}
	if out := e.docker("run", "--rm", "--network", "none", "--entrypoint", "/usr/sbin/iptables", "calico-libnetwork:"+version, "--version"); !strings.Contains(out, "iptables v") {
		t.Fatalf("the image's iptables does not run: %q", out)
	}
	if out := e.docker("plugin", "ls", "--format", "{{.Name}}"); strings.TrimSpace(out) != "" {
		t.Fatalf("make plugin-push left plugins installed: %q", out)
	}

	t.Log("step 2: install from the registry as the README says")
	e.sandboxExec("mkdir", "-p", "/var/lib/calico")
	e.docker("plugin", "install", "--grant-all-permissions", "--alias", alias, remoteRef+":latest")
	if out := e.docker("plugin", "inspect", "-f", "{{.Name}} {{.Enabled}} {{.Config.Description}}", alias); !strings.HasPrefix(out, fullName+" true") || !strings.Contains(out, version) {
		t.Fatalf("plugin inspect: %q, want %s enabled with version %s in the description", out, fullName, version)
	}

	t.Log("step 3: networks by the usual names and by the plugin's own name; containers; ping")
	e.docker("network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "net1")
	e.docker("network", "create", "--driver", fullName, "--ipam-driver", fullName, "net2")
	if out := e.docker("network", "inspect", "-f", "{{.Driver}}/{{.IPAM.Driver}}", "net1", "net2"); out != "calico/calico-ipam\n"+fullName+"/"+fullName+"\n" {
		t.Fatalf("network drivers: %q", out)
	}
	for _, c := range [][2]string{{"c1", "net1"}, {"c2", "net1"}, {"c3", "net2"}, {"c4", "net2"}} {
		e.docker("run", "-d", "--name", c[0], "--net", c[1], "--restart=always", "--stop-timeout", "2", image, "sleep", "1d")
	}
	e.pingAll()
	fw := e.sandboxExec("iptables", "-S", "FORWARD")
	if !strings.Contains(fw, "-P FORWARD DROP") || !strings.Contains(fw, "-j CALICO-LIBNETWORK-FWD") {
		t.Fatalf("want FORWARD policy DROP and the jump to CALICO-LIBNETWORK-FWD in the engine's iptables back end:\n%s", fw)
	}

	t.Log("step 4: docker plugin disable is refused while a network uses the plugin")
	if out, err := e.dockerErr("plugin", "disable", alias); err == nil || !strings.Contains(out, "in use") {
		t.Fatalf("docker plugin disable: err %v, output %q; want it refused as in use", err, out)
	}

	t.Log("step 5: restart dockerd; the containers come back with working networking")
	logBefore := len(readFile(filepath.Join(e.dir, "dockerd.log")))
	e.mustSandbox("stop-docker")
	e.mustSandbox("start-docker")
	e.waitRunning(90*time.Second, "c1", "c2", "c3", "c4")
	e.pingAll()
	after := readFile(filepath.Join(e.dir, "dockerd.log"))[logBefore:]
	for _, bad := range []string{"endpoint already exists", "already exists in network", "failed to create endpoint"} {
		if strings.Contains(strings.ToLower(after), bad) {
			t.Fatalf("the engine logged %q after the restart:\n%s", bad, grepLines(after, bad))
		}
	}
	if out := e.docker("plugin", "inspect", "-f", "{{.Enabled}}", alias); strings.TrimSpace(out) != "true" {
		t.Fatalf("plugin not enabled after the restart: %q", out)
	}
	// The plugin's own log reaches the engine's log (plugin=ID).
	if errs := grepLines(readFile(filepath.Join(e.dir, "dockerd.log")), `level=error msg=\"`); errs != "" {
		t.Fatalf("the plugin logged errors:\n%s", errs)
	}

	t.Log("step 6: clean up; disable and remove the plugin")
	e.docker("rm", "-f", "c1", "c2", "c3", "c4")
	e.docker("network", "rm", "net1", "net2")
	e.docker("plugin", "disable", alias)
	e.docker("plugin", "rm", alias)
	if links := e.sandboxExec("ip", "-o", "link", "show"); strings.Contains(links, "cali") {
		t.Fatalf("veths left after the containers were removed:\n%s", links)
	}
	t.Logf("managed plugin e2e passed in %s", time.Since(started).Round(time.Second))
}

func setUp(t *testing.T) *env {
	required := os.Getenv("CALICO_E2E_REQUIRED") == "1"
	skip := func(format string, a ...any) {
		t.Helper()
		if required {
			t.Fatalf("prerequisite missing (CALICO_E2E_REQUIRED=1): "+format, a...)
		}
		t.Skipf("skipped, prerequisite missing: "+format, a...)
	}
	if runtime.GOOS != "linux" {
		skip("needs Linux")
	}
	if os.Geteuid() != 0 {
		skip("needs root (it runs a private dockerd in new namespaces)")
	}
	for _, tool := range []struct{ bin, pkg string }{
		{"dockerd", "docker.io"}, {"docker", "docker.io"}, {"ip", "iproute2"}, {"iptables", "iptables"},
		{"unshare", "util-linux"}, {"nsenter", "util-linux"}, {"docker-registry", "docker-registry"},
		{"readelf", "binutils"}, {"make", "make"},
	} {
		if err := ensureTool(tool.bin, tool.pkg); err != nil {
			skip("%v", err)
		}
	}
	busybox, err := e2eutil.StaticBusybox()
	if err != nil {
		skip("%v", err)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	sandbox := filepath.Join(repo, "scripts", "plugin-sandbox.sh")
	sweepStale(t, sandbox)
	// Short: unix socket paths below it must stay under 108 bytes.
	dir, err := os.MkdirTemp("/tmp", "cpe2e-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, repo: repo, dir: dir, sandbox: sandbox, host: "unix://" + filepath.Join(dir, "docker.sock")}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CALICO_E2E_KEEP") != "" {
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("calico-plugin-e2e-%d.log", time.Now().Unix()))
			if b, err := os.ReadFile(filepath.Join(dir, "dockerd.log")); err == nil {
				_ = os.WriteFile(keep, b, 0o644)
				t.Logf("engine and plugin log kept in %s; last lines:\n%s", keep, lastLines(string(b), 40))
			}
		}
		out, err := exec.Command(e.sandbox, "down", dir).CombinedOutput()
		if err != nil {
			t.Errorf("sandbox down: %v\n%s", err, out)
		}
	})
	e.hold()
	e.mustSandbox("up")
	e.importBusybox(busybox)
	return e
}

// hold starts the sandbox's namespace holder as a child that the kernel
// kills when this test process dies, however it dies (a -timeout panic or
// ^C skip t.Cleanup): with it goes every process of the sandbox.
func (e *env) hold() {
	e.t.Helper()
	logf, err := os.Create(filepath.Join(e.dir, "holder.log"))
	if err != nil {
		e.t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal follows the thread that forked the
		// child: keep this one until the holder is gone.
		runtime.LockOSThread()
		c := exec.Command(e.sandbox, "hold", e.dir)
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setsid: true}
		err := c.Start()
		started <- err
		if err == nil {
			_ = c.Wait()
		}
		logf.Close()
	}()
	if err := <-started; err != nil {
		e.t.Fatalf("start the sandbox holder: %v", err)
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(filepath.Join(e.dir, "holder.pid")); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.t.Fatalf("the sandbox holder wrote no pid file; its log:\n%s", readFile(filepath.Join(e.dir, "holder.log")))
}

// sweepStale removes sandboxes of earlier runs that died without cleaning
// up (their holder is gone, so only files and empty cgroups are left).
func sweepStale(t *testing.T, sandbox string) {
	dirs, _ := filepath.Glob("/tmp/cpe2e-*")
	for _, d := range dirs {
		pid := strings.TrimSpace(readFile(filepath.Join(d, "holder.pid")))
		if pid != "" {
			if _, err := os.Stat("/proc/" + pid); err == nil {
				continue // a sandbox in use
			}
		} else if fi, err := os.Stat(d); err != nil || time.Since(fi.ModTime()) < 2*time.Minute {
			continue // another run's, just being made
		}
		t.Logf("removing the stale sandbox %s", d)
		if out, err := exec.Command(sandbox, "down", d).CombinedOutput(); err != nil {
			t.Logf("sandbox down %s: %v\n%s", d, err, out)
		}
	}
}

func (e *env) cmd(name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), "DOCKER_HOST="+e.host)
	c.Dir = e.repo
	return c
}

func (e *env) must(name string, args ...string) string {
	e.t.Helper()
	out, err := e.cmd(name, args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, lastLines(string(out), 40))
	}
	return string(out)
}

func (e *env) mustMake(args ...string) {
	e.t.Helper()
	start := time.Now()
	e.must("make", args...)
	e.t.Logf("make %s took %s", strings.Join(args, " "), time.Since(start).Round(time.Second))
}

func (e *env) mustSandbox(args ...string) string {
	e.t.Helper()
	return e.must(e.sandbox, append([]string{args[0], e.dir}, args[1:]...)...)
}

func (e *env) sandboxExec(args ...string) string {
	e.t.Helper()
	return e.mustSandbox(append([]string{"exec"}, args...)...)
}

func (e *env) docker(args ...string) string {
	e.t.Helper()
	out, err := e.dockerErr(args...)
	if err != nil {
		e.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) dockerErr(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	c := e.cmd("docker", args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

func (e *env) ip(container string) string {
	e.t.Helper()
	ip := strings.TrimSpace(e.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container))
	if ip == "" {
		e.t.Fatalf("container %s has no IPv4 address", container)
	}
	return ip
}

// pingAll pings within each network, both ways: c1 and c2 on net1 (the
// usual names), c3 and c4 on net2 (the plugin's own name). The networks are
// isolated from each other by policy.
func (e *env) pingAll() {
	e.t.Helper()
	for _, p := range [][2]string{{"c1", "c2"}, {"c2", "c1"}, {"c3", "c4"}, {"c4", "c3"}} {
		ip := e.ip(p[1])
		if out, err := e.dockerErr("exec", p[0], "ping", "-c", "2", "-W", "2", ip); err != nil {
			e.t.Fatalf("%s cannot ping %s (%s): %v\n%s\nroutes in the sandbox:\n%s", p[0], p[1], ip, err, out, e.sandboxExec("ip", "route"))
		}
	}
}

func (e *env) waitRunning(timeout time.Duration, names ...string) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := e.dockerErr(append([]string{"inspect", "-f", "{{.Name}} {{.State.Running}} {{.State.Error}}"}, names...)...)
		if err == nil && strings.Count(out, " true ") == len(names) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("containers not running %s after the restart:\n%s", timeout, out)
		}
		time.Sleep(time.Second)
	}
}

// importBusybox makes the test image from the host's static busybox.
func (e *env) importBusybox(busybox string) {
	e.t.Helper()
	rootfs, err := e2eutil.BusyboxRootfs(busybox)
	must(e.t, err)
	c := e.cmd("docker", e2eutil.ImportArgs(image)...)
	c.Stdin = bytes.NewReader(rootfs)
	if out, err := c.CombinedOutput(); err != nil {
		e.t.Fatalf("docker import: %v\n%s", err, out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ensureTool installs what the test needs; Debian starts a packaged service
// such as docker-registry on install, but this test runs its own, inside the
// sandbox, and leaves the host alone.
func ensureTool(bin, pkg string) error {
	if err := e2eutil.EnsureTool(bin, pkg); err != nil {
		return err
	}
	if pkg == "docker-registry" {
		_ = exec.Command("service", "docker-registry", "stop").Run()
	}
	return nil
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(strings.ToLower(l), substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func lastLines(s string, n int) string { return e2eutil.LastLines(s, n) }
