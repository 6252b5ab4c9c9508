//go:build e2e

package e2e

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/mssclamp"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
)

// Image is the test image, imported from the host's static busybox.
const Image = "calico-e2e/busybox"

// Label marks every container and network the suite creates, so a crashed
// run's leftovers can be found and removed; its value is the run's ID.
const Label = "calico-e2e"

// runID tells this run's objects from those of earlier runs.
var runID = fmt.Sprintf("%04x", time.Now().UnixNano()&0xffff)

func labelArg() string { return Label + "=" + runID }

var (
	dmn       *daemon // the daemon under test
	workDir   string  // temp dir: binary, data dir, logs
	busybox   string  // path of the host's static busybox
	defaultV6 string  // the default IPv6 pool the daemon created, e.g. fd12:3456:789a::/48

	cleanupBlockRoutes func() // removes the block routes the suite's daemon made
	cleanupChains      func() // removes the iptables chains the suite's daemon made
	suite              struct {
		sync.Mutex
		ran, skipped []string
		na           []string // not applicable on this engine (needEngine); another engine's run covers them
	}
)

// prereqError is a missing prerequisite: the suite is skipped (or, with
// CALICO_E2E_REQUIRED=1, failed) rather than reported as a product failure.
type prereqError struct{ reason string }

func (e *prereqError) Error() string { return e.reason }

func prereq(format string, a ...any) error { return &prereqError{fmt.Sprintf(format, a...)} }

func TestMain(m *testing.M) {
	flag.Parse()
	if code, done := runOutside(); done {
		os.Exit(code)
	}
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	required := os.Getenv("CALICO_E2E_REQUIRED") == "1"
	started := time.Now()
	cleanupSetup, err := setUp()
	if err != nil {
		var pe *prereqError
		if errors.As(err, &pe) && !required {
			banner("E2E SUITE SKIPPED: " + pe.reason + "\n(set CALICO_E2E_REQUIRED=1 to make this a failure)")
			return 0
		}
		if errors.As(err, &pe) {
			banner("E2E SUITE FAILED: prerequisite missing and CALICO_E2E_REQUIRED=1: " + pe.reason)
		} else {
			banner("E2E SUITE FAILED during set-up: " + err.Error())
		}
		if cleanupSetup != nil {
			cleanupSetup(false)
		}
		return 1
	}

	engine := engineVersion()
	fmt.Printf("e2e: engine Docker %s (CALICO_E2E_ENGINE=%s)\n", engine, e2eutil.EngineFromEnv())
	code := m.Run()

	var kept []string
	stuck.Range(func(k, _ any) bool { kept = append(kept, k.(string)); return true })
	if len(kept) > 0 {
		banner(fmt.Sprintf("NOTE: Docker kept %d network(s) it wrongly counts endpoints on (moby/moby#42119,\n"+
			"fixed by Docker 28.1 dropping the count): %s\nThey go away when dockerd restarts; they are not the daemon's doing.",
			len(kept), strings.Join(kept, " ")))
	}

	ok := code == 0
	cleanupSetup(ok)
	suite.Lock()
	ran, skipped, na := suite.ran, suite.skipped, suite.na
	suite.Unlock()
	fmt.Printf("e2e: %d tests ran, %d skipped, in %s\n", len(ran), len(skipped), time.Since(started).Round(time.Second))
	if len(na) > 0 {
		banner(fmt.Sprintf("NOT APPLICABLE on Docker %s (the run on a newer engine covers them): %s", engine, strings.Join(na, ", ")))
	}
	if !ok {
		banner("E2E SUITE FAILED (daemon log: " + dmn.logPath + ")")
		return code
	}
	if marker := os.Getenv("CALICO_E2E_MARKER"); marker != "" {
		switch {
		case len(ran) == 0:
			fmt.Println("e2e: marker not written: no test ran")
		case len(skipped) > 0:
			fmt.Println("e2e: marker not written: skipped:", strings.Join(skipped, ", "))
		case flagSet("test.run") || flagSet("test.skip"):
			fmt.Println("e2e: marker not written: -run/-skip selected a subset of the suite")
		default:
			body := fmt.Sprintf("calico-libnetwork e2e suite passed on Docker %s: %d tests, 0 skipped, %d not applicable to this engine (%s), %s, finished %s\n%s\n",
				engine, len(ran), len(na), strings.Join(na, " "), time.Since(started).Round(time.Second), time.Now().UTC().Format(time.RFC3339), strings.Join(ran, "\n"))
			if err := os.WriteFile(marker, []byte(body), 0o644); err != nil {
				fmt.Println("e2e: cannot write marker:", err)
				return 1
			}
			fmt.Println("e2e: marker written to", marker)
		}
	}
	return 0
}

