package datastore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

type copyHandler struct {
	mu     sync.Mutex
	kv     map[string]string
	resets int
	syncs  int
}

func (h *copyHandler) Reset(kvs []datastore.KV) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kv = map[string]string{}
	for _, kv := range kvs {
		h.kv[kv.Key] = string(kv.Value)
	}
	h.resets++
}
func (h *copyHandler) Put(k string, v []byte) { h.mu.Lock(); h.kv[k] = string(v); h.mu.Unlock() }
func (h *copyHandler) Delete(k string)        { h.mu.Lock(); delete(h.kv, k); h.mu.Unlock() }
func (h *copyHandler) Sync(bool)              { h.mu.Lock(); h.syncs++; h.mu.Unlock() }
func (h *copyHandler) Failed(error)           {}

func (h *copyHandler) get(k string) (string, bool, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.kv[k]
	return v, ok, h.syncs
}

func TestMirror(t *testing.T) {
	s := testetcd.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, other := api.PoolKey("a"), api.NodeKey("b"), api.NetworkKey("x")
	if err := s.Put(ctx, a, "1"); err != nil {
		t.Fatal(err)
	}
	h := &copyHandler{}
	ready := make(chan struct{})
	go s.Mirror(ctx, []string{api.PoolsPrefix, api.NodesPrefix}, h, datastore.MirrorOptions{
		Debounce: 5 * time.Millisecond, Resync: time.Hour, Ready: func() { close(ready) },
	})
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	if v, ok, syncs := h.get(a); !ok || v != `"1"` || syncs != 1 {
		t.Fatalf("after the snapshot: %q %v syncs=%d", v, ok, syncs)
	}
	_ = s.Put(ctx, b, "2")
	_ = s.Put(ctx, other, "3") // not mirrored
	_ = s.Delete(ctx, a)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, hasA, syncs := h.get(a)
		vb, hasB, _ := h.get(b)
		_, hasOther, _ := h.get(other)
		if !hasA && hasB && vb == `"2"` && syncs >= 2 {
			if hasOther {
				t.Fatal("a record outside the prefixes was mirrored")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("changes not mirrored: a=%v b=%v syncs=%d", hasA, hasB, syncs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
