package datastore

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/dshook"
)

// Op names, as OpObserver is told them.
const (
	OpGet    = "get"
	OpPut    = "put"
	OpDelete = "delete"
	OpTxn    = "txn" // a compare-and-swap, or a read of several keys at one revision
)

// OpObserver is told of every request the Store sends to etcd (the
// daemon's metrics). It must not block.
type OpObserver interface {
	// ObserveOp: one request, its kind, the kind of record it was about
	// (the first path element under api.Prefix: "blocks", "nodes", ...),
	// how long it took and its error.
	ObserveOp(op, record string, took time.Duration, err error)
	// ObserveCAS: a compare-and-swap whose conditions held (applied) or
	// did not (a conflict: the caller reads again and retries).
	ObserveCAS(record string, applied bool)
}

// Observe sends every request from now on through o as well (the KV a
// test hooked in stays beneath).
func (s *Store) Observe(o OpObserver) {
	if o != nil {
		s.kv.Store(&kvHolder{observedKV{next: s.kvs(), o: o}})
	}
}

// observedKV times each request and tells an OpObserver.
type observedKV struct {
	next dshook.KV
	o    OpObserver
}

// recordKind is the first path element of key under api.Prefix.
func recordKind(key []byte) string {
	k, ok := strings.CutPrefix(string(key), api.Prefix)
	if !ok {
		return "other"
	}
	if i := strings.IndexByte(k, '/'); i >= 0 {
		k = k[:i]
	}
	if k == "" {
		return "other"
	}
	return k
}

func (k observedKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	start := time.Now()
	r, err := k.next.Get(ctx, key, opts...)
	k.o.ObserveOp(OpGet, recordKind([]byte(key)), time.Since(start), err)
	return r, err
}

func (k observedKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	start := time.Now()
	r, err := k.next.Put(ctx, key, val, opts...)
	k.o.ObserveOp(OpPut, recordKind([]byte(key)), time.Since(start), err)
	return r, err
}

func (k observedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	start := time.Now()
	r, err := k.next.Delete(ctx, key, opts...)
	k.o.ObserveOp(OpDelete, recordKind([]byte(key)), time.Since(start), err)
	return r, err
}

func (k observedKV) Commit(ctx context.Context, req dshook.Request) (*clientv3.TxnResponse, error) {
	start := time.Now()
	r, err := k.next.Commit(ctx, req)
	record := "other"
	switch {
	case len(req.If) > 0:
		record = recordKind(req.If[0].Key)
	case len(req.Then) > 0:
		record = recordKind(req.Then[0].KeyBytes())
	}
	k.o.ObserveOp(OpTxn, record, time.Since(start), err)
	if err == nil && len(req.If) > 0 {
		k.o.ObserveCAS(record, r.Succeeded)
	}
	return r, err
}