func flagSet(name string) bool {
	f := flag.Lookup(name)
	return f != nil && f.Value.String() != ""
}

func banner(msg string) {
	line := strings.Repeat("=", 78)
	fmt.Printf("\n%s\n%s\n%s\n\n", line, msg, line)
}

// begin marks a top-level test as part of the suite, for the marker.
func begin(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		suite.Lock()
		defer suite.Unlock()
		if t.Skipped() && notApplicable[t.Name()] {
			suite.na = append(suite.na, t.Name())
		} else if t.Skipped() {
			suite.skipped = append(suite.skipped, t.Name())
		} else {
			suite.ran = append(suite.ran, t.Name())
		}
	})
	if engineDiscarded.Load() { // counted as skipped: no marker
		t.Skip("SKIPPED: the 1,000-container bench stopped the sandbox's engine for good (its teardown); run this test in another run")
	}
}

// setUp makes the machine ready and starts the daemon. The returned
// function undoes what the suite started; it keeps the work dir when the
// run failed.
func setUp() (func(ok bool), error) {
	if err := setUpMachine(); err != nil {
		return nil, err
	}
	var err error
	workDir, err = os.MkdirTemp("", "calico-e2e-")
	if err != nil {
		return nil, err
	}
	bin, err := daemonBinary()
	if err != nil {
		return tearDown, err
	}
	dmn = &daemon{
		bin:       bin,
		dataDir:   filepath.Join(workDir, "data"),
		pluginDir: "/run/docker/plugins",
		logPath:   filepath.Join(workDir, "daemon.log"),
	}
	noteLeftovers()
	if err := dmn.start(); err != nil {
		return tearDown, err
	}
	if m := regexp.MustCompile(`created default IP pool.*cidr=(\S+:\S*)`).FindStringSubmatch(readFile(dmn.logPath)); m != nil {
		defaultV6 = m[1]
	}
	fmt.Printf("e2e: daemon %s running, data dir %s, log %s, default IPv6 pool %q\n", bin, dmn.dataDir, dmn.logPath, defaultV6)
	removeLabelled() // leftovers of a crashed earlier run
	return tearDown, nil
}

// setUpMachine checks the prerequisites, installs the tools the suite
// needs, starts dockerd and imports the test image.
func setUpMachine() error {
	if runtime.GOOS != "linux" {
		return prereq("the e2e suite needs Linux (this is %s)", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return prereq("the e2e suite needs root (it creates veths and runs dockerd)")
	}
	for _, tool := range []struct{ bin, pkg string }{
		{"dockerd", "docker.io"}, {"docker", "docker.io"}, {"ip", "iproute2"}, {"iptables", "iptables"},
	} {
		if err := ensureTool(tool.bin, tool.pkg); err != nil {
			return err
		}
	}
	var err error
	if busybox, err = ensureStaticBusybox(); err != nil {
		return err
	}
	if err := ensureDockerd(); err != nil {
		return err
	}
	if err := importImage(); err != nil {
		return fmt.Errorf("import %s: %w", Image, err)
	}
	return nil
}

// tearDown undoes what the suite started; it keeps the work dir when the
// run failed (not ok) or CALICO_E2E_KEEP is set.
func tearDown(ok bool) {
	removeLabelled()
	if dmn != nil {
		if err := dmn.stop(syscall.SIGTERM); err != nil {
			fmt.Println("e2e: stopping the daemon:", err)
		}
	}
	// The blackhole routes for this host's blocks outlive the daemon by
	// design, but the suite's datastore goes away with the work dir.
	if cleanupBlockRoutes != nil {
		cleanupBlockRoutes()
	}
	if cleanupChains != nil {
		cleanupChains()
	}
	if ok && os.Getenv("CALICO_E2E_KEEP") == "" {
		os.RemoveAll(workDir)
	} else {
		fmt.Println("e2e: work dir kept:", workDir)
		if dmn != nil {
			fmt.Printf("e2e: last lines of the daemon log %s:\n%s\n", dmn.logPath, tail(dmn.logPath, 60))
		}
	}
}

// daemonBinary is CALICO_E2E_BIN, or the daemon built into the work dir.
func daemonBinary() (string, error) {
	bin := os.Getenv("CALICO_E2E_BIN")
	if bin == "" {
		bin = filepath.Join(workDir, "calico-libnetwork")
		build := exec.Command("go", "build", "-o", bin, "./cmd/calico-libnetwork")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build the daemon: %v\n%s", err, out)
		}
		return bin, nil
	}
	return filepath.Abs(bin)
}

