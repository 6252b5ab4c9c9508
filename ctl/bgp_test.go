package ctl

import (
	"context"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

const bgpConfigV3 = `apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: false
  asNumber: 63400
`

const bgpPeerV3 = `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor-rack-a
spec:
  nodeSelector: rack == 'a'
  peerIP: 10.0.0.254
  asNumber: 64513
  password:
    secretKeyRef: {name: bgp-secrets, key: tor}
`

// TestBGPConfiguration: absent means BGP is off (and get says so); applied
// in Calico's form it is stored as the daemon reads it; deleting it turns
// BGP off again.
func TestBGPConfiguration(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.fail("", []string{"get", "bgpconfiguration", "default"}, "BGP is off")
	if out := h.ok("", "get", "bgpconfigurations"); strings.Contains(out, "default") {
		t.Errorf("listed before any was created:\n%s", out)
	}
	h.ok(bgpConfigV3, "apply", "-f", "-")
	raw, err := datastore.GetRaw(ctx, h.store, api.BGPConfigKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.DecodeStoredBGPConfig(raw.Value)
	if err != nil || c.MeshEnabled() || c.ASNumber != 63400 || c.ListenPort != 179 {
		t.Fatalf("the daemon reads %+v, %v", c, err)
	}
	if out := h.ok("", "get", "bgpconfig"); !strings.Contains(out, "default   Info          false         63400      179") {
		t.Errorf("get:\n%s", out)
	}
	out := h.ok("", "get", "bgpconfig", "default", "-o", "yaml")
	h.ok(out, "apply", "-f", "-") // what get printed applies again
	h.fail(strings.Replace(bgpConfigV3, "name: default", "name: node.h1", 1), []string{"apply", "-f", "-"}, "only the BGPConfiguration named default")
	if r := h.run("", "delete", "bgpconfig", "default"); r.code != 0 || !strings.Contains(r.err, "BGP is now off") {
		t.Errorf("delete: exit %d, %s", r.code, r.err)
	}
	h.fail("", []string{"get", "bgpconfiguration", "default"}, "BGP is off")
}

// TestBGPPeer: a peer is created, listed with its scope, refused when
// wrong, and deleted.
func TestBGPPeer(t *testing.T) {
	h := newHarness(t)
	h.ok(bgpPeerV3, "create", "-f", "-")
	out := h.ok("", "get", "bgppeers")
	if !strings.Contains(out, "tor-rack-a   10.0.0.254   rack == 'a'   64513") {
		t.Errorf("get:\n%s", out)
	}
	out = h.ok("", "get", "bgppeer", "tor-rack-a", "-o", "yaml")
	for _, want := range []string{"kind: BGPPeer", "peerIP: 10.0.0.254", "key: tor"} {
		if !strings.Contains(out, want) {
			t.Errorf("yaml lacks %q:\n%s", want, out)
		}
	}
	h.fail(strings.Replace(bgpPeerV3, "asNumber: 64513", "asNumber: 0", 1), []string{"apply", "-f", "-"}, "spec.asNumber is missing")
	h.fail(strings.Replace(bgpPeerV3, "10.0.0.254", "tor1", 1), []string{"apply", "-f", "-"}, `spec.peerIP "tor1"`)
	h.fail(strings.Replace(bgpPeerV3, "peerIP:", "peerIp:", 1), []string{"apply", "-f", "-"}, "unknown field spec.peerIp")
	h.ok("", "delete", "bgppeer", "tor-rack-a")
	h.fail("", []string{"get", "bgppeer", "tor-rack-a"}, `BGPPeer "tor-rack-a" does not exist`)
}
