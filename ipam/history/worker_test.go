package history

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// A worker is one host: this test binary run again in the switch namespace
// with envJob set, with its own etcd client and allocator. It plays Docker
// for a changing set of endpoints: RequestAddress (AllocateOnce, or Assign
// of a fixed address), CreateEndpoint (Bind), DeleteEndpoint (Unbind),
// ReleaseAddress (Release) or a release by handle, with deliberate replays,
// and records every call. It takes commands on stdin (go, pause, resume,
// stop) and answers on stdout after ctlMarker.

const (
	envJob    = "IPAM_HISTORY_WORKER"
	ctlMarker = "HISTORY-CTL "

	callTimeout  = ipamdriver.HandlerTimeout // one allocator call: what the IPAM driver allows a Docker call
	retryFor     = 45 * time.Second          // how long a request is retried before its client gives up
	workerExpiry = 2 * time.Hour
)

type workerJob struct {
	Proc      int      `json:"proc"`
	Host      string   `json:"host"`
	Endpoints []string `json:"endpoints"`
	Ops       int      `json:"ops"` // calls to make
	Target    int      `json:"target"`
	Pool      string   `json:"pool"`
	Seed      uint64   `json:"seed"`
	Out       string   `json:"out"`
}

// holding is one allocation the worker believes it holds.
type holding struct {
	handle, ep string
	ip         netip.Addr
	st         allocState // allocated, bound or unbound
}

type worker struct {
	job    workerJob
	a      *ipam.Allocator
	rng    *rand.Rand
	w      *Writer
	notes  *noteLog
	ctl    <-chan string
	pool   netip.Prefix
	seq    int
	calls  int
	nextID int
	held   []*holding
	// released are addresses this worker released, for late replays of
	// Docker's ReleaseAddress.
	released []netip.Addr
}

// TestHistoryWorker is not a test: TestHistory runs this binary again with
// envJob set, and this function is then one host.
func TestHistoryWorker(t *testing.T) {
	spec := os.Getenv(envJob)
	if spec == "" {
		t.Skip("worker process for TestHistory")
	}
	var job workerJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		t.Fatal(err)
	}
	if err := runWorker(job); err != nil {
		t.Fatal(err)
	}
}

func runWorker(job workerJob) error {
	ctx, cancel := context.WithTimeout(context.Background(), workerExpiry)
	defer cancel()
	s, err := datastore.Connect(ctx, datastore.Config{Endpoints: job.Endpoints})
	if err != nil {
		return err
	}
	defer s.Close()
	hw, err := Create(job.Out)
	if err != nil {
		return err
	}
	notes := &noteLog{}
	w := &worker{
		job: job, rng: rand.New(rand.NewPCG(job.Seed, uint64(job.Proc))), w: hw, notes: notes,
		a:    ipam.New(s, job.Host, slog.New(notes)),
		pool: netip.MustParsePrefix(job.Pool),
		ctl:  readCommands(),
	}
	say("ready")
	if cmd := <-w.ctl; cmd != "go" {
		return fmt.Errorf("first command %q, want go", cmd)
	}
	stopped := false
	for w.calls < job.Ops && !stopped {
		select {
		case cmd := <-w.ctl:
			stopped = w.command(cmd)
			continue
		default:
		}
		w.step(ctx)
	}
	if err := hw.Flush(); err != nil {
		return err
	}
	say("done")
	for !stopped {
		stopped = w.command(<-w.ctl)
	}
	if err := hw.Close(); err != nil {
		return err
	}
	say(fmt.Sprintf("stopped %d", w.calls))
	return nil
}

// command obeys one command between calls; it reports whether to stop.
func (w *worker) command(cmd string) bool {
	switch cmd {
	case "pause":
		if err := w.w.Flush(); err != nil {
			say("error " + err.Error())
		}
		say("paused")
		for {
			switch c := <-w.ctl; c {
			case "resume":
				return false
			case "stop", "":
				return true
			}
		}
	case "stop", "": // "" when stdin closed: the test is gone
		return true
	}
	return false
}

func say(msg string) { fmt.Printf("\n%s%s\n", ctlMarker, msg) }

func readCommands() <-chan string {
	ch := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			ch <- strings.TrimSpace(sc.Text())
		}
		close(ch)
	}()
	return ch
}

