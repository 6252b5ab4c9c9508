package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

const poolV3 = `apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: new-pool-1
spec:
  cidr: 10.10.0.0/16
  ipipMode: CrossSubnet
  natOutgoing: true
`

// The form of Calico's old (v2.x) walkthroughs: a YAML list, apiVersion v1,
// kind ipPool, the CIDR as the name.
const poolLegacy = `- apiVersion: v1
  kind: ipPool
  metadata:
    cidr: 10.20.0.0/16
  spec:
    ipip:
      enabled: true
      mode: cross-subnet
    nat-outgoing: true
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPoolRoundTrip(t *testing.T) {
	h := newHarness(t)
	f := writeFile(t, "new-pool-1.yaml", poolV3)

	if got := h.ok("", "create", "-f", f); got != "Successfully created 1 'IPPool' resource(s)\n" {
		t.Errorf("create printed %q", got)
	}
	golden(t, "pool_get_yaml", h.ok("", "get", "ippool", "new-pool-1", "-o", "yaml"))
	golden(t, "pool_get_json", h.ok("", "get", "ippool", "new-pool-1", "-o", "json"))

	// apply changes what may change.
	changed := strings.Replace(poolV3, "natOutgoing: true", "natOutgoing: false\n  disabled: true\n  nodeSelector: has(edge)", 1)
	if got := h.ok(changed, "apply", "-f", "-"); got != "Successfully applied 1 'IPPool' resource(s)\n" {
		t.Errorf("apply printed %q", got)
	}
	p, _, err := ipam.GetPool(context.Background(), h.store, "new-pool-1")
	if err != nil {
		t.Fatal(err)
	}
	want := api.IPPool{Name: "new-pool-1", CIDR: "10.10.0.0/16", BlockSize: 26, IPIPMode: api.EncapCrossSubnet,
		VXLANMode: api.EncapNever, Disabled: true, NodeSelector: "has(edge)"}
	if p != want {
		t.Errorf("after apply the pool is %+v, want %+v", p, want)
	}
	// replace puts it back.
	if got := h.ok(poolV3, "replace", "-f", "-"); got != "Successfully replaced 1 'IPPool' resource(s)\n" {
		t.Errorf("replace printed %q", got)
	}
	golden(t, "pool_get_wide", h.ok("", "get", "ipPool", "-o", "wide"))
	golden(t, "pool_get_ps", h.ok("", "get", "ippools"))

	// get -o yaml | apply -f - round trips, with its resourceVersion.
	out := h.ok("", "get", "ippool", "new-pool-1", "-o", "yaml")
	h.ok(out, "apply", "-f", "-")
	// The same document again is now stale: the apply changed nothing, so
	// its revision is still current and it must succeed...
	h.ok(out, "apply", "-f", "-")
	// ...but after a real change it is refused.
	h.ok(strings.Replace(poolV3, "natOutgoing: true", "natOutgoing: false", 1), "apply", "-f", "-")
	h.fail(out, []string{"apply", "-f", "-"}, `IPPool "new-pool-1" was changed since it was read`, "get it again")

	// a list printed by get is accepted as input too.
	list := h.ok("", "get", "ippools", "-o", "yaml")
	if !strings.Contains(list, "kind: IPPoolList") {
		t.Errorf("get ippools -o yaml is not a list:\n%s", list)
	}
	h.ok(rvRE.ReplaceAllString(list, ""), "apply", "-f", "-")

	if got := h.ok("", "delete", "-f", f); got != "Successfully deleted 1 'IPPool' resource(s)\n" {
		t.Errorf("delete printed %q", got)
	}
	if got := h.ok("", "get", "ippools", "-o", "wide"); got != "NAME   CIDR   NAT   IPIPMODE   VXLANMODE   DISABLED   BLOCKSIZE   SELECTOR\n" {
		t.Errorf("after delete, get printed %q", got)
	}
}

func TestLegacyPoolWalkthrough(t *testing.T) {
	h := newHarness(t)
	h.addPool("default-ipv4-ippool", "192.168.0.0/16", 26)
	f := writeFile(t, "pool.yaml", poolLegacy)

	h.ok("", "create", "-f", f)
	golden(t, "legacy_get_wide", h.ok("", "get", "ipPool", "-o", "wide"))

	// The walkthrough deletes the default pool by its CIDR.
	h.ok("", "delete", "ipPool", "192.168.0.0/16")
	// Applying the legacy file again updates the pool it made (found by
	// CIDR), rather than clashing with it.
	h.ok(strings.Replace(poolLegacy, "nat-outgoing: true", "nat-outgoing: false", 1), "apply", "-f", "-")
	p, _, err := ipam.GetPool(context.Background(), h.store, "10.20.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "10-20-0-0-16" || p.NATOutgoing || p.IPIPMode != api.EncapCrossSubnet || p.BlockSize != 26 {
		t.Errorf("legacy pool after apply: %+v", p)
	}
	// A legacy pool renamed since is still found by its CIDR.
	if err := h.store.Delete(context.Background(), api.PoolKey("10-20-0-0-16")); err != nil {
		t.Fatal(err)
	}
	h.addPool("renamed", "10.20.0.0/16", 26)
	h.ok(poolLegacy, "apply", "-f", "-")
	if _, _, err := ipam.GetPool(context.Background(), h.store, "renamed"); err != nil {
		t.Errorf("apply of the legacy form did not update the pool with its CIDR: %v", err)
	}
	h.ok("", "delete", "-f", f)
	if got := h.ok("", "get", "ippool"); got != "NAME   CIDR   SELECTOR\n" {
		t.Errorf("pools left after delete -f legacy file:\n%s", got)
	}
}

func TestLegacyIPIPForms(t *testing.T) {
	for _, c := range []struct {
		ipip string
		want api.EncapMode
	}{
		{"", api.EncapNever},
		{"ipip: {enabled: true}", api.EncapAlways},
		{"ipip: {mode: always}", api.EncapAlways},
		{"ipip: {enabled: true, mode: cross-subnet}", api.EncapCrossSubnet},
		{"ipip: {enabled: false, mode: cross-subnet}", api.EncapNever},
	} {
		doc := "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.1.0.0/16}\nspec: {" + strings.TrimSuffix(c.ipip, "") + "}\n"
		objs, err := api.Decode([]byte(doc), "t")
		if err != nil {
			t.Errorf("%s: %v", c.ipip, err)
			continue
		}
		if got := objs[0].Resource.(*api.IPPool).IPIPMode; got != c.want {
			t.Errorf("%q: ipipMode %s, want %s", c.ipip, got, c.want)
		}
	}
}

func TestJSONInput(t *testing.T) {
	h := newHarness(t)
	one := `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"j1"},"spec":{"cidr":"10.1.0.0/16"}}`
	two := `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"j2"},"spec":{"cidr":"10.2.0.0/16","vxlanMode":"Always"}}`
	three := `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"j3"},"spec":{"cidr":"fd00:3::/48"}}`
	h.ok(one, "create", "-f", "-")
	if got := h.ok(two+"\n"+three, "create", "-f", "-"); got != "Successfully created 2 'IPPool' resource(s)\n" {
		t.Errorf("concatenated JSON: %q", got)
	}
	// JSON list form, from get -o json, applied back.
	list := h.ok("", "get", "ippools", "-o", "json")
	if got := h.ok(list, "apply", "-f", "-"); got != "Successfully applied 3 'IPPool' resource(s)\n" {
		t.Errorf("JSON list: %q", got)
	}
	h.ok("["+strings.Replace(one, "j1", "j4", 1)+"]", "delete", "-f", "-", "--skip-not-exists")
	golden(t, "json_get_wide", h.ok("", "get", "ippool", "-o", "wide"))
}

func TestMultipleYAMLDocuments(t *testing.T) {
	h := newHarness(t)
	docs := `# pools for the lab
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a}
spec: {cidr: 10.1.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: b}
spec: {cidr: 10.2.0.0/16, blockSize: 24}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: host-9}
spec: {ipv4Address: 10.0.0.9/24}
`
	if got := h.ok(docs, "create", "-f", "-"); got != "Successfully created 3 resource(s)\n" {
		t.Errorf("create printed %q", got)
	}
	// A failure half way reports what was done and names the document.
	more := strings.Replace(docs, "name: a}", "name: c}", 1)
	more = strings.Replace(more, "10.1.0.0/16", "10.3.0.0/16", 1)
	r := h.run(more, "create", "-f", "-")
	if r.code != 1 || r.out != "Partial success: created the first 1 out of 3 resource(s)\n" {
		t.Errorf("partial create: exit %d, stdout %q", r.code, r.out)
	}
	assertOneLine(t, r.err)
	if !strings.Contains(r.err, `stdin document 2 (line 7) (IPPool "b"): IPPool "b" already exists: use calicoctl apply`) {
		t.Errorf("partial create error: %q", r.err)
	}
	// --skip-exists goes on.
	if got := h.ok(more, "create", "--skip-exists", "-f", "-"); got != "Successfully created 0 resource(s) (3 already existed, skipped)\n" {
		t.Errorf("create --skip-exists printed %q", got)
	}
}

func TestKindNames(t *testing.T) {
	h := newHarness(t)
	h.addPool("p1", "10.1.0.0/16", 26)
	for _, k := range []string{"ipPool", "ippool", "IPPool", "ippools", "ipPools", "IPPOOLS", "pool", "pools"} {
		if got := h.ok("", "get", k); !strings.Contains(got, "p1") {
			t.Errorf("get %s: %q", k, got)
		}
	}
	for _, k := range []string{"node", "nodes", "Node", "NODES"} {
		h.ok("", "get", k)
	}
	for _, k := range []string{"ipamconfig", "ipamConfig", "IPAMConfiguration", "ipamconfigs"} {
		h.ok("", "get", k)
	}
	h.fail("", []string{"get", "hostendpoints"}, `unknown resource kind "hostendpoints"`, "IPPool, Node, IPAMConfiguration, Profile, NetworkPolicy, GlobalNetworkPolicy, FelixConfiguration, BGPConfiguration or BGPPeer")
}

// TestValidationErrors covers every refusal the issue lists: each is one
// line that names the field and says what is allowed, and nothing is written.
func TestValidationErrors(t *testing.T) {
	h := newHarness(t)
	h.addPool("existing", "10.10.0.0/16", 26)
	pool := func(spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: " + spec + "\n"
	}
	cases := []struct {
		name string
		verb string
		doc  string
		want []string
	}{
		{"invalid CIDR", "create", pool("{cidr: 10.1.0.0/33}"), []string{`spec.cidr "10.1.0.0/33" is not a valid CIDR`, "e.g. 10.10.0.0/16"}},
		{"CIDR not an address", "create", pool("{cidr: tenten}"), []string{`spec.cidr "tenten" is not a valid CIDR`}},
		{"missing CIDR", "create", pool("{natOutgoing: true}"), []string{"spec.cidr is missing"}},
		{"legacy invalid CIDR", "create", "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.1.0/16}\nspec: {}\n", []string{`metadata.cidr "10.1.0/16" is not a valid CIDR`}},
		{"overlap", "create", pool("{cidr: 10.10.128.0/17}"), []string{`spec.cidr 10.10.128.0/17 overlaps pool "existing" (10.10.0.0/16)`, "must not overlap"}},
		{"overlap containing", "apply", pool("{cidr: 10.0.0.0/8}"), []string{`overlaps pool "existing"`}},
		{"block size too small v4", "create", pool("{cidr: 10.1.0.0/16, blockSize: 19}"), []string{"spec.blockSize 19 is out of range: use 20 to 32"}},
		{"block size too big v4", "create", pool("{cidr: 10.1.0.0/16, blockSize: 33}"), []string{"spec.blockSize 33 is out of range: use 20 to 32"}},
		{"block size out of range v6", "create", pool(`{cidr: "fd00:1::/48", blockSize: 115}`), []string{"spec.blockSize 115 is out of range: use 116 to 128"}},
		{"block size larger than pool", "create", pool("{cidr: 10.1.0.0/28, blockSize: 26}"), []string{"spec.blockSize /26 is larger than the pool 10.1.0.0/28", "at least 28"}},
		{"ipip and vxlan", "create", pool("{cidr: 10.1.0.0/16, ipipMode: Always, vxlanMode: CrossSubnet}"), []string{"spec.ipipMode and spec.vxlanMode are both on", "set one to Never"}},
		{"bad encap mode", "create", pool("{cidr: 10.1.0.0/16, ipipMode: Sometimes}"), []string{`spec.ipipMode "Sometimes": use Always, CrossSubnet or Never`}},
		{"ipip on IPv6", "create", pool(`{cidr: "fd00:1::/48", ipipMode: Always}`), []string{"spec.ipipMode: IPIP carries IPv4 only"}},
		{"unknown spec field", "create", pool("{cidr: 10.1.0.0/16, natOutgoingg: true}"), []string{"unknown field spec.natOutgoingg", "an IPPool spec has only cidr, blockSize, ipipMode, vxlanMode, natOutgoing, disabled, nodeSelector"}},
		{"wrong case field", "create", pool("{cidr: 10.1.0.0/16, blocksize: 24}"), []string{"unknown field spec.blocksize: did you mean spec.blockSize?"}},
		{"unknown metadata field", "create", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1, labels: {a: b}}\nspec: {cidr: 10.1.0.0/16}\n", []string{"unknown field metadata.labels"}},
		{"unknown top-level field", "create", pool("{cidr: 10.1.0.0/16}") + "status: {}\n", []string{"unknown field status: an IPPool has only apiVersion, kind, metadata, spec"}},
		{"unknown legacy field", "create", "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.1.0.0/16}\nspec: {ipip: {enabled: true, moed: always}}\n", []string{"unknown field spec.ipip.moed", "a legacy (v1) ipPool spec.ipip has only enabled, mode"}},
		{"legacy ipip mode", "create", "apiVersion: v1\nkind: ipPool\nmetadata: {cidr: 10.1.0.0/16}\nspec: {ipip: {mode: sometimes}}\n", []string{`spec.ipip.mode "sometimes": use always or cross-subnet`}},
		{"unknown kind", "create", "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: p1}\nspec: {}\n", []string{`kind "HostEndpoint" is not known: use one of IPPool, Node, IPAMConfiguration, Profile, NetworkPolicy, GlobalNetworkPolicy, FelixConfiguration, BGPConfiguration or BGPPeer`}},
		{"missing kind", "create", "apiVersion: projectcalico.org/v3\nmetadata: {name: p1}\nspec: {}\n", []string{"kind is missing"}},
		{"missing apiVersion", "create", "kind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.1.0.0/16}\n", []string{"apiVersion is missing: use apiVersion: projectcalico.org/v3"}},
		{"unknown apiVersion", "create", "apiVersion: projectcalico.org/v2\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.1.0.0/16}\n", []string{`apiVersion "projectcalico.org/v2" is not supported`}},
		{"wrong type", "create", pool(`{cidr: 10.1.0.0/16, blockSize: "24"}`), []string{"spec.blockSize: expected a whole number, got a string"}},
		{"wrong type bool", "create", pool(`{cidr: 10.1.0.0/16, natOutgoing: "maybe"}`), []string{"spec.natOutgoing: expected true or false, got a string"}},
		{"bad YAML", "create", "apiVersion: projectcalico.org/v3\nkind: IPPool\n  metadata: {name: p1}\n", []string{"document 1 is not valid YAML", "line"}},
		{"no documents", "create", "# nothing\n", []string{"no resources found"}},
		{"missing name", "create", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {}\nspec: {cidr: 10.1.0.0/16}\n", []string{"metadata.name: a pool needs a name"}},
		{"create existing", "create", strings.Replace(pool("{cidr: 10.10.0.0/16}"), "p1", "existing", 1), []string{`IPPool "existing" already exists: use calicoctl apply`}},
		{"replace missing", "replace", pool("{cidr: 10.1.0.0/16}"), []string{`IPPool "p1" does not exist: use calicoctl create or calicoctl apply`}},
		{"change CIDR", "apply", strings.Replace(pool("{cidr: 10.11.0.0/16}"), "p1", "existing", 1), []string{`spec.cidr: IPPool "existing"'s CIDR cannot change (10.10.0.0/16 to 10.11.0.0/16)`}},
		{"change block size", "replace", strings.Replace(pool("{cidr: 10.10.0.0/16, blockSize: 24}"), "p1", "existing", 1), []string{`spec.blockSize: IPPool "existing"'s block size cannot change (/26 to /24)`}},
		{"bad resourceVersion", "apply", strings.Replace(pool("{cidr: 10.10.0.0/16}"), "name: p1", "name: existing, resourceVersion: abc", 1), []string{`metadata.resourceVersion "abc"`}},
		{"node bad address", "create", "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\nspec: {ipv4Address: 'fd00::1/64'}\n", []string{`spec.ipv4Address "fd00::1/64" is not an IPv4 address`}},
		{"node unknown field", "create", "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\nspec: {bgp: {asnumber: 64512}}\n", []string{"unknown field spec.bgp.asnumber: did you mean spec.bgp.asNumber?"}},
		{"ipam config name", "create", "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: other}\nspec: {strictAffinity: true}\n", []string{`metadata.name "other": the IPAM configuration is named default`}},
		{"ipam config legacy", "create", "apiVersion: v1\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {}\n", []string{"kind IPAMConfiguration has no legacy (apiVersion v1) form"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			before := h.ok("", "get", "ippools", "-o", "yaml")
			h.fail(c.doc, []string{c.verb, "-f", "-"}, c.want...)
			if after := h.ok("", "get", "ippools", "-o", "yaml"); after != before {
				t.Errorf("a refused %s changed the pools:\n%s", c.verb, after)
			}
		})
	}
}

