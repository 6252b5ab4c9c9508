package mssclamp

import (
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// TestEnsureWritesOnceAndRestores checks the table as nft shows it, that a
// settled kernel is not written again, and that a table someone changed or
// deleted is put back, while another table is left alone. The traffic it
// clamps is tested in package dataplane (mtu_test.go), across a real VXLAN
// device.
func TestEnsureWritesOnceAndRestores(t *testing.T) {
	n := testns.New(t)
	nft := func(args ...string) string {
		t.Helper()
		out, err := testns.Run(n, "nft", args...)
		if err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
		return out
	}
	nft("add", "table", "inet", "someone-else")
	c := New("cali")
	ensure := func(want bool) {
		t.Helper()
		var wrote bool
		var err error
		testns.Do(t, n, func() { wrote, err = c.Ensure() })
		if err != nil || wrote != want {
			t.Fatalf("Ensure() = %v, %v; want %v, nil", wrote, err, want)
		}
	}
	ensure(true)
	out := nft("list", "table", "inet", Table)
	for _, want := range []string{"hook forward priority mangle", `iifname "cali*"`, "tcp option maxseg size set rt mtu", version} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	t.Logf("%s", out)
	ensure(false)

	for _, tamper := range [][]string{
		{"flush", "chain", "inet", Table, chainForward},
		{"delete", "table", "inet", Table},
	} {
		nft(tamper...)
		ensure(true)
		if out := nft("list", "table", "inet", Table); !strings.Contains(out, "set rt mtu") {
			t.Errorf("after %v: table not restored:\n%s", tamper, out)
		}
	}
	var err error
	testns.Do(t, n, func() { err = c.Remove() })
	if err != nil {
		t.Fatal(err)
	}
	out = nft("list", "tables")
	if strings.Contains(out, Table) || !strings.Contains(out, "someone-else") {
		t.Errorf("after Remove, tables:\n%s", out)
	}
}