// step makes one move: a new allocation, or the next step in an existing
// one's life, or a late replay of a release.
func (w *worker) step(ctx context.Context) {
	if len(w.released) > 0 && w.rng.IntN(100) < 4 {
		w.lateReleaseReplay(ctx)
		return
	}
	if len(w.held) == 0 || (len(w.held) < w.job.Target && w.rng.IntN(100) < 45) {
		w.request(ctx)
		return
	}
	i := w.rng.IntN(len(w.held))
	h := w.held[i]
	switch h.st {
	case allocated:
		switch r := w.rng.IntN(100); {
		case r < 8: // a replayed RequestAddress: the same address again
			w.once(ctx, Op{Kind: Allocate, Handle: h.handle, Replay: true}, w.requestFn(h.handle, netip.Addr{}))
		case r < 14: // Docker rolls back: CreateEndpoint failed
			w.release(ctx, i)
		default:
			w.bind(ctx, i)
		}
	case bound:
		if w.rng.IntN(100) < 5 {
			w.once(ctx, Op{Kind: Bind, Handle: h.handle, IP: h.ip, Endpoint: h.ep, Replay: true}, w.bindFn(h))
		}
		w.unbind(ctx, i)
	case unbound:
		if w.rng.IntN(100) < 8 {
			w.takeOver(ctx, i)
			return
		}
		w.release(ctx, i)
	}
}

func (w *worker) newHandle() string {
	w.nextID++
	return fmt.Sprintf("w%d.%d", w.job.Proc, w.nextID)
}

func (w *worker) randomIP() netip.Addr {
	b := w.pool.Addr().As4()
	size := 1 << (32 - w.pool.Bits())
	n := w.rng.IntN(size)
	b[2] += byte(n >> 8)
	b[3] += byte(n)
	return netip.AddrFrom4(b)
}

// request is RequestAddress for a new endpoint: mostly any address, some
// a fixed one.
func (w *worker) request(ctx context.Context) {
	handle := w.newHandle()
	var fixed netip.Addr
	kind := Allocate
	if w.rng.IntN(100) < 10 {
		kind, fixed = Assign, w.randomIP()
		for _, h := range w.held {
			if h.ip == fixed {
				return // this host's own: Assign may take it over only once unbound (takeOver)
			}
		}
	}
	op, ok := w.call(ctx, Op{Kind: kind, Handle: handle, IP: fixed}, w.requestFn(handle, fixed), asRequest)
	if !ok {
		return
	}
	h := &holding{handle: handle, ip: op.IP, st: allocated}
	w.held = append(w.held, h)
	if w.rng.IntN(100) < 10 { // replayed at once, as a retrying client would
		w.once(ctx, Op{Kind: kind, Handle: handle, IP: fixed, Replay: true}, w.requestFn(handle, fixed))
	}
}

func (w *worker) requestFn(handle string, fixed netip.Addr) func(context.Context) (netip.Addr, int, error) {
	if fixed.IsValid() {
		return func(ctx context.Context) (netip.Addr, int, error) {
			return fixed, 0, w.a.Assign(ctx, fixed, handle)
		}
	}
	return func(ctx context.Context) (netip.Addr, int, error) {
		ip, err := w.a.AllocateOnce(ctx, handle, ipam.Selection{Family: 4})
		return ip, 0, err
	}
}

func (w *worker) bindFn(h *holding) func(context.Context) (netip.Addr, int, error) {
	return func(ctx context.Context) (netip.Addr, int, error) {
		return h.ip, 0, w.a.Bind(ctx, h.handle, []netip.Addr{h.ip}, h.ep)
	}
}

func (w *worker) bind(ctx context.Context, i int) {
	h := w.held[i]
	h.ep = fmt.Sprintf("%016x%016x%016x%016x", w.rng.Uint64(), w.rng.Uint64(), w.rng.Uint64(), w.rng.Uint64())
	if _, ok := w.call(ctx, Op{Kind: Bind, Handle: h.handle, IP: h.ip, Endpoint: h.ep}, w.bindFn(h), asDocker); !ok {
		w.release(ctx, i) // Docker rolls back: ReleaseAddress
		return
	}
	h.st = bound
}

