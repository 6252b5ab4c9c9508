// Package datastore owns the etcd client and everything said to etcd:
// typed reads and writes of the records of package api, the multi-key
// compare-and-swap every read-modify-write uses (CAS, Update), leases, and
// the mirror every watcher of etcd follows (Mirror). Its embedded server
// lives apart, in datastore/embedded.
package datastore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// DefaultOpTimeout bounds each remote call unless Config.Timeout says
// otherwise.
const DefaultOpTimeout = 10 * time.Second

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("not found")

// DecodeError is returned when a stored record does not decode.
type DecodeError struct {
	Key         string
	ModRevision int64 // set by ListReadable, for a CAS that replaces the record
	Err         error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("decode %s: %v", e.Key, e.Err) }
func (e *DecodeError) Unwrap() error { return e.Err }

// ErrConflict is returned when a compare-and-swap kept failing.
var ErrConflict = errors.New("too many concurrent updates, try again")

// Config says where the datastore is. With no Endpoints an embedded etcd is
// run in DataDir (embedded.Open).
type Config struct {
	Endpoints  []string
	CACertFile string
	CertFile   string
	KeyFile    string
	DataDir    string
	Timeout    time.Duration
}

// Store is a thin typed layer over an etcd v3 client, which it keeps to
// itself: records are read and written as typed JSON (Get, Put, Create,
// Delete, List, Update), several keys change together only in one
// compare-and-swap (CAS), and watchers follow etcd through Mirror.
type Store struct {
	client *clientv3.Client
	// kv carries every read and write (Watch and leases go straight to
	// the client); tests wrap it through SetHooks.
	kv        atomic.Pointer[kvHolder]
	timeout   time.Duration
	onClose   []func()
	endpoints []string
	// down is set while etcd does not answer: every call then gives up
	// after DownTimeout instead of its full timeout, so that a Docker
	// command making several calls still fails within seconds. The first
	// call that succeeds clears it.
	down atomic.Bool
}

// DownTimeout bounds each call while the datastore is known unreachable.
const DownTimeout = time.Second

// Down reports whether the last calls found the datastore unreachable.
func (s *Store) Down() bool { return s.down.Load() }

func (s *Store) up() { s.down.Store(false) }

// describe names the datastore in errors.
func (s *Store) describe() string { return strings.Join(s.endpoints, ",") }

// Endpoints are the etcd URLs the store talks to.
func (s *Store) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Connect opens a client to the given endpoints and checks that the cluster
// answers, so a wrong address fails at start-up with a clear message.
func Connect(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints given")
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultOpTimeout
	}
	if err := CheckEndpointSchemes(cfg.Endpoints, cfg.CACertFile, cfg.CertFile, cfg.KeyFile); err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if cfg.CACertFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		info := transport.TLSInfo{TrustedCAFile: cfg.CACertFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd TLS files (--etcd-ca-cert-file, --etcd-cert-file, --etcd-key-file): %w", err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         tlsCfg,
		Logger:      quietZap(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s := &Store{client: cli, timeout: timeout, endpoints: append([]string(nil), cfg.Endpoints...)}
	s.kv.Store(&kvHolder{etcdKV{cli}})
	if err := s.Ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd at %s is not reachable (check --etcd-endpoints/ETCD_ENDPOINTS and TLS files): %w",
			strings.Join(cfg.Endpoints, ","), err)
	}
	return s, nil
}

// Close closes the client, then runs what OnClose registered (the
// embedded etcd's stop), last registered first.
func (s *Store) Close() error {
	err := s.client.Close()
	for i := len(s.onClose) - 1; i >= 0; i-- {
		s.onClose[i]()
	}
	return err
}

// OnClose registers fn to run when the store closes, after its client.
func (s *Store) OnClose(fn func()) { s.onClose = append(s.onClose, fn) }

// Ctx bounds one remote call.
func (s *Store) Ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.down.Load() {
		return context.WithTimeout(ctx, min(s.timeout, DownTimeout))
	}
	return context.WithTimeout(ctx, s.timeout)
}

// Ping checks that the cluster answers a linearizable read.
func (s *Store) Ping(ctx context.Context) error {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	if _, err := s.kvs().Get(c, api.PingKey, clientv3.WithCountOnly()); err != nil {
		return s.wrapErr(err, start)
	}
	s.up()
	return nil
}

