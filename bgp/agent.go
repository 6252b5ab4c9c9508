package bgp

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// applyTimeout bounds one apply to the speaker.
const applyTimeout = 10 * time.Second

// ribDebounce gathers a burst of best-path changes (a session coming up
// brings every route at once) into one pass over the learned routes.
const ribDebounce = 50 * time.Millisecond

// Installer puts the learned routes this node uses in the kernel (the
// daemon's: package dataplane, protocol 79 behind the route sync's routes)
// and lists what the kernel then holds of them; given none, it removes
// every one it put there.
type Installer interface {
	ApplyLearned([]Route) (inKernel []string, err error)
}

// Agent mirrors the datastore into a State and applies its Plan to the
// Speaker: a Mirrored agent (package agent).
type Agent struct {
	store   *datastore.Store
	host    string
	dataDir string
	log     *slog.Logger
	spk     *Speaker
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
	// Routes installs the learned routes; nil: none are.
	Routes Installer

	mu  sync.Mutex
	st  *State
	ctx context.Context // Run's, for the applies

	instMu     sync.Mutex // one learned-routes pass at a time
	applied    []Route    // what the last pass that succeeded put in the kernel
	appliedOK  bool
	installed  []string // the learned routes in the kernel, for the status
	learnedOff string   // why none are used
	instErr    string
}

// New returns the agent of host; dataDir holds the password files and the
// speaker's restart mark.
func New(store *datastore.Store, host, dataDir string, log *slog.Logger) *Agent {
	return &Agent{store: store, host: host, dataDir: dataDir, log: log, spk: NewSpeaker(dataDir, log), st: NewState(), ctx: context.Background()}
}

// Run follows the datastore until ctx ends, then stops the speaker
// gracefully (peers keep this node's routes while the daemon restarts).
func (a *Agent) Run(ctx context.Context) {
	a.mu.Lock()
	a.ctx = ctx
	a.mu.Unlock()
	defer a.spk.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.followRIB(ctx)
	}()
	m := agent.Mirrored{Name: "bgp", Store: a.store, Prefixes: Prefixes, Model: a, Observer: a.Observer, Log: a.log,
		Options: datastore.MirrorOptions{Debounce: 20 * time.Millisecond, Resync: 30 * time.Second}}
	m.Run(ctx)
}

// followRIB installs the learned routes again whenever the speaker's best
// paths change (the datastore's passes do it too, and repair drift).
func (a *Agent) followRIB(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.spk.Changed():
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(ribDebounce):
		}
		if err := a.install(ctx, false); err != nil {
			a.log.Warn("BGP: installing learned routes", "err", err)
		}
	}
}

// install makes the kernel's learned routes those Installable picks from
// the speaker's table now. While the daemon stops it leaves them, but the
// first pass after a start, with the sessions not up yet, removes them
// until the peers have sent theirs again (the route sync's routes stay
// throughout; keeping them over that gap is left to do). A pass that
// is not full and wants what the last one applied touches no kernel: every
// container change in the cluster wakes this agent, with BGP on or off;
// full passes (each snapshot and resync) repair drift.
func (a *Agent) install(ctx context.Context, full bool) error {
	if a.Routes == nil || ctx.Err() != nil {
		return nil
	}
	a.instMu.Lock()
	defer a.instMu.Unlock()
	learned := a.spk.Learned()
	a.mu.Lock()
	routes := a.st.Installable(a.host, learned)
	_, off := a.st.UsesLearned(a.host)
	a.mu.Unlock()
	if !full && a.appliedOK && slices.Equal(routes, a.applied) {
		a.learnedOff = off
		return nil
	}
	now, err := a.Routes.ApplyLearned(routes)
	a.applied, a.appliedOK = routes, err == nil
	if !slices.Equal(now, a.installed) {
		a.log.Info("BGP: learned routes in the kernel", "routes", len(now), "wanted", len(routes), "learned", len(learned))
	}
	a.installed, a.learnedOff, a.instErr = now, off, ""
	if err != nil {
		a.instErr = err.Error()
	}
	return err
}

// Reset, Put, Delete and Apply make the Agent an agent.Model.
func (a *Agent) Reset(kvs []datastore.KV) {
	st := NewState()
	for _, kv := range kvs {
		st.Put(kv.Key, kv.Value)
	}
	a.mu.Lock()
	a.st = st
	a.mu.Unlock()
}

func (a *Agent) Put(key string, val []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.Put(key, val)
}

func (a *Agent) Delete(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.Delete(key)
}

func (a *Agent) Apply(full bool) error {
	a.mu.Lock()
	plan := a.st.Desired(a.host, a.dataDir)
	ctx := a.ctx
	a.mu.Unlock()
	if ctx.Err() != nil {
		return nil // shutting down: Run's Close stops the speaker
	}
	actx, cancel := context.WithTimeout(ctx, applyTimeout)
	defer cancel()
	err := a.spk.Apply(actx, plan)
	return errors.Join(err, a.install(ctx, full))
}

// Status is the speaker's state for calicoctl node status.
func (a *Agent) Status() *api.BGPStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st := a.spk.Status(ctx)
	a.instMu.Lock()
	defer a.instMu.Unlock()
	if a.Routes != nil {
		st.Installed, st.LearnedOff, st.InstallError = a.installed, a.learnedOff, a.instErr
	}
	return &st
}
