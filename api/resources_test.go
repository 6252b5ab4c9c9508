package api_test

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func names(objs []api.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Resource.ResourceKind().Name+"/"+o.Resource.ResourceName())
	}
	return out
}

func TestDecodeForms(t *testing.T) {
	pool := func(name, cidr string) string {
		return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: " + name + "\nspec:\n  cidr: " + cidr + "\n"
	}
	jpool := func(name, cidr string) string {
		return `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"` + name + `"},"spec":{"cidr":"` + cidr + `"}}`
	}
	cases := []struct {
		name, in string
		want     []string
	}{
		{"one YAML document", pool("a", "10.1.0.0/16"), []string{"IPPool/a"}},
		{"YAML documents with comments and markers",
			"# lab pools\n---\n" + pool("a", "10.1.0.0/16") + "--- # second\n" + pool("b", "10.2.0.0/16") + "...\n---\n# empty\n",
			[]string{"IPPool/a", "IPPool/b"}},
		{"YAML list", "- " + strings.ReplaceAll(strings.TrimSpace(pool("a", "10.1.0.0/16")), "\n", "\n  ") + "\n- " +
			strings.ReplaceAll(strings.TrimSpace(pool("b", "10.2.0.0/16")), "\n", "\n  ") + "\n", []string{"IPPool/a", "IPPool/b"}},
		{"List document", "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- " +
			strings.ReplaceAll(strings.TrimSpace(pool("a", "10.1.0.0/16")), "\n", "\n  ") + "\n", []string{"IPPool/a"}},
		{"empty List", "apiVersion: projectcalico.org/v3\nkind: List\nitems: []\n---\n" + pool("a", "10.1.0.0/16"), []string{"IPPool/a"}},
		{"JSON", jpool("a", "10.1.0.0/16"), []string{"IPPool/a"}},
		{"concatenated JSON", jpool("a", "10.1.0.0/16") + "\n" + jpool("b", "10.2.0.0/16"), []string{"IPPool/a", "IPPool/b"}},
		{"JSON array", "[" + jpool("a", "10.1.0.0/16") + "," + jpool("b", "10.2.0.0/16") + "]", []string{"IPPool/a", "IPPool/b"}},
		{"mixed kinds", pool("a", "10.1.0.0/16") + "---\napiVersion: projectcalico.org/v3\nkind: node\nmetadata: {name: h1}\nspec: {}\n---\n" +
			"apiVersion: projectcalico.org/v3\nkind: IPAMConfig\nmetadata: {name: default}\nspec: {strictAffinity: true}\n",
			[]string{"IPPool/a", "Node/h1", "IPAMConfiguration/default"}},
		{"legacy pool", "apiVersion: v1\nkind: ipPool\nmetadata:\n  cidr: 192.168.0.0/16\nspec: {}\n", []string{"IPPool/192-168-0-0-16"}},
		{"legacy pool with a name", "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.0.0.0/8, name: big}\nspec: {}\n", []string{"IPPool/big"}},
		{"legacy v6 pool", "apiVersion: v1\nkind: ipPool\nmetadata:\n  cidr: fd80:24e2:f998:72d6::/64\nspec: {}\n", []string{"IPPool/fd80-24e2-f998-72d6---64"}},
	}
	for _, c := range cases {
		objs, err := api.Decode([]byte(c.in), "in.yaml")
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := names(objs); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestDecodeNormalizes(t *testing.T) {
	objs, err := api.Decode([]byte("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.2.3/16, ipipMode: always, vxlanMode: never}\n"), "x")
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].Resource.(*api.IPPool)
	want := api.IPPool{Name: "p", CIDR: "10.1.0.0/16", BlockSize: 26, IPIPMode: api.EncapAlways, VXLANMode: api.EncapNever, NodeSelector: "all()"}
	if *p != want {
		t.Errorf("got %+v, want %+v", *p, want)
	}
	objs, err = api.Decode([]byte(`{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"h"},"spec":{"ipv4Address":"10.0.0.1","ipv6Address":"fd00::1/64"}}`), "x")
	if err != nil {
		t.Fatal(err)
	}
	if n := objs[0].Resource.(*api.Node); api.PrefixText(n.IPv4Address) != "10.0.0.1/32" || api.PrefixText(n.IPv6Address) != "fd00::1/64" {
		t.Errorf("node %+v", n)
	}
}

func TestDecodeErrorsNameTheDocument(t *testing.T) {
	cases := []struct{ in, want string }{
		{"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16}\n---\n\n# b\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\nspec: {cidr: 10.1.0.0/99}\n",
			`f.yaml document 2 (line 8) (IPPool "b"): spec.cidr "10.1.0.0/99" is not a valid CIDR`},
		{"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16}\n---\napiVersion: x\n  kind: y\n",
			"f.yaml: document 2 is not valid YAML: yaml: line 7:"},
		{`{"apiVersion":"projectcalico.org/v3"` + "\n" + `"kind":"IPPool"}`, "f.yaml: invalid JSON at line 2"},
		{"- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata: {name: a}\n  spec: {cidr: 10.1.0.0/16, x: 1}\n",
			`f.yaml document 1 (line 1) item 1 (IPPool "a"): unknown field spec.x`},
		{"apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: a}, spec: {cidr: 10.1.0.0/16}}\nextra: 1\n",
			"unknown field extra in the IPPoolList: a list has apiVersion, kind, metadata and items"},
		{"just a string\n", "expected a resource (apiVersion, kind, metadata, spec), got a string"},
		{"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.1.0.0/16}\nspec: {cidr: 10.2.0.0/16}\n", `key "spec" already set`},
	}
	for _, c := range cases {
		_, err := api.Decode([]byte(c.in), "f.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := []api.Object{
		{Resource: &api.IPPool{Name: "p", CIDR: "10.1.0.0/16", BlockSize: 24, IPIPMode: api.EncapCrossSubnet, VXLANMode: api.EncapNever, NATOutgoing: true, Disabled: true, NodeSelector: "all()"}, ResourceVersion: "7"},
		{Resource: &api.Node{Name: "h", IPv4Address: netip.MustParsePrefix("10.0.0.1/24")}, ResourceVersion: "8"},
		{Resource: &api.IPAMConfig{StrictAffinity: true, AutoAllocateBlocks: false, MaxBlocksPerHost: 3}},
	}
	for _, format := range []string{"yaml", "json"} {
		b, err := api.Encode(in, nil, true, format)
		if err != nil {
			t.Fatal(err)
		}
		out, err := api.Decode(b, format)
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, b)
		}
		if len(out) != len(in) {
			t.Fatalf("%s: %d objects back", format, len(out))
		}
		for i := range in {
			if !reflect.DeepEqual(in[i].Resource, out[i].Resource) || in[i].ResourceVersion != out[i].ResourceVersion {
				t.Errorf("%s: %+v (rv %q) came back as %+v (rv %q)", format, in[i].Resource, in[i].ResourceVersion, out[i].Resource, out[i].ResourceVersion)
			}
		}
	}
}

