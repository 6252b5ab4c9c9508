package agent_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
)

// passes collects what an agent reports.
type passes struct {
	mu  sync.Mutex
	got []agent.Pass
	ch  chan agent.Pass
}

func newPasses() *passes { return &passes{ch: make(chan agent.Pass, 100)} }

func (p *passes) Observe(x agent.Pass) {
	p.mu.Lock()
	p.got = append(p.got, x)
	p.mu.Unlock()
	p.ch <- x
}

func (p *passes) next(t *testing.T) agent.Pass {
	t.Helper()
	select {
	case x := <-p.ch:
		return x
	case <-time.After(10 * time.Second):
		t.Fatal("no pass reported within 10s")
		return agent.Pass{}
	}
}

func TestPeriodic(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		waitFirst bool
		results   []error // what successive passes return
		kicks     int     // kicks sent after the first pass
		wantErrs  []error // errors of the passes reported, in order
	}{
		{name: "passes at once, then on each kick", results: []error{nil, nil, nil}, kicks: 2, wantErrs: []error{nil, nil, nil}},
		{name: "a failed pass is reported and the next one still runs", results: []error{boom, nil}, kicks: 1, wantErrs: []error{boom, nil}},
		{name: "wait first: no pass before the first kick", waitFirst: true, results: []error{nil}, kicks: 1, wantErrs: []error{nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := newPasses()
			k := agent.NewKicker()
			n := 0
			p := agent.Periodic{Name: "x", WaitFirst: tc.waitFirst, Kick: k, Observer: obs,
				Pass: func(context.Context) (bool, error) {
					err := tc.results[n]
					n++
					return false, err
				}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); p.Run(ctx) }()
			var got []agent.Pass
			if !tc.waitFirst {
				got = append(got, obs.next(t))
			} else {
				select {
				case x := <-obs.ch:
					t.Fatalf("a pass ran before any kick: %+v", x)
				case <-time.After(100 * time.Millisecond):
				}
			}
			for range tc.kicks {
				k.Kick()
				got = append(got, obs.next(t))
			}
			cancel()
			<-done
			if len(got) != len(tc.wantErrs) {
				t.Fatalf("%d passes, want %d", len(got), len(tc.wantErrs))
			}
			for i, x := range got {
				if x.Agent != "x" || !errors.Is(x.Err, tc.wantErrs[i]) || x.Err == nil != (tc.wantErrs[i] == nil) {
					t.Errorf("pass %d: %+v, want error %v", i, x, tc.wantErrs[i])
				}
			}
		})
	}
}

func TestPeriodicSoonAndEvery(t *testing.T) {
	obs := newPasses()
	calls := 0
	p := agent.Periodic{Name: "soon", Every: time.Hour, Soon: 10 * time.Millisecond, Observer: obs,
		Pass: func(context.Context) (bool, error) { calls++; return calls < 3, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	for range 3 { // two passes asking for more come soon; the third does not
		obs.next(t)
	}
	select {
	case x := <-obs.ch:
		t.Fatalf("a fourth pass before Every: %+v", x)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	<-done
}

func TestPeriodicTimeoutBoundsAPass(t *testing.T) {
	obs := newPasses()
	p := agent.Periodic{Name: "slow", Every: time.Hour, Timeout: 50 * time.Millisecond, Observer: obs,
		Pass: func(ctx context.Context) (bool, error) { <-ctx.Done(); return false, ctx.Err() }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	if x := obs.next(t); !errors.Is(x.Err, context.DeadlineExceeded) || x.Took > 5*time.Second {
		t.Fatalf("pass %+v, want one ended by its 50ms timeout", x)
	}
}

// model records what the mirror gives it.
type model struct {
	mu      sync.Mutex
	kvs     map[string]string
	applied chan bool
	err     error
}

func (m *model) Reset(kvs []datastore.KV) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kvs = map[string]string{}
	for _, kv := range kvs {
		m.kvs[kv.Key] = string(kv.Value)
	}
}
func (m *model) Put(k string, v []byte) { m.mu.Lock(); m.kvs[k] = string(v); m.mu.Unlock() }
func (m *model) Delete(k string)        { m.mu.Lock(); delete(m.kvs, k); m.mu.Unlock() }
func (m *model) Apply(full bool) error  { m.applied <- full; return m.err }
func (m *model) get(k string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.kvs[k]
	return v, ok
}

func TestMirroredAppliesAndReports(t *testing.T) {
	s := testetcd.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pre := api.Prefix + "agenttest/"
	if err := s.Put(ctx, pre+"a", 1); err != nil {
		t.Fatal(err)
	}
	m := &model{applied: make(chan bool, 100), err: errors.New("kernel said no")}
	rec := agent.NewRecorder()
	obs := newPasses()
	a := agent.Mirrored{Name: "test", Store: s, Prefixes: []string{pre}, Model: m, Observer: agent.Observers{rec, obs},
		Options: datastore.MirrorOptions{Debounce: time.Millisecond, Resync: time.Hour}}
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()

	if full := <-m.applied; !full {
		t.Fatal("the first apply after the snapshot is not full")
	}
	if v, _ := m.get(pre + "a"); v != "1" {
		t.Fatalf("snapshot: a = %q, want 1", v)
	}
	if x := obs.next(t); x.Agent != "test" || !x.Full || x.Err == nil || !x.Mirrored || x.Lag != 0 {
		t.Fatalf("first pass reported as %+v, want a full failed mirrored pass applying no watched change", x)
	}
	if err := s.Put(ctx, pre+"b", 2); err != nil {
		t.Fatal(err)
	}
	if full := <-m.applied; full {
		t.Fatal("the apply after a change is full")
	}
	if v, _ := m.get(pre + "b"); v != "2" {
		t.Fatalf("after the watch: b = %q, want 2", v)
	}
	if x := obs.next(t); x.Full || !x.Mirrored || x.Lag <= 0 || x.Lag > 10*time.Second {
		t.Fatalf("pass after a change reported as %+v, want the change's time to the kernel", x)
	}
	st := rec.Status()
	if len(st) != 1 || st[0].Name != "test" || st[0].Passes != 2 || st[0].Failures != 2 || st[0].LastError != "kernel said no" || !st[0].LastSuccess.IsZero() {
		t.Fatalf("recorded status %+v, want 2 passes, 2 failures, the kernel's error, no success", st)
	}
	cancel()
	<-done
}
