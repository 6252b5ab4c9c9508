//go:build e2e

package multihost

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The suite is required in CI: with CALICO_E2E_REQUIRED=1 a missing
// prerequisite is a failure, not a skip, and the marker file named by
// CALICO_E2E_MULTIHOST_MARKER is written only when the multi-host scenario
// really ran and passed (CI fails when the marker is missing).

var suite struct {
	sync.Mutex
	ran, skipped []string
}

// begin registers a required top-level test for the marker.
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

func TestMain(m *testing.M) {
	flag.Parse()
	started := time.Now()
	code := m.Run()
	_ = os.RemoveAll(filepath.Join(baseDir, "bin-"+strings.ReplaceAll(ownerToken(), " ", "-")))
	suite.Lock()
	ran, skipped := suite.ran, suite.skipped
	suite.Unlock()
	fmt.Printf("multihost e2e: %d required test(s) ran, %d skipped, in %s\n", len(ran), len(skipped), time.Since(started).Round(time.Second))
	marker := os.Getenv("CALICO_E2E_MULTIHOST_MARKER")
	switch {
	case code != 0:
		fmt.Println("multihost e2e: FAILED; marker not written")
	case marker == "":
	case len(ran) == 0:
		fmt.Println("multihost e2e: marker not written: the multi-host scenario did not run")
	case len(skipped) > 0:
		fmt.Println("multihost e2e: marker not written: skipped:", strings.Join(skipped, ", "))
	default:
		body := fmt.Sprintf("calico-libnetwork multi-host e2e passed: %s, %s, finished %s\n",
			strings.Join(ran, ", "), time.Since(started).Round(time.Second), time.Now().UTC().Format(time.RFC3339))
		if err := os.WriteFile(marker, []byte(body), 0o644); err != nil {
			fmt.Println("multihost e2e: cannot write marker:", err)
			code = 1
		} else {
			fmt.Println("multihost e2e: marker written to", marker)
		}
	}
	os.Exit(code)
}