func TestLookupKind(t *testing.T) {
	for name, want := range map[string]*api.Kind{
		"ipPool": api.IPPoolKind, "IPPOOLS": api.IPPoolKind, "ippool": api.IPPoolKind, "pools": api.IPPoolKind,
		"node": api.NodeKind, "Nodes": api.NodeKind,
		"ipamconfig": api.IPAMConfigKind, "IPAMConfiguration": api.IPAMConfigKind, "ipamConfigs": api.IPAMConfigKind,
		"bgpconfig": api.BGPConfigKind, "BGPConfigurations": api.BGPConfigKind, "bgppeer": api.BGPPeerKind, "bgpPeers": api.BGPPeerKind,
	} {
		if k, err := api.LookupKind(name); err != nil || k != want {
			t.Errorf("LookupKind(%q) = %v, %v", name, k, err)
		}
	}
	if _, err := api.LookupKind("hostendpoint"); err == nil || !strings.Contains(err.Error(), "use IPPool, Node, IPAMConfiguration, Profile, NetworkPolicy, GlobalNetworkPolicy, FelixConfiguration, BGPConfiguration or BGPPeer") {
		t.Errorf("LookupKind(hostendpoint) = %v", err)
	}
}

func TestPoolNameFromCIDR(t *testing.T) {
	for cidr, want := range map[string]string{
		"192.168.0.0/16": "192-168-0-0-16", "10.1.2.3/8": "10-0-0-0-8", "fd00:1::/48": "fd00-1---48",
	} {
		if got := api.PoolNameFromCIDR(netip.MustParsePrefix(cidr)); got != want {
			t.Errorf("PoolNameFromCIDR(%s) = %s, want %s", cidr, got, want)
		}
	}
}
