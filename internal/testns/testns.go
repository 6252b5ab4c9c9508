// Package testns gives tests throwaway network namespaces, so kernel work is
// real but never touches the machine's own namespace.
package testns

import (
	"os"
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// New creates a network namespace that is removed when the test ends. Tests
// that need one are skipped unless run as root, and fail instead when
// CALICO_REQUIRE_ROOT_TESTS=1 (as in CI) so they cannot silently not run.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	// Loopback up, as in any real namespace.
	Do(t, n, func() { _ = exec.Command("ip", "link", "set", "lo", "up").Run() })
	return n
}

// RequireRoot skips (or, in CI, fails) a test that needs root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CALICO_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatalf("this test needs root and CALICO_REQUIRE_ROOT_TESTS=1")
	}
	t.Skip("SKIPPED: needs root for network namespaces")
}

// Do runs fn inside n on a locked OS thread.
func Do(t testing.TB, n ns.NetNS, fn func()) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { fn(); return nil }); err != nil {
		t.Fatalf("enter namespace: %v", err)
	}
}

// Run runs a command inside n and returns its combined output.
func Run(n interface{ Path() string }, name string, args ...string) (string, error) {
	full := append([]string{"--net=" + n.Path(), name}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	return string(out), err
}