// noteLeftovers records what the daemon will leave behind by design, so
// that tearDown removes exactly that.
func noteLeftovers() {
	// The daemon takes over every block route on the host at its start
	// (it reconciles them to its datastore), so the suite removes them all
	// when it is done with that datastore.
	cleanupBlockRoutes = removeBlockRoutes
	// The daemon's iptables chains (FORWARD accepts, NAT outgoing for the
	// suite's pools) also outlive it by design; the suite removes those it
	// did not find.
	preChains := ourChains()
	// So does its nftables policy table (it keeps enforcing while no
	// daemon runs); the suite removes it if it made it.
	preTable, preHost, preClamp := policyTableExists(), hostTableExists(), clampTableExists()
	cleanupChains = func() {
		removeChains(preChains)
		if !preTable {
			removePolicyTable()
		}
		if !preClamp {
			removeClampTable()
		}
		if !preHost {
			removeHostTable() // security_test.go
		}
	}
}

// The shared helpers' errors are missing prerequisites here.
func aptInstall(pkg string) error {
	fmt.Printf("e2e: installing %s with apt-get\n", pkg)
	if err := e2eutil.AptInstall(pkg); err != nil {
		return prereq("%v", err)
	}
	return nil
}

func ensureTool(bin, pkg string) error {
	if err := e2eutil.EnsureTool(bin, pkg); err != nil {
		return prereq("%v", err)
	}
	return nil
}

// ensureStaticBusybox finds a statically linked busybox (busybox-static),
// installing it when needed: the image has no libc.
func ensureStaticBusybox() (string, error) {
	p, err := e2eutil.StaticBusybox()
	if err != nil {
		return "", prereq("%v", err)
	}
	return p, nil
}

// ensureDockerd starts dockerd in the background when `docker info` fails.
// A dockerd the suite started is left running for later runs.
func ensureDockerd() error {
	if err := exec.Command("docker", "info").Run(); err == nil {
		return nil
	}
	logf, err := os.CreateTemp("", "calico-e2e-dockerd-*.log")
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Println("e2e: docker info failed; starting dockerd, log in", logf.Name())
	cmd := exec.Command("dockerd")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return prereq("start dockerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return prereq("dockerd exited at start (%v); its log %s ends:\n%s", err, logf.Name(), tail(logf.Name(), 20))
		case <-time.After(time.Second):
		}
		if exec.Command("docker", "info").Run() == nil {
			fmt.Printf("e2e: dockerd started (pid %d); it is left running\n", cmd.Process.Pid)
			return nil
		}
	}
	return prereq("dockerd did not answer `docker info` within 60s; its log %s ends:\n%s", logf.Name(), tail(logf.Name(), 20))
}

// importImage builds calico-e2e/busybox from the host's static busybox with
// every applet linked, by `docker import` of a tar made here.
func importImage() error {
	rootfs, err := e2eutil.BusyboxRootfs(busybox)
	if err != nil {
		return err
	}
	cmd := exec.Command("docker", e2eutil.ImportArgs(Image)...)
	cmd.Stdin = bytes.NewReader(rootfs)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker import: %v: %s", err, out)
	}
	return nil
}

