// Package testetcd gives tests a real, throwaway etcd: an embedded single
// member on loopback with its data in the test's temporary directory.
//
// Every call starts its own etcd, so tests that use it may run in parallel
// and never see each other's keys. Starting one typically takes under a second.
package testetcd

import (
	"context"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/datastore/embedded"
)

// startTimeout bounds etcd's start-up; a loaded CI machine running -race can
// be slow, so it is generous.
const startTimeout = 90 * time.Second

// Start runs an embedded etcd in t.TempDir() and returns a store connected to
// it. The store is closed and etcd stopped when the test ends. Its client URL
// is s.Endpoints()[0], for code under test that dials etcd itself (e.g. a
// child process).
func Start(t testing.TB) *datastore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	s, err := embedded.Open(ctx, datastore.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	// Registered after t.TempDir's own clean-up, so it runs first: etcd is
	// stopped before its data dir is removed.
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Logf("close etcd client: %v", err)
		}
	})
	return s
}
