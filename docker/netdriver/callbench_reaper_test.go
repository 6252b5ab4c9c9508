package netdriver_test

import (
	"context"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
)

// startBackground runs what the daemon runs beside the driver, in the
// test's namespace: the veth reaper.
func startBackground(t *testing.T, ctx context.Context, d *netdriver.Driver, host ns.NetNS) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = host.Do(func(ns.NetNS) error { d.RunReaper(ctx); return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
}
