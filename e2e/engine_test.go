//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
)

// The suite runs against an engine of its own: TestMain starts a sandbox
// (scripts/plugin-sandbox.sh: fresh /run and /var/lib, its own network
// namespace and uplink, FORWARD policy DROP, its own dockerd and
// containerd) with the engine CALICO_E2E_ENGINE names (20.10: the
// machine's docker.io, the default; 28.5: Debian forky's, fetched into the
// tests' cache by scripts/docker-engine.sh) and runs the test binary again
// inside it. Every helper then sees the sandbox as "the host": ip, iptables,
// nft, /run/docker/plugins and the docker CLI are the sandbox's. With
// CALICO_E2E_ENGINE=host the suite drives the machine's running dockerd as
// before (nothing sandboxed).

// runOutside starts the sandbox and runs the suite in it; done is false
// when this process is the one to run the tests (inside the sandbox, or
// with the machine's engine).
func runOutside() (code int, done bool) {
	engine := e2eutil.EngineFromEnv()
	if e2eutil.InSandbox() != "" || engine == e2eutil.EngineHost || runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return 0, false // runSuite reports what is missing
	}
	required := os.Getenv("CALICO_E2E_REQUIRED") == "1"
	fail := func(err error) (int, bool) {
		var pe *prereqError
		if errors.As(err, &pe) && !required {
			banner(fmt.Sprintf("E2E SUITE SKIPPED (engine %s): %s\n(set CALICO_E2E_REQUIRED=1 to make this a failure)", engine, pe.reason))
			return 0, true
		}
		banner(fmt.Sprintf("E2E SUITE FAILED (engine %s) during set-up: %v", engine, err))
		return 1, true
	}
	// What the suite needs is installed out here: inside, /var/lib is the
	// sandbox's own and apt cannot run.
	for _, tool := range []struct{ bin, pkg string }{
		{"dockerd", "docker.io"}, {"docker", "docker.io"}, {"ip", "iproute2"}, {"iptables", "iptables"},
		{"nft", "nftables"}, {"unshare", "util-linux"}, {"nsenter", "util-linux"},
		// The security tests: a real etcd on the host's address, curl and
		// etcdctl as an unprivileged user, setpriv.
		{"etcd", "etcd-server"}, {"etcdctl", "etcd-client"}, {"curl", "curl"}, {"setpriv", "util-linux"},
	} {
		if err := ensureTool(tool.bin, tool.pkg); err != nil {
			return fail(err)
		}
	}
	if _, err := ensureStaticBusybox(); err != nil {
		return fail(err)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		return fail(err)
	}
	var env []string
	if os.Getenv("CALICO_E2E_BIN") == "" {
		dir, err := os.MkdirTemp("", "calico-e2e-bin-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "calico-libnetwork")
		build := exec.Command("go", "build", "-o", bin, "./cmd/calico-libnetwork")
		build.Dir = repo
		if out, err := build.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("build the daemon: %v\n%s", err, out))
		}
		env = append(env, "CALICO_E2E_BIN="+bin)
	}
	if _, err := e2eutil.FetchEngine(repo, engine); err != nil {
		return fail(prereq("Docker %s: %v", engine, err))
	}
	code, err = e2eutil.Reexec(repo, engine, env)
	if err != nil {
		return fail(err)
	}
	return code, true
}

// engineVersion is the engine's version as `docker version` reports it.
func engineVersion() string {
	out, _, err := dockerRun("version", "--format", "{{.Server.Version}}")
	if err != nil {
		return "unknown"
	}
	return out
}

// engineMajor is the engine's major version (20, 28, ...), 0 if unknown.
func engineMajor() int {
	var major int
	fmt.Sscanf(engineVersion(), "%d.", &major)
	return major
}

// notApplicable holds the tests needEngine skipped: not a skip of the
// suite (the marker is still written), listed in the summary and the
// marker; the run on the newer engine must run them.
var notApplicable = map[string]bool{}

// needEngine skips the test, loudly, unless the engine is at least major.
func needEngine(t *testing.T, major int, why string) {
	t.Helper()
	if got := engineMajor(); got < major {
		suite.Lock()
		notApplicable[t.Name()] = true
		suite.Unlock()
		t.Skipf("SKIPPED on Docker %s: %s needs Docker %d or newer (CALICO_E2E_ENGINE=28.5 runs it)", engineVersion(), why, major)
	}
}

// restartEngine restarts the suite's engine (SIGTERM, then a start, as a
// host's service manager does), with daemonJSON as its configuration when
// not empty. Only a sandboxed engine is restarted; with the machine's own
// the test is skipped.
func restartEngine(t *testing.T, daemonJSON string) {
	t.Helper()
	dir := e2eutil.InSandbox()
	if dir == "" {
		t.Skip("SKIPPED: restarting the engine needs the sandboxed engine (CALICO_E2E_ENGINE other than host)")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if err := e2eutil.RestartEngine(repo, dir, daemonJSON); err != nil {
		t.Fatal(err)
	}
}

// engineLog is the sandboxed engine's log ("" with the machine's engine).
func engineLog() string {
	if dir := e2eutil.InSandbox(); dir != "" {
		return e2eutil.DockerLog(dir)
	}
	return ""
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// openStore connects to the suite daemon's embedded etcd (its endpoint is
// in <data dir>/etcd-endpoint), closed when the test ends.
func openStore(t *testing.T) *datastore.Store {
	t.Helper()
	ep := strings.TrimSpace(readFile(filepath.Join(dmn.dataDir, "etcd-endpoint")))
	if ep == "" {
		t.Fatalf("no etcd-endpoint file in %s", dmn.dataDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