// Get decodes the value at key into v and returns its mod revision.
func (s *Store) Get(ctx context.Context, key string, v any) (int64, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := s.kvs().Get(c, key)
	if err != nil {
		return 0, s.wrapErr(fmt.Errorf("etcd get %s: %w", key, err), start)
	}
	s.up()
	if len(resp.Kvs) == 0 {
		return 0, ErrNotFound
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, &DecodeError{Key: key, Err: err}
	}
	return resp.Kvs[0].ModRevision, nil
}

// Put writes v at key unconditionally. Use only for records that a single
// writer owns (an endpoint record keyed by its unique ID).
func (s *Store) Put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	if _, err := s.kvs().Put(c, key, string(b)); err != nil {
		return s.wrapErr(fmt.Errorf("etcd put %s: %w", key, err), start)
	}
	s.up()
	return nil
}

// Create writes v at key only if the key does not exist. It reports whether
// it created the key.
func (s *Store) Create(ctx context.Context, key string, v any) (bool, error) {
	res, err := s.CAS(ctx, []Cond{Absent(key)}, []Op{Put(key, v)})
	if err != nil {
		return false, fmt.Errorf("etcd create %s: %w", key, err)
	}
	return res.Succeeded, nil
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	if _, err := s.kvs().Delete(c, key); err != nil {
		return s.wrapErr(fmt.Errorf("etcd delete %s: %w", key, err), start)
	}
	s.up()
	return nil
}

// Item is one decoded record of a List.
type Item[T any] struct {
	Key         string
	ModRevision int64
	Value       T
}

// List decodes every record under prefix; a record that does not decode
// fails the whole list.
func List[T any](ctx context.Context, s *Store, prefix string) ([]Item[T], error) {
	items, bad, err := ListReadable[T](ctx, s, prefix)
	if err == nil && len(bad) > 0 {
		return nil, bad[0]
	}
	return items, err
}

// ListReadable decodes every record under prefix that decodes, and
// returns the others as DecodeErrors beside them: an agent whose records
// are independent of each other goes on with the readable ones instead of
// stopping on one corrupt record.
func ListReadable[T any](ctx context.Context, s *Store, prefix string) ([]Item[T], []*DecodeError, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := s.kvs().Get(c, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, s.wrapErr(fmt.Errorf("etcd list %s: %w", prefix, err), start)
	}
	s.up()
	out := make([]Item[T], 0, len(resp.Kvs))
	var bad []*DecodeError
	for _, kv := range resp.Kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			bad = append(bad, &DecodeError{Key: string(kv.Key), ModRevision: kv.ModRevision, Err: err})
			continue
		}
		out = append(out, Item[T]{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: v})
	}
	return out, bad, nil
}

// Keys lists the keys under prefix without their values.
func (s *Store) Keys(ctx context.Context, prefix string) ([]string, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := s.kvs().Get(c, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, s.wrapErr(fmt.Errorf("etcd list %s: %w", prefix, err), start)
	}
	s.up()
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out, nil
}

// MaxCASAttempts bounds every compare-and-swap retry loop.
const MaxCASAttempts = 50

// Update is the read-modify-write loop: it reads key, calls fn with the
// current value (nil when absent) and writes fn's result only if nobody changed
// the key in between, retrying on conflict. fn returning nil deletes the key;
// returning ErrNoChange leaves it alone.
func Update[T any](ctx context.Context, s *Store, key string, fn func(cur *T) (*T, error)) error {
	for attempt := 0; attempt < MaxCASAttempts; attempt++ {
		res, err := s.Read(ctx, Get(key))
		if err != nil {
			return fmt.Errorf("etcd get %s: %w", key, err)
		}
		var cur *T
		var rev int64
		if rec, ok := res.One(0); ok {
			cur = new(T)
			if err := rec.Decode(cur); err != nil {
				return err
			}
			rev = rec.ModRevision
		}
		next, err := fn(cur)
		if errors.Is(err, ErrNoChange) {
			return nil
		}
		if err != nil {
			return err
		}
		var op Op
		if next == nil {
			if cur == nil {
				return nil
			}
			op = Delete(key)
		} else {
			op = Put(key, next)
		}
		tr, err := s.CAS(ctx, []Cond{Unchanged(key, rev)}, []Op{op})
		if errors.Is(err, ErrUncertain) {
			// Applied or not, the next pass reads the key again and fn
			// decides from what is there.
			continue
		}
		if err != nil {
			return fmt.Errorf("etcd compare-and-swap %s: %w", key, err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("%s: %w", key, ErrConflict)
}

// ErrNoChange tells Update that nothing needs writing.
var ErrNoChange = errors.New("no change")
