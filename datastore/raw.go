package datastore

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// RawItem is one record as stored, undecoded.
type RawItem struct {
	Key         string
	ModRevision int64
	Value       []byte
}

// ListRaw returns every record under prefix without decoding it, so that a
// record that does not decode can still be shown.
func ListRaw(ctx context.Context, s *Store, prefix string) ([]RawItem, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	resp, err := s.kvs().Get(c, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd list %s: %w", prefix, err)
	}
	out := make([]RawItem, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, RawItem{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: kv.Value})
	}
	return out, nil
}

// GetRaw returns the record at key undecoded, or ErrNotFound.
func GetRaw(ctx context.Context, s *Store, key string) (RawItem, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	resp, err := s.kvs().Get(c, key)
	if err != nil {
		return RawItem{}, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return RawItem{}, ErrNotFound
	}
	kv := resp.Kvs[0]
	return RawItem{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: kv.Value}, nil
}
