package ctl

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// TestNodeStatusBGP: the speaker's sessions in Calico's table, per family,
// and what each peer sent; BGP off says why.
func TestNodeStatusBGP(t *testing.T) {
	for _, tc := range []struct {
		name string
		bgp  *api.BGPStatus
		want []string
		not  []string
	}{
		{"off", &api.BGPStatus{Off: "no BGPConfiguration named default (calicoctl apply one to turn BGP on)"},
			[]string{"BGP: off: no BGPConfiguration named default"}, []string{"IPv4 BGP status"}},
		{"no speaker", nil, nil, []string{"BGP:", "BGP status"}},
		{"peers", &api.BGPStatus{Enabled: true, ASNumber: 64512, RouterID: "10.0.0.1", Listen: "10.0.0.1:179", MD5: "available",
			Announced: []string{"192.168.1.0/26"}, Installed: []string{"192.168.2.0/26 via 10.0.0.2 dev eth0 metric 2000"},
			Peers: []api.BGPPeerStatus{
				{Address: "10.0.0.2", Type: "node-to-node mesh", Name: "host-2", ASNumber: 64512, State: "up", Since: testNow.Add(-time.Hour), Info: "Established", Received: 1, Prefixes: []string{"192.168.2.0/26"}},
				{Address: "10.0.0.254", Type: "global", Name: "tor", ASNumber: 65000, State: "start", Info: "Active: notification sent: bad peer AS (check asNumber)"},
			}},
			[]string{"BGP: AS 64512, router ID 10.0.0.1, listening on 10.0.0.1:179; MD5 passwords: available", "announces: 192.168.1.0/26",
				"IPv4 BGP status", "PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO",
				"| 10.0.0.2     | node-to-node mesh | up    | " + testNow.Add(-time.Hour).Format("15:04:05") + " | Established ",
				"| 10.0.0.254   | global            | start |          | Active: notification sent: bad peer AS (check asNumber) |",
				"IPv4 routes received", "192.168.2.0/26", "No IPv6 peers found.",
				"learned routes in the kernel (protocol 79, behind the route sync's): 1: 192.168.2.0/26 via 10.0.0.2 dev eth0 metric 2000"}, nil},
		{"learned routes not used", &api.BGPStatus{Enabled: true, ASNumber: 64512, RouterID: "10.0.0.1", Listen: "10.0.0.1:179",
			LearnedOff: "the node-to-node mesh is off and no node is a route reflector"},
			[]string{"learned routes: not used (the node-to-node mesh is off and no node is a route reflector)"}, []string{"learned routes in the kernel"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			fakeDaemon(t, h.pluginDir, "", api.IPAMSocket)
			fakeStatusDaemon(t, filepath.Join(h.pluginDir, api.NetworkSocket), api.DaemonStatus{Node: "host-1", BGP: tc.bgp})
			out := h.ok("", "node", "status")
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("node status lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out, w) {
					t.Errorf("node status shows %q:\n%s", w, out)
				}
			}
		})
	}
}
