// Package agent gives the daemon's loops one shape. An agent turns what
// the datastore says into kernel (or engine) state in passes: a mirrored
// agent keeps a copy of some prefixes (datastore.Mirror) and applies it
// after the snapshot, after a burst of changes and at every resync; a
// periodic agent runs a pass on a timer and on kicks. Every pass, of every
// agent, is reported to the same Observer: the daemon's status and its
// metrics (package metrics).
package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Pass is what one pass of an agent reports.
type Pass struct {
	Agent string
	Full  bool // after a snapshot or a resync: the kernel was checked whole
	At    time.Time
	Took  time.Duration
	Err   error
	// Mirrored: a mirrored agent's pass (a Full one follows a snapshot or
	// a resync of the watch).
	Mirrored bool
	// Lag is, for a mirrored agent's pass that applied watched changes,
	// the time from the first of them reaching the daemon to the end of
	// the pass: how long a change in etcd takes to reach the kernel.
	Lag time.Duration
}

// Observer is told of every pass. It must not block.
type Observer interface {
	Observe(Pass)
}

// Observers tells each of its members.
type Observers []Observer

func (o Observers) Observe(p Pass) {
	for _, x := range o {
		if x != nil {
			x.Observe(p)
		}
	}
}

// Model is a mirrored agent's copy of the datastore and its apply step.
type Model interface {
	Reset(kvs []datastore.KV)
	Put(key string, value []byte)
	Delete(key string)
	// Apply turns the copy into kernel state; full also repairs drift.
	Apply(full bool) error
}

// Mirrored runs a Model against the datastore.
type Mirrored struct {
	Name     string
	Store    *datastore.Store
	Prefixes []string
	Model    Model
	Options  datastore.MirrorOptions
	Observer Observer // nil: passes are only logged
	Log      *slog.Logger

	firstChange atomic.Int64 // unix ns of the first change not yet applied
}

// Run mirrors and applies until ctx ends. While the datastore cannot be
// read, the kernel keeps what was applied last.
func (m *Mirrored) Run(ctx context.Context) {
	m.Store.Mirror(ctx, m.Prefixes, mirrorHandler{m}, m.Options)
}

// mirrorHandler is the datastore.MirrorHandler of a Mirrored agent.
type mirrorHandler struct{ m *Mirrored }

func (h mirrorHandler) Reset(kvs []datastore.KV)     { h.m.Model.Reset(kvs) }
func (h mirrorHandler) Put(key string, value []byte) { h.changed(); h.m.Model.Put(key, value) }
func (h mirrorHandler) Delete(key string)            { h.changed(); h.m.Model.Delete(key) }

func (h mirrorHandler) changed() {
	h.m.firstChange.CompareAndSwap(0, time.Now().UnixNano())
}

func (h mirrorHandler) Sync(full bool) {
	start := time.Now()
	err := h.m.Model.Apply(full)
	end := time.Now()
	p := Pass{Agent: h.m.Name, Full: full, Mirrored: true, At: start, Took: end.Sub(start), Err: err}
	if first := h.m.firstChange.Swap(0); first != 0 {
		p.Lag = end.Sub(time.Unix(0, first))
	}
	h.m.report(p)
}

func (h mirrorHandler) Failed(err error) {
	if f, ok := h.m.Model.(interface{ Failed(error) }); ok {
		f.Failed(err) // the model's own account (its status, its words)
	}
	h.m.report(Pass{Agent: h.m.Name, Mirrored: true, At: time.Now(), Err: fmt.Errorf("cannot read the datastore, the kernel keeps what was applied last: %w", err)})
}

func (m *Mirrored) report(p Pass) {
	logPass(m.Log, p)
	if m.Observer != nil {
		m.Observer.Observe(p)
	}
}

// Periodic runs a pass at once (after the first wait, with WaitFirst), then
// every Every and whenever Kick fires; a pass that asks to run again soon
// runs again after Soon instead.
type Periodic struct {
	Name      string
	WaitFirst bool
	Every     time.Duration // 0: only on kicks (and Soon)
	Soon      time.Duration
	Kick      <-chan struct{}
	Timeout   time.Duration // bounds one pass; 0: Every (or none), <0: none (the pass bounds its own calls)
	Pass      func(ctx context.Context) (again bool, err error)
	Observer  Observer
	Log       *slog.Logger
}

// Run passes until ctx ends.
func (p *Periodic) Run(ctx context.Context) {
	for first := true; ; first = false {
		again := false
		if !first || !p.WaitFirst {
			again = p.pass(ctx)
		}
		var wait <-chan time.Time
		switch {
		case again && p.Soon > 0:
			wait = time.After(p.Soon)
		case p.Every > 0:
			wait = time.After(p.Every)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.Kick:
		case <-wait:
		}
	}
}

func (p *Periodic) pass(ctx context.Context) bool {
	timeout := p.Timeout
	if timeout == 0 {
		timeout = p.Every
	}
	pctx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		pctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	start := time.Now()
	again, err := p.Pass(pctx)
	if ctx.Err() != nil {
		return false // shutting down: not a failed pass
	}
	pass := Pass{Agent: p.Name, Full: true, At: start, Took: time.Since(start), Err: err}
	logPass(p.Log, pass)
	if p.Observer != nil {
		p.Observer.Observe(pass)
	}
	return again
}

func logPass(log *slog.Logger, p Pass) {
	if log == nil {
		return
	}
	if p.Err != nil {
		log.Debug("pass failed", "agent", p.Agent, "full", p.Full, "took", p.Took, "err", p.Err)
		return
	}
	log.Debug("pass", "agent", p.Agent, "full", p.Full, "took", p.Took)
}

// Kicker is a kick channel that never blocks its sender and keeps at most
// one kick waiting.
type Kicker chan struct{}

// NewKicker returns a Kicker.
func NewKicker() Kicker { return make(Kicker, 1) }

// Kick asks for a pass; it never blocks.
func (k Kicker) Kick() {
	select {
	case k <- struct{}{}:
	default:
	}
}
