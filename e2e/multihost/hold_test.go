//go:build e2e

package multihost

import (
	"os"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// TestHoldTestbed builds the testbed with the pool and net1 and keeps it for
// CALICO_MH_HOLD seconds, for poking at by hand (the namespaces, sockets
// and logs are printed). It is skipped unless CALICO_MH_HOLD is set.
func TestHoldTestbed(t *testing.T) {
	secs := atoi(os.Getenv("CALICO_MH_HOLD"))
	if secs <= 0 {
		t.Skip("set CALICO_MH_HOLD=<seconds> to keep a testbed up for manual use")
	}
	tb := New(t, Options{})
	tb.CreatePool(t, api.IPPool{Name: poolName, CIDR: poolCIDR, BlockSize: 26, VXLANMode: api.EncapCrossSubnet, IPIPMode: api.EncapNever, NATOutgoing: true})
	tb.Hosts[0].Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--subnet", poolCIDR, netName)
	for _, h := range tb.Hosts {
		t.Logf("%s: netns %s, docker -H unix://%s, daemon log %s", h.Name, h.NetNS, h.DockerSock, h.Daemon().LogPath)
	}
	t.Logf("router netns %s, outside netns %s; holding for %ds", tb.Router, tb.Outside, secs)
	time.Sleep(time.Duration(secs) * time.Second)
}
