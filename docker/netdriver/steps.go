package netdriver

import (
	"log/slog"
	"time"
)

// StepObserver is told how long each step of a handler call took (the
// daemon's per-step histogram): call is the handler ("Join"), step one of
// its parts ("veth", "policy", ...).
type StepObserver func(call, step string, took time.Duration)

// steps times the parts of one handler call, one after another, for its
// log line and the StepObserver. Not safe for concurrent use: one call,
// one goroutine.
type steps struct {
	call  string
	obs   StepObserver
	start time.Time
	last  time.Time
	attrs []any
}

func (d *Driver) steps(call string) *steps {
	now := time.Now()
	return &steps{call: call, obs: d.stepObs, start: now, last: now}
}

// done ends the step running since the previous one (or the call's start).
func (s *steps) done(step string) {
	now := time.Now()
	s.note(step, now.Sub(s.last))
	s.last = now
}

// note records a step timed elsewhere (a part of a dataplane call) without
// moving the mark.
func (s *steps) note(step string, took time.Duration) {
	s.attrs = append(s.attrs, slog.Duration(step, took))
	if s.obs != nil {
		s.obs(s.call, step, took)
	}
}

// log is the "took" and "steps" attributes of the call's log line.
func (s *steps) log() []any {
	return []any{"took", time.Since(s.start), slog.Group("steps", s.attrs...)}
}
