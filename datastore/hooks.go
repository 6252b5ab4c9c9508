package datastore

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/internal/dshook"
)

// kvHolder lets the KV be swapped atomically (SetHooks) while calls are in
// flight.
type kvHolder struct{ dshook.KV }

func (s *Store) kvs() dshook.KV { return s.kv.Load().KV }

// etcdKV sends the Store's reads and writes to etcd.
type etcdKV struct{ c *clientv3.Client }

func (k etcdKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return k.c.Get(ctx, key, opts...)
}

func (k etcdKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	return k.c.Put(ctx, key, val, opts...)
}

func (k etcdKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	return k.c.Delete(ctx, key, opts...)
}

func (k etcdKV) Commit(ctx context.Context, r dshook.Request) (*clientv3.TxnResponse, error) {
	return k.c.Txn(ctx).If(r.If...).Then(r.Then...).Else(r.Else...).Commit()
}

// SetHooks applies what a test changes beneath the Store (package
// internal/dshook, which only this module can import): from now on its
// reads and writes go through h.WrapKV's KV.
func (s *Store) SetHooks(h *dshook.Hooks) {
	if h != nil && h.WrapKV != nil {
		s.kv.Store(&kvHolder{h.WrapKV(s.kvs())})
	}
}

// MemberLeads asks the etcd member at endpoint alone whether it leads the
// cluster.
func (s *Store) MemberLeads(ctx context.Context, endpoint string) (bool, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	resp, err := s.client.Status(c, endpoint)
	if err != nil {
		return false, err
	}
	return resp.Header.MemberId == resp.Leader, nil
}
