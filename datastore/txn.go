package datastore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calico-libnetwork/calico-libnetwork/internal/dshook"
)

// Cond is one comparison of a multi-key compare-and-swap. Build them with
// Unchanged, Absent, NothingUnder and UnchangedUnder.
type Cond struct{ cmp clientv3.Cmp }

// Unchanged holds while key's mod revision is still rev (0: the key is absent).
func Unchanged(key string, rev int64) Cond {
	return Cond{clientv3.Compare(clientv3.ModRevision(key), "=", rev)}
}

// Absent holds while key does not exist.
func Absent(key string) Cond {
	return Cond{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
}

// Present holds while key exists.
func Present(key string) Cond {
	return Cond{clientv3.Compare(clientv3.CreateRevision(key), ">", 0)}
}

// NothingUnder holds while no key exists under prefix.
func NothingUnder(prefix string) Cond {
	return Cond{clientv3.Compare(clientv3.CreateRevision(prefix), "=", 0).WithPrefix()}
}

// UnchangedUnder holds while no key under prefix was written after revision
// rev (a key created or modified later fails it; a deletion does not).
func UnchangedUnder(prefix string, rev int64) Cond {
	return Cond{clientv3.Compare(clientv3.ModRevision(prefix), "<", rev+1).WithPrefix()}
}

// Op is one operation of a compare-and-swap: Put (JSON), PutRaw, Delete, Get,
// GetPrefix or KeysUnder.
type Op struct {
	op   clientv3.Op
	read bool
	err  error
}

// Put writes v as JSON at key.
func Put(key string, v any) Op {
	b, err := json.Marshal(v)
	if err != nil {
		return Op{err: fmt.Errorf("encode %s: %w", key, err)}
	}
	return Op{op: clientv3.OpPut(key, string(b))}
}

// Appender is a record that encodes itself as JSON, cheaper than
// json.Marshal's reflection (api.Block, api.HandleRecord).
type Appender interface {
	AppendJSON(dst []byte) ([]byte, error)
}

// PutAppended writes v's own JSON encoding at key: Put, for the records
// written on every allocation and release.
func PutAppended(key string, v Appender) Op {
	b, err := v.AppendJSON(nil)
	if err != nil {
		return Op{err: fmt.Errorf("encode %s: %w", key, err)}
	}
	return Op{op: clientv3.OpPut(key, string(b))}
}

// PutLeased writes v as JSON at key, bound to lease: the key goes when the
// lease expires.
func PutLeased(key string, v any, lease Lease) Op {
	b, err := json.Marshal(v)
	if err != nil {
		return Op{err: fmt.Errorf("encode %s: %w", key, err)}
	}
	return Op{op: clientv3.OpPut(key, string(b), clientv3.WithLease(clientv3.LeaseID(lease)))}
}

// PutRaw writes value as is at key.
func PutRaw(key, value string) Op { return Op{op: clientv3.OpPut(key, value)} }

// Delete removes key (a missing key is not an error).
func Delete(key string) Op { return Op{op: clientv3.OpDelete(key)} }

// DeleteUnder removes every key under prefix.
func DeleteUnder(prefix string) Op { return Op{op: clientv3.OpDelete(prefix, clientv3.WithPrefix())} }

// Get reads key.
func Get(key string) Op { return Op{op: clientv3.OpGet(key), read: true} }

// GetPrefix reads every key under prefix.
func GetPrefix(prefix string) Op {
	return Op{op: clientv3.OpGet(prefix, clientv3.WithPrefix()), read: true}
}

// KeysUnder reads the keys under prefix without their values.
func KeysUnder(prefix string) Op {
	return Op{op: clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()), read: true}
}

// Record is one stored key a CAS or Read returned.
type Record struct {
	Key         string
	Value       []byte
	ModRevision int64
}

// Decode unmarshals the record's JSON value.
func (r Record) Decode(v any) error {
	if err := json.Unmarshal(r.Value, v); err != nil {
		return fmt.Errorf("decode %s: %w", r.Key, err)
	}
	return nil
}

// Result is what a compare-and-swap (or a Read) did. Reads holds, per read operation of the
// branch that ran (Then on success, Else otherwise) and in its order, the
// records it found.
type Result struct {
	Succeeded bool
	Revision  int64
	Reads     [][]Record
}

// One returns the single record of read i, or false when the key was absent.
func (r Result) One(i int) (Record, bool) {
	if i >= len(r.Reads) || len(r.Reads[i]) == 0 {
		return Record{}, false
	}
	return r.Reads[i][0], true
}