func TestCommandLineErrors(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create"}, "give the resources to create with -f FILE (or -f - for stdin) (see 'calicoctl create --help')"},
		{[]string{"create", "-f", "/nonexistent.yaml"}, "read /nonexistent.yaml: open /nonexistent.yaml: no such file or directory"},
		{[]string{"get"}, "give a resource kind: IPPool, Node, IPAMConfiguration, Profile, NetworkPolicy, GlobalNetworkPolicy, FelixConfiguration, BGPConfiguration or BGPPeer"},
		{[]string{"get", "ippool", "-o", "table"}, "-o table is not a known output format: use ps, wide, yaml or json"},
		{[]string{"get", "ippool", "nope"}, `IPPool "nope" does not exist`},
		{[]string{"delete"}, "give what to delete: KIND NAME"},
		{[]string{"delete", "ippool"}, "give the name of the IPPool to delete"},
		{[]string{"delete", "ippool", "nope"}, `IPPool "nope" does not exist`},
		{[]string{"delete", "node", "nope"}, `Node "nope" does not exist`},
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "calicoctl"`},
		{[]string{"get", "ippool", "--colour"}, "unknown flag: --colour (see 'calicoctl get --help')"},
		{[]string{"ipam", "show", "--ip", "1.2.3"}, `--ip "1.2.3" is not an IP address`},
		{[]string{"ipam", "release"}, "give the address to release with --ip ADDR"},
		{[]string{"ipam"}, "give an ipam command: show, check or release"},
	} {
		h.fail("", c.args, c.want)
	}
	if got := h.ok("", "delete", "ippool", "nope", "--skip-not-exists"); got != "Successfully deleted 0 'IPPool' resource(s) (1 did not exist, skipped)\n" {
		t.Errorf("delete --skip-not-exists printed %q", got)
	}
}

// TestConcurrentOverlappingCreates: the overlap check and the write are one
// compare-and-swap, so of many overlapping pools created at once exactly one
// wins.
func TestConcurrentOverlappingCreates(t *testing.T) {
	h := newHarness(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := api.IPPool{Name: fmt.Sprintf("p%d", i), CIDR: fmt.Sprintf("10.0.%d.0/24", i*16), BlockSize: 26}
			if i%2 == 0 {
				p.CIDR = "10.0.0.0/16" // overlaps all others
			}
			_, errs[i] = ipam.PutPool(context.Background(), h.store, p, ipam.PutCreate, 0)
		}()
	}
	wg.Wait()
	pools, err := ipam.ListPools(context.Background(), h.store)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range pools {
		for _, b := range pools[i+1:] {
			if a.Prefix().Overlaps(b.Prefix()) {
				t.Errorf("overlapping pools were both created: %s %s and %s %s", a.Name, a.CIDR, b.Name, b.CIDR)
			}
		}
	}
	for _, err := range errs {
		if err != nil && !strings.Contains(err.Error(), "overlaps pool") {
			t.Errorf("unexpected error: %v", err)
		}
	}
}

func TestIPAMConfig(t *testing.T) {
	h := newHarness(t)
	golden(t, "ipamconfig_default", h.ok("", "get", "ipamconfig", "-o", "wide"))
	doc := "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\nspec: {strictAffinity: true, maxBlocksPerHost: 4}\n"
	h.ok(doc, "create", "-f", "-")
	h.fail(doc, []string{"create", "-f", "-"}, `IPAMConfiguration "default" already exists: use calicoctl apply`)
	golden(t, "ipamconfig_yaml", h.ok("", "get", "ipamconfig", "default", "-o", "yaml"))
	var c api.IPAMConfig
	if _, err := h.store.Get(context.Background(), api.IPAMConfigKey, &c); err != nil {
		t.Fatal(err)
	}
	if c != (api.IPAMConfig{StrictAffinity: true, AutoAllocateBlocks: true, MaxBlocksPerHost: 4}) {
		t.Errorf("stored IPAM config %+v", c)
	}
	h.ok("", "delete", "ipamconfig", "default")
	if _, err := h.store.Get(context.Background(), api.IPAMConfigKey, &c); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("IPAM config still stored after delete: %v", err)
	}
	h.fail("", []string{"get", "ipamconfig", "other"}, `IPAMConfiguration "other" does not exist`)
}
