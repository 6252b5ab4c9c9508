package bgp

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// applyTimeout bounds one apply to the speaker.
const applyTimeout = 10 * time.Second

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

	mu  sync.Mutex
	st  *State
	ctx context.Context // Run's, for the applies
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
	m := agent.Mirrored{Name: "bgp", Store: a.store, Prefixes: Prefixes, Model: a, Observer: a.Observer, Log: a.log,
		Options: datastore.MirrorOptions{Debounce: 20 * time.Millisecond, Resync: 30 * time.Second}}
	m.Run(ctx)
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

func (a *Agent) Apply(bool) error {
	a.mu.Lock()
	plan := a.st.Desired(a.host, a.dataDir)
	ctx := a.ctx
	a.mu.Unlock()
	if ctx.Err() != nil {
		return nil // shutting down: Run's Close stops the speaker
	}
	ctx, cancel := context.WithTimeout(ctx, applyTimeout)
	defer cancel()
	return a.spk.Apply(ctx, plan)
}

// Status is the speaker's state for calicoctl node status.
func (a *Agent) Status() *api.BGPStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st := a.spk.Status(ctx)
	return &st
}
