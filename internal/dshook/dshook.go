// Package dshook is the seam beneath a datastore.Store, for tests only: it
// is internal to the module, so nothing outside can reach it. A test wraps
// the KV a Store sends its reads and writes through, to count the requests
// that reach etcd or to play the faults of a real network (a write applied
// after the client gave up on it).
package dshook

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is what a Store sends its requests through.
type KV interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error)
	Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error)
	// Commit runs one compare-and-swap request.
	Commit(ctx context.Context, r Request) (*clientv3.TxnResponse, error)
}

// Request is one compare-and-swap request: if every comparison holds, Then
// runs, else Else.
type Request struct {
	If   []clientv3.Cmp
	Then []clientv3.Op
	Else []clientv3.Op
}

// Writes reports whether the request may write (a put or delete in a
// branch).
func (r Request) Writes() bool {
	for _, ops := range [][]clientv3.Op{r.Then, r.Else} {
		for _, o := range ops {
			if o.IsPut() || o.IsDelete() {
				return true
			}
		}
	}
	return false
}

// Hooks is what a test may change in a Store (datastore.Store.SetHooks).
type Hooks struct {
	// WrapKV returns the KV the Store sends its requests through from
	// now on, given the one it used so far.
	WrapKV func(KV) KV
}
