//go:build e2e

package multihost

import (
	"bytes"
	"context"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// steadyWindow is how long a steady cluster is watched.
const steadyWindow = 30 * time.Second

// writeLog is a datastore.MirrorHandler that records every key written
// after the snapshot (lease keep-alives write none).
type writeLog struct {
	mu   sync.Mutex
	keys []string
}

func (w *writeLog) Reset([]datastore.KV) {}
func (w *writeLog) Put(key string, _ []byte) {
	w.mu.Lock()
	w.keys = append(w.keys, "put "+key)
	w.mu.Unlock()
}
func (w *writeLog) Delete(key string) {
	w.mu.Lock()
	w.keys = append(w.keys, "delete "+key)
	w.mu.Unlock()
}
func (w *writeLog) Sync(bool)    {}
func (w *writeLog) Failed(error) {}
func (w *writeLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := w.keys
	w.keys = nil
	return k
}

// revision is etcd's current revision: any write moves it, a lease
// keep-alive does not.
func (s *scenario) revision(t *testing.T) int64 {
	t.Helper()
	res, err := s.tb.Store.Read(s.ctx, datastore.Get(api.PingKey))
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

// routeMonitor runs `ip monitor route` in a host's namespace.
type routeMonitor struct {
	host string
	cmd  *exec.Cmd
	once sync.Once
	mu   sync.Mutex
	out  bytes.Buffer
}

func startRouteMonitor(t *testing.T, h *Host) *routeMonitor {
	t.Helper()
	m := &routeMonitor{host: h.Name, cmd: exec.Command("ip", "-n", h.NetNS, "monitor", "route")}
	m.cmd.Stdout, m.cmd.Stderr = m, m
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("ip monitor route in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { m.stop() })
	return m
}

// lines are the route changes seen so far (less ip's complaint that the
// namespace has no id, printed once at start).
func (m *routeMonitor) lines() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, l := range strings.Split(m.out.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Error: Peer netns reference is invalid") {
			out = append(out, m.host+": "+l)
		}
	}
	return out
}

func (m *routeMonitor) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out.Write(p)
}

// stop ends the monitor and returns the route changes it saw.
func (m *routeMonitor) stop() []string {
	m.once.Do(func() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		_ = m.cmd.Wait()
	})
	return m.lines()
}

// proveMonitor adds and removes a route of nobody's (protocol 199) in h's
// namespace and waits for its monitor to see it: a monitor that saw
// nothing in the window was listening.
func proveMonitor(t *testing.T, h *Host, m *routeMonitor) {
	t.Helper()
	before := len(m.lines())
	for _, args := range [][]string{{"route", "add", "blackhole", "198.51.100.77/32", "proto", "199"}, {"route", "del", "blackhole", "198.51.100.77/32", "proto", "199"}} {
		if out, err := exec.Command("ip", append([]string{"-n", h.NetNS}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v: %s", h.NetNS, args, err, out)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); len(m.lines()) < before+2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ip monitor route in %s did not see a route added and removed: it cannot vouch for the window", h.Name)
		}
	}
}

// steadyState is the step "steady cluster": with nothing changing, three
// hosts with running containers make no etcd write (liveness is the node
// claims' leases, kept alive without writing) and change no route in any
// host's kernel for 30 s.
func (s *scenario) steadyState(t *testing.T) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	writes := &writeLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.tb.Store.Mirror(ctx, []string{api.Prefix}, writes, datastore.MirrorOptions{Resync: time.Hour})
	}()
	defer func() { cancel(); <-done }()
	// What the earlier steps set going (labels, shared networks) settles
	// first: wait for 5 s without a write.
	settled := false
	var last []string
	for deadline := time.Now().Add(60 * time.Second); !settled && time.Now().Before(deadline); {
		time.Sleep(5 * time.Second)
		last = writes.take()
		settled = len(last) == 0
	}
	if !settled {
		t.Fatalf("the cluster did not settle within 60 s; last 5 s wrote: %s", strings.Join(last, ", "))
	}
	var mons []*routeMonitor
	for _, h := range s.tb.Hosts {
		mons = append(mons, startRouteMonitor(t, h))
	}
	time.Sleep(500 * time.Millisecond) // the monitors are listening
	rev := s.revision(t)
	writes.take()
	time.Sleep(steadyWindow)
	after := s.revision(t)
	var changes []string
	for _, m := range mons {
		changes = append(changes, m.lines()...)
	}
	for i, m := range mons {
		proveMonitor(t, s.tb.Hosts[i], m)
		m.stop()
	}
	written := writes.take()
	sort.Strings(written)
	t.Logf("steady for %s: etcd revision %d -> %d, %d keys written, %d route changes in %d hosts",
		steadyWindow, rev, after, len(written), len(changes), len(mons))
	if after != rev || len(written) > 0 {
		t.Errorf("a steady cluster wrote to etcd (revision %d -> %d): %s", rev, after, strings.Join(written, "; "))
	}
	if len(changes) > 0 {
		t.Errorf("a steady cluster changed routes in the kernel:\n%s", strings.Join(changes, "\n"))
	}
}
