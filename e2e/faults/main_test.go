//go:build e2e

// Package faults is the fault end-to-end suite: the real daemon, driven over
// its plugin sockets exactly as Docker drives it, at the points Docker
// cannot be stopped at. Replays of every handler, a late release after the
// address changed hands, kill -9 between the steps of an endpoint's life, a
// datastore wiped under running endpoints, and etcd stopped. Each daemon
// runs in a network namespace of the test's own, so its veths, routes and
// rules never touch the machine's; its Docker engine, where the garbage
// collector needs one, is a small recorded stand-in serving the two calls
// the collector makes (Docker itself cannot be stopped between
// RequestAddress and CreateEndpoint). The single-host suite does the same
// with a real engine where a real engine can do it.
package faults

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	workDir string
	bin     string // the daemon under test
	suite   struct {
		sync.Mutex
		ran, skipped []string
	}
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	required := os.Getenv("CALICO_E2E_REQUIRED") == "1"
	if why := prereqs(); why != "" {
		if required {
			banner("FAULTS E2E SUITE FAILED: prerequisite missing and CALICO_E2E_REQUIRED=1: " + why)
			return 1
		}
		banner("FAULTS E2E SUITE SKIPPED: " + why + "\n(set CALICO_E2E_REQUIRED=1 to make this a failure)")
		return 0
	}
	var err error
	if workDir, err = os.MkdirTemp("", "calico-faults-"); err != nil {
		fmt.Println(err)
		return 1
	}
	bin = filepath.Join(workDir, "calico-libnetwork")
	build := exec.Command("go", "build", "-o", bin, "./cmd/calico-libnetwork")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		banner("FAULTS E2E SUITE FAILED: build the daemon: " + err.Error() + "\n" + string(out))
		return 1
	}
	started := time.Now()
	code := m.Run()
	suite.Lock()
	ran, skipped := suite.ran, suite.skipped
	suite.Unlock()
	fmt.Printf("faults e2e: %d tests ran, %d skipped, in %s\n", len(ran), len(skipped), time.Since(started).Round(time.Second))
	if code != 0 {
		banner("FAULTS E2E SUITE FAILED (work dir kept: " + workDir + ")")
		return code
	}
	os.RemoveAll(workDir)
	if marker := os.Getenv("CALICO_E2E_FAULTS_MARKER"); marker != "" {
		switch {
		case len(ran) == 0 || len(skipped) > 0:
			fmt.Println("faults e2e: marker not written: skipped:", strings.Join(skipped, ", "))
		case flag.Lookup("test.run").Value.String() != "":
			fmt.Println("faults e2e: marker not written: -run selected a subset")
		default:
			body := fmt.Sprintf("faults e2e suite passed: %d tests, %s\n%s\n", len(ran), time.Since(started).Round(time.Second), strings.Join(ran, "\n"))
			if err := os.WriteFile(marker, []byte(body), 0o644); err != nil {
				fmt.Println(err)
				return 1
			}
		}
	}
	return 0
}

func prereqs() string {
	if runtime.GOOS != "linux" {
		return "needs Linux"
	}
	if os.Geteuid() != 0 {
		return "needs root (network namespaces, veths)"
	}
	for _, tool := range []string{"ip", "etcd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed (Debian packages iproute2, etcd-server)"
		}
	}
	return ""
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
		if t.Skipped() {
			suite.skipped = append(suite.skipped, t.Name())
		} else {
			suite.ran = append(suite.ran, t.Name())
		}
	})
}

var errTimeout = errors.New("timed out")

// eventually polls cond until it returns nil or d passes.
func eventually(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s: %v", errTimeout, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
