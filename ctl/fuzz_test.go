package ctl

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// FuzzResourceInput: what calicoctl create/apply read from a file (YAML or
// JSON, current or legacy form, one document, several, or a list) either
// fails with one line naming the input, or gives valid resources that
// print, as YAML and as JSON, into documents that read back as the same
// resources.
func FuzzResourceInput(f *testing.F) {
	for _, s := range []string{profileV3, policiesV3, felixV3,
		"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.10.0.0/16, vxlanMode: crossSubnet, natOutgoing: true}\n",
		"- apiVersion: v1\n  kind: ipPool\n  metadata: {cidr: 10.50.0.0/16}\n  spec: {ipip: {enabled: true, mode: cross-subnet}, nat-outgoing: true}\n",
		`{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"h1"},"spec":{"bgp":{"ipv4Address":"10.0.0.1/24"}}}`,
		`{"apiVersion":"projectcalico.org/v3","kind":"IPAMConfigList","items":[{"apiVersion":"projectcalico.org/v3","kind":"IPAMConfiguration","metadata":{"name":"default"},"spec":{"strictAffinity":true}}]}`,
		"apiVersion: v1\nkind: policy\nmetadata: {name: p}\nspec: {selector: role == 'db', ingress: [{action: allow, protocol: tcp, destination: {ports: [80]}}]}\n",
		"apiVersion: v1\nkind: profile\nmetadata: {name: net1, tags: [net1]}\nspec: {ingress: [{action: allow, source: {tag: net1}}]}\n",
		"---\n---\n", "[]", "{", "kind: IPPool\n",
		// A port written "08" once made storing the policy fail (invalid JSON 08).
		"apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{action: Allow, protocol: TCP, destination: {ports: ['08', \"0100:0200\"]}}]}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a := &app{env: &Env{Stdin: bytes.NewReader(data)}}
		objs, err := a.readResources("-")
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "stdin") || strings.Contains(msg, "\n") {
				t.Fatalf("error is not one line naming the input: %q", msg)
			}
			return
		}
		if len(objs) == 0 {
			t.Fatal("no error and no resources")
		}
		var want [][]byte
		for _, o := range objs {
			if err := o.Resource.Validate(); err != nil {
				t.Fatalf("%s is accepted but does not validate: %v", o.Where, err)
			}
			want = append(want, resourceJSON(t, o.Resource))
		}
		for _, format := range []string{"yaml", "json"} {
			doc, err := api.Encode(objs, nil, true, format)
			if err != nil {
				t.Fatalf("encode as %s: %v", format, err)
			}
			back, err := api.Decode(doc, "printed")
			if err != nil {
				t.Fatalf("printed as %s, the resources do not read back: %v\n%s", format, err, doc)
			}
			if len(back) != len(objs) {
				t.Fatalf("printed as %s, %d resources read back as %d", format, len(objs), len(back))
			}
			for i, o := range back {
				if got := resourceJSON(t, o.Resource); !bytes.Equal(got, want[i]) {
					t.Fatalf("printed as %s, resource %d reads back differently:\n%s\n%s\n%s", format, i, doc, want[i], got)
				}
			}
		}
	})
}

// resourceJSON is a resource's stored form, without what a document does
// not carry back (a node's status).
func resourceJSON(t *testing.T, r api.Resource) []byte {
	t.Helper()
	if n, ok := r.(*api.Node); ok {
		c := *n
		c.LastSeen, c.Version = c.LastSeen.UTC().Truncate(0), ""
		r = &c
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
