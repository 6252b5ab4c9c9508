package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// TestDeletePoolRacingAllocations: a delete without --force and allocations
// race; either the delete is refused, or it won and nothing is allocated in
// the pool afterwards (no allocation is orphaned by a delete that did not
// see it).
func TestDeletePoolRacingAllocations(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for round := 0; round < 5; round++ {
		s := testetcd.Start(t)
		if _, err := ipam.PutPool(ctx, s, api.IPPool{Name: "p", CIDR: "10.7.0.0/16"}, ipam.PutCreate, 0); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var delErr error
		allocated := make([]error, 4)
		for i := range allocated {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, allocated[i] = ipam.New(s, fmt.Sprintf("host-%d", i), quiet).Allocate(ctx, fmt.Sprintf("h%d", i), ipam.Selection{Family: 4})
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, delErr = ipam.DeletePool(ctx, s, "p", false, 0)
		}()
		wg.Wait()
		snap, err := ipam.LoadSnapshot(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		inUse := 0
		for _, b := range snap.Blocks {
			for _, h := range b.Value.Allocations {
				if h != nil {
					inUse++
				}
			}
		}
		switch {
		case delErr == nil:
			if inUse != 0 || len(snap.Pools) != 0 {
				t.Fatalf("round %d: pool deleted but %d addresses are allocated in it", round, inUse)
			}
		case errors.Is(delErr, ipam.ErrPoolInUse):
			if len(snap.Pools) != 1 || inUse == 0 {
				t.Fatalf("round %d: delete refused, but pools %d, in use %d", round, len(snap.Pools), inUse)
			}
		default:
			t.Fatalf("round %d: delete: %v", round, delErr)
		}
		for i, err := range allocated {
			if err == nil {
				continue
			}
			if delErr != nil {
				t.Errorf("round %d: allocation %d failed although the pool stayed: %v", round, i, err)
			}
		}
	}
}

func TestPutPoolModes(t *testing.T) {
	ctx := context.Background()
	s := testetcd.Start(t)
	p := api.IPPool{Name: "p", CIDR: "10.7.0.0/16"}
	if created, err := ipam.PutPool(ctx, s, p, ipam.PutApply, 0); err != nil || !created {
		t.Fatalf("apply of a new pool: %v %v", created, err)
	}
	if _, err := ipam.PutPool(ctx, s, p, ipam.PutCreate, 0); !errors.Is(err, api.ErrExists) {
		t.Errorf("create of an existing pool: %v", err)
	}
	_, rev, err := ipam.GetPool(ctx, s, "10.7.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	p.Disabled = true
	if created, err := ipam.PutPool(ctx, s, p, ipam.PutReplace, rev); err != nil || created {
		t.Fatalf("replace: %v %v", created, err)
	}
	p.Disabled = false
	if _, err := ipam.PutPool(ctx, s, p, ipam.PutReplace, rev); !errors.Is(err, api.ErrStale) {
		t.Errorf("replace with a stale revision: %v", err)
	}
	if _, err := ipam.DeletePool(ctx, s, "p", false, rev); !errors.Is(err, api.ErrStale) {
		t.Errorf("delete with a stale revision: %v", err)
	}
	if _, err := ipam.PutPool(ctx, s, api.IPPool{Name: "q", CIDR: "10.8.0.0/16"}, ipam.PutReplace, 0); err == nil {
		t.Error("replace of a missing pool succeeded")
	}
}