func (w *worker) unbind(ctx context.Context, i int) {
	h := w.held[i]
	fn := func(ctx context.Context) (netip.Addr, int, error) {
		return h.ip, 0, w.a.Unbind(ctx, h.handle, []netip.Addr{h.ip}, h.ep)
	}
	if _, ok := w.call(ctx, Op{Kind: Unbind, Handle: h.handle, IP: h.ip, Endpoint: h.ep}, fn, asDocker); !ok {
		w.release(ctx, i) // Docker logs the failed DeleteEndpoint and releases the address anyway
		return
	}
	h.st = unbound
	if w.rng.IntN(100) < 5 { // DeleteEndpoint replayed
		w.once(ctx, Op{Kind: Unbind, Handle: h.handle, IP: h.ip, Endpoint: h.ep, Replay: true}, fn)
	}
}

// release frees an allocation: Docker's ReleaseAddress (the address only)
// or a release by handle.
func (w *worker) release(ctx context.Context, i int) {
	h := w.held[i]
	kind := Release
	if w.rng.IntN(100) < 30 {
		kind = ReleaseHandle
	}
	fn := w.releaseFn(kind, h.handle, h.ip)
	if _, ok := w.call(ctx, Op{Kind: kind, Handle: h.handle, IP: h.ip}, fn, asDocker); !ok {
		w.abandon(i)
		return
	}
	w.drop(i)
	w.released = append(w.released, h.ip)
	if len(w.released) > 64 {
		w.released = w.released[1:]
	}
	if w.rng.IntN(100) < 10 { // Docker retries the release
		w.once(ctx, Op{Kind: kind, Handle: h.handle, IP: h.ip, Replay: true}, fn)
	}
}

func (w *worker) releaseFn(kind Kind, handle string, ip netip.Addr) func(context.Context) (netip.Addr, int, error) {
	if kind == ReleaseHandle {
		return func(ctx context.Context) (netip.Addr, int, error) {
			n, err := w.a.ReleaseByHandle(ctx, handle)
			return ip, n, err
		}
	}
	return func(ctx context.Context) (netip.Addr, int, error) {
		ok, err := w.a.Release(ctx, ip)
		if ok {
			return ip, 1, err
		}
		return ip, 0, err
	}
}

// lateReleaseReplay repeats Docker's ReleaseAddress for an address this
// worker released a while ago, which another host (or nobody) may hold by
// now: it must free nothing anyone holds. Skipped while this host holds
// the address itself: a release naming only the address frees this host's
// allocation that no endpoint is bound to, by design (Docker's rollback).
func (w *worker) lateReleaseReplay(ctx context.Context) {
	ip := w.released[w.rng.IntN(len(w.released))]
	for _, h := range w.held {
		if h.ip == ip {
			return
		}
	}
	w.once(ctx, Op{Kind: Release, IP: ip, Replay: true}, w.releaseFn(Release, "", ip))
}

// takeOver is docker run --ip for the address of this host's endpoint that
// DeleteEndpoint removed but whose ReleaseAddress has not come yet.
func (w *worker) takeOver(ctx context.Context, i int) {
	old := w.held[i]
	handle := w.newHandle()
	op, ok := w.call(ctx, Op{Kind: Assign, Handle: handle, IP: old.ip}, w.requestFn(handle, old.ip), asRequest)
	if op.Refused {
		// Refused means the old allocation was not this host's unbound one
		// any more: the checker reports that (lost) from the snapshot.
		w.release(ctx, i)
		return
	}
	if !ok {
		w.abandon(i)
		return
	}
	w.drop(i)
	w.held = append(w.held, &holding{handle: handle, ip: old.ip, st: allocated})
}

func (w *worker) drop(i int) {
	w.held[i] = w.held[len(w.held)-1]
	w.held = w.held[:len(w.held)-1]
}

// abandon gives up on an allocation whose request kept failing, as Docker
// gives up on the container: what it leaves is the collector's.
func (w *worker) abandon(i int) {
	h := w.held[i]
	w.record(Op{Kind: Abandon, Handle: h.handle, IP: h.ip, Invoke: Now(), Complete: Now(), Outcome: OK})
	w.drop(i)
}

// retry says how a client treats a call that did not succeed.
type retry int