// ErrUncertain marks a write whose outcome is unknown: the request may have
// been applied before the connection or the deadline failed. The caller must
// read back what it wrote to decide, never blindly write again.
var ErrUncertain = errors.New("the datastore did not confirm whether the write was applied")

// CAS runs one multi-key compare-and-swap: if every cond holds, then runs,
// else els, all at one revision. It is the only way the project writes
// several keys together. A failure after the request may have reached etcd
// is returned wrapping ErrUncertain.
func (s *Store) CAS(ctx context.Context, conds []Cond, then []Op, els ...Op) (Result, error) {
	cmps := make([]clientv3.Cmp, len(conds))
	for i, c := range conds {
		cmps[i] = c.cmp
	}
	thenOps, thenReads, err := unwrapOps(then)
	if err != nil {
		return Result{}, err
	}
	elseOps, elseReads, err := unwrapOps(els)
	if err != nil {
		return Result{}, err
	}
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := s.kvs().Commit(c, dshook.Request{If: cmps, Then: thenOps, Else: elseOps})
	if err != nil {
		if writes(then) || writes(els) {
			return Result{}, s.wrapErr(fmt.Errorf("%w: %w", ErrUncertain, err), start)
		}
		return Result{}, s.wrapErr(err, start)
	}
	s.up()
	out := Result{Succeeded: resp.Succeeded, Revision: resp.Header.Revision}
	reads := elseReads
	if resp.Succeeded {
		reads = thenReads
	}
	for _, i := range reads {
		var recs []Record
		for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
			recs = append(recs, Record{Key: string(kv.Key), Value: kv.Value, ModRevision: kv.ModRevision})
		}
		out.Reads = append(out.Reads, recs)
	}
	return out, nil
}

// Read runs the read operations ops at one revision.
func (s *Store) Read(ctx context.Context, ops ...Op) (Result, error) {
	return s.CAS(ctx, nil, ops)
}

func unwrapOps(ops []Op) ([]clientv3.Op, []int, error) {
	out := make([]clientv3.Op, len(ops))
	var reads []int
	for i, o := range ops {
		if o.err != nil {
			return nil, nil, o.err
		}
		out[i] = o.op
		if o.read {
			reads = append(reads, i)
		}
	}
	return out, reads, nil
}

func writes(ops []Op) bool {
	for _, o := range ops {
		if !o.read {
			return true
		}
	}
	return false
}

// Lease is an etcd lease: keys written with it go when it expires.
type Lease int64

// Grant creates a lease of ttl.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (Lease, error) {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := s.client.Grant(c, int64(ttl/time.Second))
	if err != nil {
		return 0, s.wrapErr(fmt.Errorf("etcd lease: %w", err), start)
	}
	s.up()
	return Lease(resp.ID), nil
}

// KeepAliveOnce renews lease once.
func (s *Store) KeepAliveOnce(ctx context.Context, l Lease) error {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	start := time.Now()
	if _, err := s.client.KeepAliveOnce(c, clientv3.LeaseID(l)); err != nil {
		return s.wrapErr(fmt.Errorf("renew etcd lease: %w", err), start)
	}
	s.up()
	return nil
}

// Revoke ends lease and deletes its keys.
func (s *Store) Revoke(ctx context.Context, l Lease) error {
	c, cancel := s.Ctx(ctx)
	defer cancel()
	if _, err := s.client.Revoke(c, clientv3.LeaseID(l)); err != nil {
		return fmt.Errorf("revoke etcd lease: %w", err)
	}
	return nil
}

// ErrUnavailable marks an error because the datastore did not answer.
var ErrUnavailable = errors.New("the datastore is unreachable")

// wrapErr names the datastore in errors that come from it not answering, so
// that a Docker user sees which etcd to look at.
func (s *Store) wrapErr(err error, start time.Time) error {
	if err == nil || !unreachable(err) {
		return err
	}
	s.down.Store(true)
	return fmt.Errorf("%w (etcd at %s did not answer within %s): %w", ErrUnavailable, s.describe(),
		time.Since(start).Round(100*time.Millisecond), err)
}

func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		switch st := se.GRPCStatus(); st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		case codes.Unknown:
			// A member without quorum can answer with its own deadline
			// as an unknown error: the datastore did not answer either.
			return strings.Contains(st.Message(), context.DeadlineExceeded.Error())
		}
	}
	return false
}
