package ctl

import (
	"context"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

const felixV3 = `apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: default
spec:
  defaultEndpointToHostAction: ACCEPT
  endpointToHostAllowedPorts:
  - {protocol: udp, port: 53}
  - {protocol: TCP, port: 2379}
  - {protocol: TCP, port: 2379}
`

// TestFelixConfiguration: the host protection settings are Calico's
// FelixConfiguration "default": shown with their defaults before any is
// stored, applied in Calico's form (any case), stored as the daemon reads
// them, refused with a message when wrong, deleted back to the defaults.
func TestFelixConfiguration(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if out := h.ok("", "get", "felixconfiguration"); !strings.Contains(out, "default   Drop") {
		t.Errorf("defaults:\n%s", out)
	}
	if out := h.ok("", "get", "felixconfig", "default", "-o", "yaml"); !strings.Contains(out, "defaultEndpointToHostAction: Drop") {
		t.Errorf("default yaml:\n%s", out)
	}
	if out := h.ok(felixV3, "apply", "-f", "-"); !strings.Contains(out, "Successfully applied 1 'FelixConfiguration' resource(s)") {
		t.Errorf("apply: %s", out)
	}
	var stored api.FelixConfig
	if _, err := h.store.Get(ctx, api.FelixConfigKey, &stored); err != nil {
		t.Fatal(err)
	}
	raw, err := datastore.GetRaw(ctx, h.store, api.FelixConfigKey)
	if err != nil {
		t.Fatal(err)
	}
	daemon, err := api.DecodeStoredFelixConfig(raw.Value)
	if err != nil {
		t.Fatalf("the daemon cannot read what calicoctl stored: %v", err)
	}
	if daemon.DefaultEndpointToHostAction != api.ActionAccept || len(daemon.EndpointToHostAllowedPorts) != 2 ||
		!daemon.Allows("TCP", 2379) || !daemon.Allows("udp", 53) || daemon.Allows("UDP", 2379) {
		t.Errorf("stored %+v", daemon)
	}
	out := h.ok("", "get", "felixconfigurations", "-o", "wide")
	if !strings.Contains(out, "default   Accept                        tcp/2379,udp/53") {
		t.Errorf("get -o wide:\n%s", out)
	}
	out = h.ok("", "get", "felixconfiguration", "default", "-o", "yaml")
	for _, want := range []string{"kind: FelixConfiguration", "defaultEndpointToHostAction: Accept", "port: 2379", "protocol: UDP"} {
		if !strings.Contains(out, want) {
			t.Errorf("yaml lacks %q:\n%s", want, out)
		}
	}
	// What get printed applies again unchanged.
	h.ok(out, "apply", "-f", "-")

	for _, c := range []struct{ doc, want string }{
		{strings.Replace(felixV3, "ACCEPT", "Allow", 1), `spec.defaultEndpointToHostAction "Allow": use Drop, Accept or Return`},
		{strings.Replace(felixV3, "port: 53", "port: 70000", 1), "spec.endpointToHostAllowedPorts[1].port 70000: give a port between 1 and 65535"},
		{strings.Replace(felixV3, "protocol: udp", "protocol: icmp", 1), `protocol "ICMP": use TCP, UDP or SCTP`},
		{strings.Replace(felixV3, "name: default", "name: node.host-1", 1), "only the FelixConfiguration named default is supported"},
		{felixV3 + "  logSeverityScreen: Info\n", "unknown field spec.logSeverityScreen: a FelixConfiguration spec has only defaultEndpointToHostAction, endpointToHostAllowedPorts"},
	} {
		h.fail(c.doc, []string{"apply", "-f", "-"}, c.want)
	}
	h.fail("", []string{"get", "felixconfiguration", "other"}, `FelixConfiguration "other" does not exist`)
	h.ok("", "delete", "felixconfiguration", "default")
	if out := h.ok("", "get", "felixconfiguration"); !strings.Contains(out, "default   Drop") {
		t.Errorf("after delete, the defaults:\n%s", out)
	}
}

func TestDecodeStoredFelixConfig(t *testing.T) {
	for _, c := range []struct{ raw, wantErr string }{
		{raw: `{}`},
		{raw: `{"defaultEndpointToHostAction":"Return","endpointToHostAllowedPorts":[{"protocol":"TCP","port":22}]}`},
		{raw: `{"defaultEndpointToHostAction":"Open"}`, wantErr: "use Drop, Accept or Return"},
		{raw: `{"defaultEndpointToHostAction":"Drop","futureSetting":true}`, wantErr: "unknown field"},
		{raw: `{"endpointToHostAllowedPorts":[{"protocol":"TCP","port":0}]}`, wantErr: "between 1 and 65535"},
		{raw: `not json`, wantErr: "decode FelixConfiguration"},
	} {
		_, err := api.DecodeStoredFelixConfig([]byte(c.raw))
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: err = %v, want %q", c.raw, err, c.wantErr)
		}
	}
}
