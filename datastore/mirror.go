package datastore

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/dshook"
)

// KV is one record of a snapshot.
type KV struct {
	Key   string
	Value []byte
}

// MirrorHandler receives a local copy of the records under some prefixes.
type MirrorHandler interface {
	// Reset replaces the whole copy with a consistent snapshot.
	Reset(kvs []KV)
	// Put and Delete apply one change.
	Put(key string, value []byte)
	Delete(key string)
	// Sync acts on the copy: after each snapshot and every resync interval
	// (full is true then), and after a burst of changes.
	Sync(full bool)
	// Failed reports that the snapshot could not be read; the copy and
	// what was built from it stay as they were.
	Failed(err error)
}

// MirrorOptions tunes Mirror.
type MirrorOptions struct {
	Debounce time.Duration // how long a burst of changes may gather before Sync
	Resync   time.Duration // how often Sync(true) runs without changes
	Ready    func()        // called after the first snapshot's Sync
}

// Mirror keeps h's copy of the records under prefixes current until ctx
// ends: one snapshot read in a single transaction, then a watch from its
// revision; when the watch fails it reads a new snapshot, backing off while
// etcd is unreachable.
func (s *Store) Mirror(ctx context.Context, prefixes []string, h MirrorHandler, opt MirrorOptions) {
	backoff := time.Second
	ready := opt.Ready
	for ctx.Err() == nil {
		rev, err := s.snapshot(ctx, prefixes, h)
		if err != nil {
			h.Failed(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = time.Second
		h.Sync(true)
		if ready != nil {
			ready()
			ready = nil
		}
		s.follow(ctx, rev, prefixes, h, opt)
	}
}

func (s *Store) snapshot(ctx context.Context, prefixes []string, h MirrorHandler) (int64, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	ops := make([]clientv3.Op, 0, len(prefixes))
	for _, p := range prefixes {
		ops = append(ops, clientv3.OpGet(p, clientv3.WithPrefix()))
	}
	resp, err := s.kvs().Commit(c, dshook.Request{Then: ops})
	if err != nil {
		return 0, err
	}
	var kvs []KV
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			kvs = append(kvs, KV{Key: string(kv.Key), Value: kv.Value})
		}
	}
	h.Reset(kvs)
	return resp.Header.Revision, nil
}

// follow applies watch events until the watch fails or ctx ends.
func (s *Store) follow(ctx context.Context, rev int64, prefixes []string, h MirrorHandler, opt MirrorOptions) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.client.Watch(wctx, api.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	resync := time.NewTicker(opt.Resync)
	defer resync.Stop()
	var pending <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-resync.C:
			h.Sync(true)
		case <-pending:
			pending = nil
			h.Sync(false)
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return // relist
			}
			changed := false
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if !hasAnyPrefix(k, prefixes) {
					continue
				}
				changed = true
				if ev.Type == clientv3.EventTypeDelete {
					h.Delete(k)
				} else {
					h.Put(k, ev.Kv.Value)
				}
			}
			if changed && pending == nil {
				pending = time.After(opt.Debounce)
			}
		}
	}
}

func hasAnyPrefix(k string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}
