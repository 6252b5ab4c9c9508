//go:build e2e

package multihost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// CreatePool creates an IP pool the way a user does, with `calicoctl create
// -f` on host 1; when calicoctl does not build, with the ipam package (the
// same write calicoctl makes).
func (tb *Testbed) CreatePool(t testing.TB, p api.IPPool) {
	t.Helper()
	if tb.ctl != "" {
		doc := fmt.Sprintf(`apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: %s
spec:
  cidr: %s
  blockSize: %d
  ipipMode: %s
  vxlanMode: %s
  natOutgoing: %t
`, p.Name, p.CIDR, p.BlockSize, orNever(p.IPIPMode), orNever(p.VXLANMode), p.NATOutgoing)
		f := filepath.Join(tb.Dir, "pool-"+p.Name+".yaml")
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := tb.Calicoctl(tb.Hosts[0], "create", "-f", f)
		if err != nil {
			t.Fatalf("calicoctl create -f %s:\n%s\n%v", f, doc, err)
		}
		t.Logf("calicoctl create -f pool-%s.yaml: %s", p.Name, strings.TrimSpace(out))
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := ipam.PutPool(ctx, tb.Store, p, ipam.PutCreate, 0); err != nil {
			t.Fatalf("create pool %s: %v", p.Name, err)
		}
		t.Logf("pool %s written with ipam.PutPool (calicoctl did not build)", p.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, _, err := ipam.GetPool(ctx, tb.Store, p.Name)
	if err != nil {
		t.Fatalf("pool %s not in etcd after creating it: %v", p.Name, err)
	}
	if got.CIDR != p.CIDR || got.VXLANMode != p.VXLANMode || got.NATOutgoing != p.NATOutgoing || (p.BlockSize != 0 && got.BlockSize != p.BlockSize) {
		t.Fatalf("pool %s in etcd is %+v, want %+v", p.Name, got, p)
	}
}

func orNever(m api.EncapMode) api.EncapMode {
	if m == "" {
		return api.EncapNever
	}
	return m
}

// DeletePool deletes a pool with calicoctl (or the ipam package).
func (tb *Testbed) DeletePool(t testing.TB, name string) {
	t.Helper()
	if tb.ctl != "" {
		out, err := tb.Calicoctl(tb.Hosts[0], "delete", "ippool", name)
		if err != nil {
			t.Fatalf("calicoctl delete ippool %s: %v", name, err)
		}
		t.Logf("calicoctl delete ippool %s: %s", name, strings.TrimSpace(out))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ipam.DeletePool(ctx, tb.Store, name, false, 0); err != nil {
		t.Fatalf("delete pool %s: %v", name, err)
	}
}
