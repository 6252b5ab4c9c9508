package api_test

import (
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func decodeOne(t *testing.T, doc string) (api.Object, error) {
	t.Helper()
	objs, err := api.Decode([]byte(doc), "test.yaml")
	if err != nil {
		return api.Object{}, err
	}
	if len(objs) != 1 {
		t.Fatalf("decoded %d objects, want 1", len(objs))
	}
	return objs[0], nil
}

func TestBGPConfigDecode(t *testing.T) {
	for _, tc := range []struct {
		name, spec, wantErr string
		want                api.BGPConfig
	}{
		{name: "defaults", spec: "{}", want: api.BGPConfig{LogSeverityScreen: "Info", ASNumber: 64512, ListenPort: 179}},
		{name: "calico form", spec: "{logSeverityScreen: warning, nodeToNodeMeshEnabled: false, asNumber: 63400, listenPort: 1179}",
			want: api.BGPConfig{LogSeverityScreen: "Warning", ASNumber: 63400, ListenPort: 1179}},
		{name: "asdot", spec: `{asNumber: "1.10"}`, want: api.BGPConfig{LogSeverityScreen: "Info", ASNumber: 65546, ListenPort: 179}},
		{name: "bad port", spec: "{listenPort: 70000}", wantErr: "spec.listenPort 70000: give a port between 1 and 65535"},
		{name: "bad severity", spec: "{logSeverityScreen: loud}", wantErr: `spec.logSeverityScreen "loud": use Debug, Info`},
		{name: "bad AS", spec: "{asNumber: -1}", wantErr: `AS number "-1"`},
		{name: "unknown field", spec: "{serviceClusterIPs: []}", wantErr: "serviceClusterIPs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := decodeOne(t, "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: "+tc.spec+"\n")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := o.Resource.(*api.BGPConfig)
			mesh := c.MeshEnabled()
			c.NodeToNodeMeshEnabled = nil
			if *c != tc.want {
				t.Errorf("got %+v, want %+v", *c, tc.want)
			}
			if wantMesh := !strings.Contains(tc.spec, "nodeToNodeMeshEnabled: false"); mesh != wantMesh {
				t.Errorf("mesh %v, want %v", mesh, wantMesh)
			}
		})
	}
	if _, err := decodeOne(t, "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: node.host1}\nspec: {}\n"); err == nil || !strings.Contains(err.Error(), "only the BGPConfiguration named default") {
		t.Errorf("per-node configuration: %v", err)
	}
}

func TestBGPPeerDecode(t *testing.T) {
	for _, tc := range []struct {
		name, spec, wantErr string
		check               func(p *api.BGPPeer) bool
	}{
		{name: "global", spec: "{peerIP: 10.0.0.254, asNumber: 64513}", check: func(p *api.BGPPeer) bool {
			return p.Scope() == "global" && p.Selects("any", nil) && p.PeerIP == "10.0.0.254" && p.ASNumber == 64513
		}},
		{name: "default port dropped", spec: "{peerIP: '10.0.0.254:179', asNumber: 64513}", check: func(p *api.BGPPeer) bool { return p.PeerIP == "10.0.0.254" }},
		{name: "v6 with port", spec: "{peerIP: '[fd00::1]:1179', asNumber: 64513}", check: func(p *api.BGPPeer) bool {
			ap, _ := p.AddrPort()
			return ap.Port() == 1179 && ap.Addr().Is6()
		}},
		{name: "node", spec: "{node: host1, peerIP: 10.0.0.254, asNumber: 64513}", check: func(p *api.BGPPeer) bool {
			return p.Scope() == "node specific" && p.Selects("host1", nil) && !p.Selects("host2", nil)
		}},
		{name: "selector", spec: "{nodeSelector: rack == 'a', peerIP: 10.0.0.254, asNumber: 64513}", check: func(p *api.BGPPeer) bool {
			return p.Selects("h", map[string]string{"rack": "a"}) && !p.Selects("h", map[string]string{"rack": "b"})
		}},
		{name: "password and timers", spec: "{peerIP: 10.0.0.254, asNumber: 64513, password: {secretKeyRef: {name: bgp, key: tor}}, keepaliveTime: 1s, maxRestartTime: 5s, keepOriginalNextHop: true}",
			check: func(p *api.BGPPeer) bool {
				return p.Password.File("/var/lib/x") == "/var/lib/x/bgp-secrets/bgp/tor" && p.Keepalive().Seconds() == 1 && p.RestartTime().Seconds() == 5 && p.KeepOriginalNextHop
			}},
		{name: "no IP", spec: "{asNumber: 64513}", wantErr: "spec.peerIP is missing"},
		{name: "bad IP", spec: "{peerIP: router1, asNumber: 64513}", wantErr: `spec.peerIP "router1": give the peer's address`},
		{name: "no AS", spec: "{peerIP: 10.0.0.254}", wantErr: "spec.asNumber is missing"},
		{name: "node and selector", spec: "{node: a, nodeSelector: all(), peerIP: 10.0.0.254, asNumber: 1}", wantErr: "both given"},
		{name: "bad selector", spec: "{nodeSelector: 'rack ==', peerIP: 10.0.0.254, asNumber: 1}", wantErr: "spec.nodeSelector"},
		{name: "password escapes", spec: "{peerIP: 10.0.0.254, asNumber: 1, password: {secretKeyRef: {name: '..', key: passwd}}}", wantErr: "name and key are file names"},
		{name: "password form", spec: "{peerIP: 10.0.0.254, asNumber: 1, password: {}}", wantErr: "give secretKeyRef"},
		{name: "bad timer", spec: "{peerIP: 10.0.0.254, asNumber: 1, keepaliveTime: soon}", wantErr: "spec.keepaliveTime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := decodeOne(t, "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\nspec: "+tc.spec+"\n")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p := o.Resource.(*api.BGPPeer); !tc.check(p) {
				t.Errorf("unexpected peer %+v", *p)
			}
		})
	}
}

func TestNodeBGPSpec(t *testing.T) {
	o, err := decodeOne(t, `apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: host1, labels: {rack: a}}
spec: {bgp: {ipv4Address: 10.0.0.1/24, asNumber: 64600, routeReflectorClusterID: 224.0.0.1}}
`)
	if err != nil {
		t.Fatal(err)
	}
	n := o.Resource.(*api.Node)
	if n.ASNumber != 64600 || n.RouteReflectorClusterID != "224.0.0.1" || n.Labels["rack"] != "a" || n.IPv4Address.String() != "10.0.0.1/24" {
		t.Fatalf("node %+v", *n)
	}
	out, err := api.Encode([]api.Object{o}, api.NodeKind, false, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"asNumber: 64600", "routeReflectorClusterID: 224.0.0.1", "rack: a"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("printed node lacks %q:\n%s", want, out)
		}
	}
	_, err = decodeOne(t, "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: h}\nspec: {bgp: {routeReflectorClusterID: cluster1}}\n")
	if err == nil || !strings.Contains(err.Error(), "IPv4 address form") {
		t.Errorf("bad cluster ID: %v", err)
	}
}
