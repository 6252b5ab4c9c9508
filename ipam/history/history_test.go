package history

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// TestHistory is the fault-injection history test (RELIABILITY.md): worker
// processes, one host each, allocate and release against a 3-member etcd
// cluster while the nemesis kills and isolates members; at quiet moments and
// at the end the datastore is read and the whole history checked.
//
// It runs when CALICO_HISTORY=1: scripts/test.sh runs the CI size (20,000
// calls), `make soak` the long one (HISTORY_OPS=100000).
const (
	envRun     = "CALICO_HISTORY"
	envOps     = "HISTORY_OPS"     // calls in total (default 20000)
	envProcs   = "HISTORY_PROCS"   // worker processes (default 8)
	envQuiet   = "HISTORY_QUIET"   // time between quiet checks (default 20s)
	envSeed    = "HISTORY_SEED"    // to replay a run's random choices
	envOut     = "HISTORY_OUT"     // keep the run's files (histories, logs, summary) there
	envMarker  = "HISTORY_MARKER"  // written with the summary when the test passed (scripts/test.sh)
	envRecheck = "HISTORY_RECHECK" // a kept run's directory: check its files again (TestRecheckKeptRun)

	poolCIDR  = "10.214.0.0/24" // 16 blocks of 16: hosts run out of free blocks and borrow
	blockSize = 28
)

type config struct {
	ops, procs int
	quietEvery time.Duration
	seed       uint64
}

func loadConfig(t *testing.T) config {
	if os.Getenv(envRun) != "1" {
		t.Skipf("SKIPPED: the fault-injection history test runs in its own step: %s=1 go test -v -run '^TestHistory$' ./ipam/history/ (scripts/test.sh does; make soak runs the long one)", envRun)
	}
	cfg := config{ops: 20000, procs: 8, quietEvery: 20 * time.Second, seed: uint64(time.Now().UnixNano())}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", name, v)
			}
			*dst = n
		}
	}
	num(envOps, &cfg.ops)
	num(envProcs, &cfg.procs)
	if v := os.Getenv(envQuiet); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			t.Fatalf("%s=%q: want a Go duration of at least 1s", envQuiet, v)
		}
		cfg.quietEvery = d
	}
	if v := os.Getenv(envSeed); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a number", envSeed, v)
		}
		cfg.seed = n
	}
	return cfg
}

func requireEtcd(t *testing.T) string {
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (Debian: iproute2, util-linux): %v", tool, err)
		}
	}
	p, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("the etcd server is not installed: apt-get install etcd-server (scripts/install-deps.sh does)")
	}
	return p
}

func outDir(t *testing.T) string {
	if d := os.Getenv(envOut); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "calico-history-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the run's histories, snapshots and logs are kept in %s", d)
			return
		}
		os.RemoveAll(d)
	})
	return d
}

