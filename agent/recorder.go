package agent

import (
	"sort"
	"sync"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// Recorder keeps, per agent, its last pass and how many passed and failed:
// what the daemon's status shows.
type Recorder struct {
	mu     sync.Mutex
	agents map[string]*api.AgentStatus
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{agents: map[string]*api.AgentStatus{}} }

func (r *Recorder) Observe(p Pass) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.agents[p.Agent]
	if st == nil {
		st = &api.AgentStatus{Name: p.Agent}
		r.agents[p.Agent] = st
	}
	st.LastPass = p.At.UTC()
	st.TookMillis = p.Took.Milliseconds()
	st.Passes++
	st.LastError = ""
	if p.Err != nil {
		st.Failures++
		st.LastError = p.Err.Error()
		return
	}
	st.LastSuccess = st.LastPass
}

// Status lists every agent seen, by name.
func (r *Recorder) Status() []api.AgentStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]api.AgentStatus, 0, len(r.agents))
	for _, st := range r.agents {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
