package testetcd_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

func TestStartGivesAWorkingIsolatedEtcd(t *testing.T) {
	ctx := context.Background()
	a := testetcd.Start(t)
	b := testetcd.Start(t)
	if !strings.HasPrefix(a.Endpoints()[0], "unix:///") || !strings.HasSuffix(a.Endpoints()[0], "/"+datastore.SocketFile) {
		t.Fatalf("Endpoints()[0] = %q, want the unix socket in the data dir", a.Endpoints()[0])
	}
	if a.Endpoints()[0] == b.Endpoints()[0] {
		t.Fatalf("two etcds share endpoint %s", a.Endpoints()[0])
	}
	key := api.Prefix + "testetcd"
	if err := a.Put(ctx, key, "x"); err != nil {
		t.Fatal(err)
	}
	var got string
	if _, err := a.Get(ctx, key, &got); err != nil || got != "x" {
		t.Fatalf("Get after Put = %q, %v; want \"x\"", got, err)
	}
	if _, err := b.Get(ctx, key, &got); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("second etcd sees the first one's key (err %v)", err)
	}
}
