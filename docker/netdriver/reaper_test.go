package netdriver

import (
	"context"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// TestLeftVethReaped: while the reaper runs, Leave and DeleteEndpoint
// answer before the veth is deleted. Until it is: repair does not adopt it
// (its record is gone: it is no running endpoint), and a Join of a veth of
// the same name waits, then gets a veth of its own that the reaper leaves
// alone. Once the reaper stops, Leave deletes at once again.
func TestLeftVethReaped(t *testing.T) {
	d, _ := newDriver(t)
	host := testns.New(t)
	const id = "cccccccccccccccccccccccccccccccc"
	veth := HostIfaceName(id)
	create := func() {
		t.Helper()
		if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: "net1", EndpointID: id,
			Interface: &network.EndpointInterface{Address: "10.1.0.7/32"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: "net1", IPv4Data: calicoData("0.0.0.0/0")}); err != nil {
		t.Fatal(err)
	}
	create()
	var firstIndex int
	testns.Do(t, host, func() {
		if _, err := d.Join(&network.JoinRequest{NetworkID: "net1", EndpointID: id, SandboxKey: "/var/run/docker/netns/c"}); err != nil {
			t.Fatal(err)
		}
		firstIndex = linkIndex(t, veth)
		// The reaper is on, but its loop not started yet: what is queued
		// stays queued, so the window between Leave and the delete is
		// held open.
		d.reap.mu.Lock()
		d.reap.running = true
		d.reap.mu.Unlock()
		if err := d.Leave(&network.LeaveRequest{NetworkID: "net1", EndpointID: id}); err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: "net1", EndpointID: id}); err != nil {
			t.Fatal(err)
		}
		if !dataplane.LinkExists(veth) {
			t.Fatal("the veth went before the reaper ran: this test holds nothing open")
		}
		// Its address is free now and may be another host's container's:
		// nothing may still be routed to the veth waiting for deletion.
		if rs, err := dataplane.OurRoutes(); err != nil || len(rs) != 0 {
			t.Fatalf("routes to a left endpoint's veth while it waits for deletion: %v, %v", rs, err)
		}
		res, err := d.Reconcile(context.Background())
		if err != nil || res.Adopted != 0 {
			t.Fatalf("reconcile = %+v, %v: a left veth waiting for its delete was adopted", res, err)
		}
	})

	// The same endpoint again (as after a replay): its Join waits for the delete.
	create()
	joined := make(chan error, 1)
	go func() {
		joined <- host.Do(func(ns.NetNS) error {
			_, err := d.Join(&network.JoinRequest{NetworkID: "net1", EndpointID: id, SandboxKey: "/var/run/docker/netns/c"})
			return err
		})
	}()
	select {
	case err := <-joined:
		t.Fatalf("Join answered (%v) while the earlier veth of its name was still queued for deletion", err)
	case <-time.After(200 * time.Millisecond):
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- host.Do(func(ns.NetNS) error { d.RunReaper(ctx); return nil }) }()
	if err := <-joined; err != nil {
		t.Fatalf("Join after the delete: %v", err)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	testns.Do(t, host, func() {
		if idx := linkIndex(t, veth); idx == 0 || idx == firstIndex {
			t.Fatalf("after the reaper: veth %s index %d (the left one was %d), want the new Join's own", veth, idx, firstIndex)
		}
		if err := d.Leave(&network.LeaveRequest{NetworkID: "net1", EndpointID: id}); err != nil {
			t.Fatal(err)
		}
		if dataplane.LinkExists(veth) {
			t.Fatal("with the reaper stopped, Leave left the veth")
		}
	})
}

// linkIndex is the index of the link of that name, 0 when there is none.
func linkIndex(t *testing.T, name string) int {
	t.Helper()
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return 0
	}
	return l.Attrs().Index
}