func TestHistory(t *testing.T) {
	if os.Getenv(envJob) != "" {
		t.Skip("in a worker process")
	}
	cfg := loadConfig(t)
	testns.RequireRoot(t)
	etcd := requireEtcd(t)
	out := outDir(t)
	t.Logf("seed %d (%s=%d makes the same random choices), %d calls, %d processes, files in %s", cfg.seed, envSeed, cfg.seed, cfg.ops, cfg.procs, out)

	start := time.Now()
	c := newCluster(t, out, etcd)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	if _, err := ipam.PutPool(ctx, c.store, api.IPPool{Name: "history", CIDR: poolCIDR, BlockSize: blockSize}, ipam.PutCreate, 0); err != nil {
		t.Fatal(err)
	}
	nlog, err := os.Create(filepath.Join(out, "nemesis.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer nlog.Close()
	clog, err := os.Create(filepath.Join(out, "collector.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer clog.Close()
	r := &run{t: t, c: c, cfg: cfg, out: out, rng: rand.New(rand.NewPCG(cfg.seed, 1)),
		collector: ipam.New(c.store, "history-collector", slog.New(slog.NewTextHandler(clog, nil)))}
	if r.cw, err = Create(filepath.Join(out, "history-collector.jsonl")); err != nil {
		t.Fatal(err)
	}
	defer r.cw.Close()
	r.nem = &nemesis{c: c, rng: rand.New(rand.NewPCG(cfg.seed, 2)), log: nlog}
	r.startWorkers()
	churnStart := time.Now()
	lastQuiet := time.Now()
	for !r.allDone() {
		r.checkAlive()
		if time.Since(lastQuiet) >= cfg.quietEvery {
			r.quiet(ctx, false)
			lastQuiet = time.Now()
			continue
		}
		if err := r.nem.step(ctx); err != nil {
			t.Fatalf("nemesis: %v", err)
		}
	}
	churn := time.Since(churnStart)
	r.quiet(ctx, true)
	r.stopWorkers()
	r.report(churn, time.Since(start))
}

type run struct {
	t         *testing.T
	c         *cluster
	cfg       config
	out       string
	rng       *rand.Rand
	nem       *nemesis
	workers   []*workerProc
	collector *ipam.Allocator
	collected []Op
	cw        *Writer // the collector's calls, for TestRecheckKeptRun
	snaps     []Snapshot
}

type workerProc struct {
	job     workerJob
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan string
	done    atomic.Bool
	exited  chan struct{}
	logPath string
}

func (r *run) startWorkers() {
	t := r.t
	per := (r.cfg.ops + r.cfg.procs - 1) / r.cfg.procs
	for i := 0; i < r.cfg.procs; i++ {
		job := workerJob{Proc: i, Host: fmt.Sprintf("hist-host-%d", i), Endpoints: r.c.clientURLs(), Ops: per,
			Target: 8 + r.rng.IntN(16), Pool: poolCIDR, Seed: r.cfg.seed + uint64(100+i),
			Out: filepath.Join(r.out, fmt.Sprintf("history-%d.jsonl", i))}
		w, err := startWorker(r.c.sw, job, filepath.Join(r.out, fmt.Sprintf("worker-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			select {
			case <-w.exited:
			default:
				_ = w.cmd.Process.Signal(syscall.SIGKILL)
				<-w.exited
			}
		})
		r.workers = append(r.workers, w)
	}
	for _, w := range r.workers {
		if err := w.expect("ready", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range r.workers {
		w.send("go")
	}
}

func startWorker(switchNS string, job workerJob, logPath string) (*workerProc, error) {
	spec, _ := json.Marshal(job)
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+switchNS, "--",
		os.Args[0], "-test.run=^TestHistoryWorker$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), envJob+"="+string(spec))
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start worker %d: %w", job.Proc, err)
	}
	w := &workerProc{job: job, cmd: cmd, stdin: stdin, replies: make(chan string, 16), exited: make(chan struct{}), logPath: logPath}
	go func() {
		defer close(w.exited)
		defer log.Close()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			msg, ok := strings.CutPrefix(line, ctlMarker)
			switch {
			case !ok:
				if line != "" {
					fmt.Fprintln(log, line)
				}
			case msg == "done":
				w.done.Store(true)
			default:
				w.replies <- msg
			}
		}
		if err := cmd.Wait(); err != nil {
			fmt.Fprintf(log, "worker exited: %v\n", err)
		}
	}()
	return w, nil
}

func (w *workerProc) send(cmd string) { _, _ = fmt.Fprintln(w.stdin, cmd) }

func (w *workerProc) expect(want string, timeout time.Duration) error {
	select {
	case msg := <-w.replies:
		if !strings.HasPrefix(msg, want) {
			return fmt.Errorf("worker %d said %q, want %q; log %s:\n%s", w.job.Proc, msg, want, w.logPath, tailFile(w.logPath, 30))
		}
		return nil
	case <-w.exited:
		select { // its last words may have come just before it exited
		case msg := <-w.replies:
			if strings.HasPrefix(msg, want) {
				return nil
			}
		default:
		}
		return fmt.Errorf("worker %d exited; log %s:\n%s", w.job.Proc, w.logPath, tailFile(w.logPath, 30))
	case <-time.After(timeout):
		return fmt.Errorf("worker %d did not say %q within %v; log %s:\n%s", w.job.Proc, want, timeout, w.logPath, tailFile(w.logPath, 30))
	}
}

func (r *run) allDone() bool {
	for _, w := range r.workers {
		if !w.done.Load() {
			return false
		}
	}
	return true
}

func (r *run) checkAlive() {
	for _, w := range r.workers {
		select {
		case <-w.exited:
			r.t.Fatalf("worker %d exited before the end; log %s:\n%s", w.job.Proc, w.logPath, tailFile(w.logPath, 40))
		default:
		}
	}
}

// quiet heals the cluster, pauses every worker between calls, reads the
// datastore, checks the history so far against it and frees the leaks it
// found, as the collector would; final leaves the workers paused.
func (r *run) quiet(ctx context.Context, final bool) {
	t := r.t
	if err := r.c.healAll(); err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := r.c.waitHealthy(hctx); err != nil {
		t.Fatalf("the cluster did not recover: %v\n%s", err, r.c.logTails())
	}
	for _, w := range r.workers {
		w.send("pause")
	}
	for _, w := range r.workers {
		if err := w.expect("paused", 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := Take(hctx, r.c.store)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	r.snaps = append(r.snaps, snap)
	rep := Check(r.history(), r.snaps)
	leaks := rep.Leaked(len(r.snaps) - 1)
	t.Logf("quiet check %d: %d calls so far, %d allocations in etcd, %d leaks, %d violations; faults so far: %s",
		len(r.snaps), rep.Ops, len(snap.Slots), len(leaks), len(rep.Violations), r.c.faults)
	if final {
		return
	}
	for _, l := range leaks {
		r.collect(hctx, l)
	}
	for _, w := range r.workers {
		w.send("resume")
	}
}

// collect frees a leak naming its exact allocation, as the garbage
// collector does, and records the call.
func (r *run) collect(ctx context.Context, l Leak) {
	op := Op{Proc: -1, Seq: len(r.collected), Host: l.Host, Handle: l.Handle, Kind: Collect, IP: l.IP, Owner: l.Seq, Invoke: Now()}
	ok, err := r.collector.ReleaseOwned(ctx, l.IP, api.Owner{Host: l.Host, Handle: l.Handle, Seq: l.Seq}, "history test: leak")
	op.Complete = Now()
	op.Outcome, op.Refused = classify(err)
	if err != nil {
		op.Err = err.Error()
	}
	if ok {
		op.Freed = 1
	}
	r.collected = append(r.collected, op)
	if err := errors.Join(r.cw.Add(op), r.cw.Flush()); err != nil {
		r.t.Fatal(err)
	}
}

// history reads every worker's history (flushed while paused) and adds the
// collector's, merged.
func (r *run) history() []Op {
	parts := [][]Op{r.collected}
	for _, w := range r.workers {
		ops, err := ReadFile(w.job.Out)
		if err != nil {
			r.t.Fatalf("worker %d's history: %v", w.job.Proc, err)
		}
		parts = append(parts, ops)
	}
	return Merge(parts...)
}

func (r *run) stopWorkers() {
	for _, w := range r.workers {
		w.send("stop")
	}
	for _, w := range r.workers {
		if err := w.expect("stopped", time.Minute); err != nil {
			r.t.Fatal(err)
		}
		select {
		case <-w.exited:
		case <-time.After(30 * time.Second):
			r.t.Fatalf("worker %d did not exit after stop", w.job.Proc)
		}
		if code := w.cmd.ProcessState.ExitCode(); code != 0 {
			r.t.Fatalf("worker %d exited with status %d; log %s:\n%s", w.job.Proc, code, w.logPath, tailFile(w.logPath, 40))
		}
	}
}

func (r *run) report(churn, total time.Duration) {
	t := r.t
	ops := r.history()
	rep := Check(ops, r.snaps)
	final := rep.Leaked(len(r.snaps) - 1)
	f := r.c.faults
	var b strings.Builder
	fmt.Fprintf(&b, "fault-injection history: %d worker processes (one host and one etcd client each), 3-member etcd cluster, seed %d\n", r.cfg.procs, r.cfg.seed)
	fmt.Fprintf(&b, "duration: %v under faults, %v in all; %.0f calls/s\n", churn.Round(time.Second), total.Round(time.Second), float64(rep.Ops)/churn.Seconds())
	fmt.Fprintf(&b, "faults: %s\n", f)
	b.WriteString(rep.Summary())
	fmt.Fprintf(&b, "leaks left for the collector at the end: %d\n", len(final))
	summary := b.String()
	t.Log("\n" + summary)
	if err := os.WriteFile(filepath.Join(r.out, "summary.txt"), []byte(summary), 0o644); err != nil {
		t.Error(err)
	}
	if data, err := json.Marshal(r.snaps); err == nil {
		_ = os.WriteFile(filepath.Join(r.out, "snapshots.json"), data, 0o644)
	}

	if len(rep.Violations) > 0 {
		t.Errorf("%d violations (see above)", len(rep.Violations))
	}
	if rep.Ops < r.cfg.ops {
		t.Errorf("only %d calls made, want %d", rep.Ops, r.cfg.ops)
	}
	if f.Kills == 0 || f.Isolations == 0 || f.Restarts == 0 {
		t.Errorf("the nemesis did not inject every kind of fault: %s", f)
	}
	disturbed := 0
	for _, k := range []Kind{Allocate, Assign, Bind, Unbind, Release, ReleaseHandle} {
		disturbed += rep.Count(k, Unknown) + rep.Count(k, Failed)
	}
	if disturbed == rep.Refused {
		t.Errorf("no call failed or ended unknown: the faults never reached the clients, the run proved nothing")
	}
	if rep.Replays == 0 || rep.Retries == 0 || len(r.snaps) < 2 {
		t.Errorf("%d replays, %d retries, %d snapshots: the workload did not exercise what it should", rep.Replays, rep.Retries, len(r.snaps))
	}
	if m := os.Getenv(envMarker); m != "" && !t.Failed() {
		line := fmt.Sprintf("%d calls, %d processes, %s, violations: %d, leaks collected: %d, %v\n",
			rep.Ops, r.cfg.procs, f, len(rep.Violations), len(rep.Leaks), churn.Round(time.Second))
		if err := os.WriteFile(m, []byte(line), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func tailFile(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestRecheckKeptRun runs the checker again over the files a run kept
// (HISTORY_OUT, or the directory a failed run names): to look into a
// failure, or to try a changed checker on a real history.
func TestRecheckKeptRun(t *testing.T) {
	dir := os.Getenv(envRecheck)
	if dir == "" {
		t.Skipf("set %s to the directory of a kept run", envRecheck)
	}
	files, err := filepath.Glob(filepath.Join(dir, "history-*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no history-*.jsonl in %s", dir)
	}
	var parts [][]Op
	for _, f := range files {
		ops, err := ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, ops)
	}
	var snaps []Snapshot
	data, err := os.ReadFile(filepath.Join(dir, "snapshots.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &snaps); err != nil {
		t.Fatal(err)
	}
	rep := Check(Merge(parts...), snaps)
	t.Log("\n" + rep.Summary())
	for _, l := range rep.Leaks {
		t.Logf("leak: %s %s@%s (seq %d) at snapshot %d: %s", l.IP, l.Handle, l.Host, l.Seq, l.Snapshot, l.Cause)
	}
	if len(rep.Violations) > 0 {
		t.Errorf("%d violations", len(rep.Violations))
	}
}