const (
	// asRequest: RequestAddress. An unknown outcome is always retried with
	// the same handle (the replay must give the address if the first one
	// was applied); a failure is given up on half the time, as Docker fails
	// the container.
	asRequest retry = iota
	// asDocker: CreateEndpoint, DeleteEndpoint, ReleaseAddress. Docker
	// does not retry them: a third of the time the client moves on at the
	// first failure, the rest it retries as an operator would.
	asDocker
)

// call makes one request, retrying it with the same arguments while it
// neither succeeds nor is refused on its merits, for at most retryFor, and
// giving up earlier as policy says. A request for an address that is not
// acknowledged is recorded as abandoned.
func (w *worker) call(ctx context.Context, op Op, fn func(context.Context) (netip.Addr, int, error), policy retry) (Op, bool) {
	first := time.Now()
	for attempt := 0; ; attempt++ {
		op.Attempt = attempt
		done := w.once(ctx, op, fn)
		if done.Outcome == OK {
			return done, true
		}
		giveUp := done.Refused || time.Since(first) > retryFor || ctx.Err() != nil
		if attempt == 0 {
			switch policy {
			case asRequest:
				giveUp = giveUp || (done.Outcome == Failed && w.rng.IntN(2) == 0)
			case asDocker:
				giveUp = giveUp || w.rng.IntN(3) == 0
			}
		}
		if giveUp {
			if op.Kind == Allocate || op.Kind == Assign {
				w.record(Op{Kind: Abandon, Handle: op.Handle, IP: op.IP, Invoke: Now(), Complete: Now(), Outcome: OK})
			}
			return done, false
		}
		sleep(ctx, time.Duration(100+w.rng.IntN(400))*time.Millisecond)
	}
}

// once makes one call and records it.
func (w *worker) once(ctx context.Context, op Op, fn func(context.Context) (netip.Addr, int, error)) Op {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	w.notes.reset()
	op.Invoke = Now()
	ip, freed, err := fn(cctx)
	op.Complete = Now()
	op.Freed = freed
	if !op.IP.IsValid() || op.Kind == Allocate {
		op.IP = ip
	}
	op.Outcome, op.Refused = classify(err)
	if err != nil {
		op.Err = err.Error()
		if op.Kind == Allocate {
			op.IP = netip.Addr{}
		}
	}
	op.Notes = w.notes.take()
	w.calls++
	w.record(op)
	return op
}

func (w *worker) record(op Op) {
	op.Proc, op.Host, op.Seq = w.job.Proc, w.job.Host, w.seq
	w.seq++
	if err := w.w.Add(op); err != nil {
		panic(fmt.Sprintf("write history: %v", err))
	}
}

// classify says what an error told the caller.
func classify(err error) (Outcome, bool) {
	switch {
	case err == nil:
		return OK, false
	case errors.Is(err, datastore.ErrUncertain):
		return Unknown, false
	case errors.Is(err, ipam.ErrInUse), strings.Contains(err.Error(), "exhausted"):
		return Failed, true
	default:
		return Failed, false
	}
}

// noteLog is the allocator's logger: it keeps what the checker needs to
// know of a call (the allocator claiming an address again because its
// allocation was gone) and drops the rest.
type noteLog struct {
	mu    sync.Mutex
	notes []string
}

// reclaimMsg is what Allocator.Bind logs when it claims again an address
// whose allocation a release freed before the endpoint was created.
const reclaimMsg = "address was freed before its endpoint was created; claimed it again"

// readBackMsg is what the allocator logs when a commit etcd did not confirm
// turned out, read back, to have been applied.
const readBackMsg = "an unconfirmed etcd transaction was applied (read back)"

func (n *noteLog) Enabled(context.Context, slog.Level) bool { return true }
func (n *noteLog) Handle(_ context.Context, r slog.Record) error {
	note := ""
	switch r.Message {
	case reclaimMsg:
		note = NoteReclaimed
	case readBackMsg:
		note = NoteReadBack
	default:
		return nil
	}
	n.mu.Lock()
	n.notes = append(n.notes, note)
	n.mu.Unlock()
	return nil
}
func (n *noteLog) WithAttrs([]slog.Attr) slog.Handler { return n }
func (n *noteLog) WithGroup(string) slog.Handler      { return n }

func (n *noteLog) reset() { n.mu.Lock(); n.notes = nil; n.mu.Unlock() }
func (n *noteLog) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.notes
	n.notes = nil
	return out
}