// removeLabelled force-removes every container and network carrying Label,
// of this run or an earlier one.
func removeLabelled() {
	if out, _, err := dockerRun("ps", "-aq", "--filter", "label="+Label); err == nil {
		if ids := strings.Fields(out); len(ids) > 0 {
			fmt.Printf("e2e: removing %d leftover container(s)\n", len(ids))
			dockerRun(append([]string{"rm", "-f"}, ids...)...)
		}
	}
	if out, _, err := dockerRun("network", "ls", "-q", "--filter", "label="+Label); err == nil {
		for _, id := range strings.Fields(out) {
			if _, errOut, err := dockerRun("network", "rm", id); err != nil {
				fmt.Printf("e2e: cannot remove leftover network %s: %s\n", id, firstLine(errOut))
			} else {
				fmt.Printf("e2e: removed leftover network %s\n", id)
			}
		}
	}
}

// removeBlockRoutes deletes the routes with the product's block-route
// protocol.
func removeBlockRoutes() {
	rs, err := blockRoutes()
	if err != nil {
		fmt.Println("e2e: list block routes:", err)
		return
	}
	for _, r := range rs {
		args := []string{"-4", "route", "del"}
		if strings.Contains(r.Dst, ":") {
			args[0] = "-6"
		}
		if r.Type != "" && r.Type != "unicast" {
			args = append(args, r.Type)
		}
		args = append(args, r.Dst, "proto", blockRouteProto)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Printf("e2e: ip %s: %v: %s\n", strings.Join(args, " "), err, out)
		}
	}
}

// chainPrefix starts the name of every iptables chain the daemon makes.
const chainPrefix = "CALICO-LIBNETWORK"

// ourChains lists the daemon's iptables chains as "iptables|table|chain".
func ourChains() map[string]bool {
	out := map[string]bool{}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			b, err := exec.Command(ipt, "-t", table, "-S").Output()
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if chain, ok := strings.CutPrefix(line, "-N "); ok && strings.HasPrefix(chain, chainPrefix) {
					out[ipt+"|"+table+"|"+chain] = true
				}
			}
		}
	}
	return out
}

// removeChains deletes the daemon's chains that are not in keep, and the
// rules that jump to them.
func removeChains(keep map[string]bool) {
	for key := range ourChains() {
		if keep[key] {
			continue
		}
		f := strings.Split(key, "|")
		ipt, table, chain := f[0], f[1], f[2]
		b, _ := exec.Command(ipt, "-t", table, "-S").Output()
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "-A ") || !strings.HasSuffix(line, "-j "+chain) {
				continue
			}
			// -S prints rules in a form -D takes back, quoting included;
			// let the shell split it.
			rule := "-D " + strings.TrimPrefix(line, "-A ")
			if out, err := exec.Command("sh", "-c", ipt+" -t "+table+" "+rule).CombinedOutput(); err != nil {
				fmt.Printf("e2e: %s -t %s %s: %v: %s\n", ipt, table, rule, err, out)
			}
		}
		for _, op := range []string{"-F", "-X"} {
			if out, err := exec.Command(ipt, "-t", table, op, chain).CombinedOutput(); err != nil {
				fmt.Printf("e2e: %s -t %s %s %s: %v: %s\n", ipt, table, op, chain, err, out)
			}
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tail(path string, n int) string { return e2eutil.LastLines(readFile(path), n) }

func policyTableExists() bool {
	out, err := exec.Command("nft", "list", "tables").Output()
	return err == nil && strings.Contains(string(out), "inet "+nftpolicy.DefaultTable+"\n")
}

func clampTableExists() bool {
	out, err := exec.Command("nft", "list", "tables").Output()
	return err == nil && strings.Contains(string(out), "inet "+mssclamp.Table+"\n")
}

func removeClampTable() {
	if err := mssclamp.New(nftpolicy.DefaultIfacePrefix).Remove(); err != nil {
		fmt.Println("e2e: removing the MSS clamp table:", err)
	}
}

func removePolicyTable() {
	enf, err := nftpolicy.New(nftpolicy.Config{})
	if err == nil {
		err = enf.Remove()
	}
	if err != nil {
		fmt.Println("e2e: removing the policy table:", err)
	}
}
