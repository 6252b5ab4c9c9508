// Command ipam-bench measures IPAM allocation throughput and latency against
// the raw etcd compare-and-swap rate, measured in the same run, against the
// same embedded etcd, at the same concurrency, and prints a markdown table.
//
//	go run ./cmd/ipam-bench -duration 3s -rounds 3
//
// Target (issue 15): the allocation rate, each allocation's release
// included, is at least 0.70 of the raw CAS rate. A second baseline, two
// compare-and-swap puts with no read, is the floor of what an allocation and
// its release must cost (two durable writes); the "vs floor" column is the
// allocator's overhead above it. A third, the model floor, writes the
// records an allocation and its release write (the block and a handle
// record, twice), with none of the allocator's work: "vs model floor" is
// what the allocator's own code costs.
//
// Measurements are interleaved (CAS, then IPAM, at one concurrency, round
// after round) so that both see the same background load; rates are totals
// over all rounds, latencies are percentiles over every sample.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/datastore/embedded"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

const target = 0.70

func main() {
	duration := flag.Duration("duration", 3*time.Second, "how long each measurement runs in each round")
	ops := flag.Int("ops", 0, "stop a measurement after this many operations in a round (0: run for -duration)")
	rounds := flag.Int("rounds", 3, "how many times every measurement is repeated, interleaved")
	warmup := flag.Int("warmup", 20, "unmeasured operations per worker before each measurement")
	only := flag.String("only", "", "run only the measurements whose name contains this (and their CAS baselines)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *rounds < 1 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "ipam-bench: -rounds must be at least 1 and -duration positive")
		os.Exit(2)
	}
	if *cpuprofile != "" {
		stop, err := startProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ipam-bench:", err)
			os.Exit(1)
		}
		defer stop()
	}
	if err := run(config{duration: *duration, maxOps: *ops, rounds: *rounds, warmup: *warmup, only: *only}); err != nil {
		fmt.Fprintln(os.Stderr, "ipam-bench:", err)
		os.Exit(1)
	}
}

type config struct {
	duration time.Duration
	maxOps   int
	rounds   int
	warmup   int
	only     string
}

// startProfile writes a CPU profile to path until the returned stop runs.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// stats accumulates one measurement over all rounds.
type stats struct {
	n       int
	elapsed time.Duration
	lats    []time.Duration
	rates   []float64 // per round
	// every etcd request and failed compare of the measurement's
	// operations, warm-up included (calls: how many operations that was)
	reqs, conflicts, calls int64
	cpu                    time.Duration // the process's CPU time (etcd's and the clients') over the same operations
}

// reqCounter counts the requests the Store sends to etcd.
type reqCounter struct{ reqs, conflicts atomic.Int64 }

func (c *reqCounter) ObserveOp(string, string, time.Duration, error) { c.reqs.Add(1) }
func (c *reqCounter) ObserveCAS(_ string, applied bool) {
	if !applied {
		c.conflicts.Add(1)
	}
}

func (s *stats) rate() float64 { return float64(s.n) / s.elapsed.Seconds() }

func (s *stats) pct(p float64) time.Duration {
	slices.Sort(s.lats)
	return s.lats[min(len(s.lats)-1, int(float64(len(s.lats))*p))]
}

// measure runs op in workers goroutines until the duration has passed or
// maxOps operations completed. op returns how long the timed part took.
func measure(cfg config, workers int, op func(worker int) (time.Duration, error)) (n int, elapsed time.Duration, lats []time.Duration, err error) {
	for w := 0; w < workers; w++ { // warm up: connections, caches, first block
		for i := 0; i < cfg.warmup; i++ {
			if _, err := op(w); err != nil {
				return 0, 0, nil, fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	var (
		wg       sync.WaitGroup
		count    atomic.Int64
		firstErr error
		errOnce  sync.Once
		per      = make([][]time.Duration, workers)
	)
	start := time.Now()
	deadline := start.Add(cfg.duration)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if cfg.maxOps > 0 && count.Add(1) > int64(cfg.maxOps) {
					return
				}
				lat, err := op(w)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				per[w] = append(per[w], lat)
			}
		}()
	}
	wg.Wait()
	elapsed = time.Since(start)
	if firstErr != nil {
		return 0, 0, nil, firstErr
	}
	lats = slices.Concat(per...)
	if len(lats) == 0 {
		return 0, 0, nil, fmt.Errorf("no operation completed")
	}
	return len(lats), elapsed, lats, nil
}

// bench is one line of the table.
type bench struct {
	name        string
	concurrency int
	kind        string // "cas", "cas2" (two writes), "churn" (allocate + release), "fill" (allocate only)
	hosts       int    // allocators; workers share them round-robin
	lanes       bool   // each worker allocates from a pool of its own ("lane-<worker>")
	target      bool   // the target is judged on this line
	st          stats
}

func run(cfg config) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ipam-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := embedded.Open(ctx, datastore.Config{DataDir: dir})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := createPools(ctx, s); err != nil {
		return err
	}
	h := &harness{ctx: ctx, s: s, quiet: slog.New(slog.NewTextHandler(io.Discard, nil)), count: &reqCounter{}}
	s.Observe(h.count)
	benches := benchTable(cfg.only)
	if err := h.runRounds(cfg, benches); err != nil {
		return err
	}
	report(cfg, benches)
	return nil
}

// createPools stores the two pools the IPAM measurements allocate from.
func createPools(ctx context.Context, s *datastore.Store) error {
	// "churn": every allocation is released again, so the /16 never fills.
	// "fill": allocations are kept; a /10 holds more than any run makes.
	// "lane-<n>": one pool per worker, so that their blocks differ.
	pools := []api.IPPool{
		{Name: "churn", CIDR: "10.0.0.0/16", BlockSize: 26},
		{Name: "fill", CIDR: "10.64.0.0/10", BlockSize: 26},
	}
	for i := 0; i < 8; i++ {
		pools = append(pools, api.IPPool{Name: fmt.Sprintf("lane-%d", i), CIDR: fmt.Sprintf("10.16.%d.0/20", 16*i), BlockSize: 26})
	}
	for _, p := range pools {
		p.Normalize()
		if err := p.Validate(); err != nil {
			return err
		}
		if err := s.Put(ctx, api.PoolKey(p.Name), p); err != nil {
			return err
		}
	}
	return nil
}

// harness holds what every measured operation uses.
type harness struct {
	ctx   context.Context
	s     *datastore.Store
	quiet *slog.Logger
	seq   atomic.Int64 // unique host and handle names
	count *reqCounter
}

// casOp is the baseline: one read and one compare-and-swap put of the
// worker's own key.
func (h *harness) casOp(workers int) func(int) (time.Duration, error) {
	ctx, s := h.ctx, h.s
	return func(w int) (time.Duration, error) {
		k := fmt.Sprintf("/bench/cas/%d/%d", workers, w)
		t0 := time.Now()
		g, err := s.Read(ctx, datastore.Get(k))
		if err != nil {
			return 0, err
		}
		var rev int64 // 0: the key does not exist yet
		if rec, ok := g.One(0); ok {
			rev = rec.ModRevision
		}
		tr, err := s.CAS(ctx, []datastore.Cond{datastore.Unchanged(k, rev)}, []datastore.Op{datastore.PutRaw(k, fmt.Sprint(rev))})
		if err != nil {
			return 0, err
		}
		if !tr.Succeeded {
			return 0, fmt.Errorf("CAS on %s lost, but nobody else writes it", k)
		}
		return time.Since(t0), nil
	}
}

// cas2Op is the floor of an allocation and its release: two
// compare-and-swap puts of the worker's own key, each from the revision
// the previous one returned (no read), as the allocator does from its cache.
func (h *harness) cas2Op(workers int) func(int) (time.Duration, error) {
	ctx, s := h.ctx, h.s
	revs := make([]int64, workers)
	run := h.seq.Add(1) // new keys each round: revs start from absent
	return func(w int) (time.Duration, error) {
		k := fmt.Sprintf("/bench/cas2/%d/%d/%d", run, workers, w)
		t0 := time.Now()
		err := casTwice(ctx, s, k, &revs[w], func(int) []datastore.Op { return []datastore.Op{datastore.PutRaw(k, fmt.Sprint(revs[w]))} })
		return time.Since(t0), err
	}
}

// casTwice makes two compare-and-swap transactions on key, each from the
// revision the previous one returned (*rev, updated), with ops(i) as the
// i-th one's writes. Nobody else writes key: a lost compare is an error.
func casTwice(ctx context.Context, s *datastore.Store, key string, rev *int64, ops func(i int) []datastore.Op) error {
	for i := 0; i < 2; i++ {
		tr, err := s.CAS(ctx, []datastore.Cond{datastore.Unchanged(key, *rev)}, ops(i))
		if err != nil {
			return err
		}
		if !tr.Succeeded {
			return fmt.Errorf("CAS on %s lost, but nobody else writes it", key)
		}
		*rev = tr.Revision
	}
	return nil
}

// modelOp is the floor of the records an allocation and its release
// write, with none of the allocator's work: two transactions on the
// worker's own "block" (a block record of a real /26 with a handful of
// addresses held, from the cached revision), the first also putting a
// handle record, the second deleting it, as Allocate and Release do.
func (h *harness) modelOp(workers int) func(int) (time.Duration, error) {
	ctx, s := h.ctx, h.s
	revs := make([]int64, workers)
	run := h.seq.Add(1)
	blk := modelBlock()
	rec := api.HandleRecord{Seq: 1, State: api.StateAllocated, Since: time.Now().UTC()}
	return func(w int) (time.Duration, error) {
		bk := fmt.Sprintf("/bench/model/%d/%d/%d/block", run, workers, w)
		hk := fmt.Sprintf("/bench/model/%d/%d/%d/handle", run, workers, w)
		t0 := time.Now()
		err := casTwice(ctx, s, bk, &revs[w], func(i int) []datastore.Op {
			if i == 0 {
				return []datastore.Op{datastore.PutAppended(bk, blk), datastore.PutAppended(hk, rec)}
			}
			return []datastore.Op{datastore.PutAppended(bk, blk), datastore.Delete(hk)}
		})
		return time.Since(t0), err
	}
}

// modelBlock is a /26 block record holding four addresses, about the size
// the benchmark's allocators write.
func modelBlock() *api.Block {
	b := &api.Block{CIDR: netip.MustParsePrefix("10.250.0.0/26"), Affinity: "host:bench-model"}
	b.Allocations = make([]*api.Owner, 64)
	for i := range 4 {
		b.Allocations[i] = &api.Owner{Host: "bench-model", Handle: fmt.Sprintf("bench.%d", i), Seq: uint64(i + 1)}
	}
	for i := 4; i < 64; i++ {
		b.Unallocated = append(b.Unallocated, i)
	}
	return b
}

// allocOp allocates one address (timed) and, for "churn", releases it
// (untimed), on b.hosts fresh allocators shared round-robin by the workers.
func (h *harness) allocOp(b *bench) func(int) (time.Duration, error) {
	ctx := h.ctx
	allocs := make([]*ipam.Allocator, b.hosts)
	for i := range allocs {
		allocs[i] = ipam.New(h.s, fmt.Sprintf("bench-%d-host-%d", h.seq.Add(1), i), h.quiet)
	}
	sel := ipam.Selection{Family: 4, Pools: []string{b.kind}}
	return func(w int) (time.Duration, error) {
		a := allocs[w%len(allocs)]
		sel := sel
		if b.lanes {
			sel.Pools = []string{fmt.Sprintf("lane-%d", w)}
		}
		handle := fmt.Sprintf("bench.%d", h.seq.Add(1))
		t0 := time.Now()
		ip, err := a.Allocate(ctx, handle, sel)
		lat := time.Since(t0)
		if err != nil {
			return 0, err
		}
		if b.kind == "churn" {
			if ok, err := a.Release(ctx, ip); err != nil || !ok {
				return 0, fmt.Errorf("release %s: %v, %v", ip, ok, err)
			}
		}
		return lat, nil
	}
}

// benchTable lists the table's lines: at each concurrency the CAS baseline
// first, then the IPAM measurements judged against it.
func benchTable(only string) []*bench {
	var benches []*bench
	for _, c := range []int{1, 8} {
		benches = append(benches,
			&bench{name: "etcd CAS (read + compare-and-swap put, as datastore sends them; own key per worker)", concurrency: c, kind: "cas"},
			&bench{name: "floor: two etcd CAS puts from the cached revision, no read (an allocation's and its release's writes)", concurrency: c, kind: "cas2"},
			&bench{name: "model floor: the records an allocation and its release write (block + handle put, block put + handle delete), no allocator", concurrency: c, kind: "casmodel"})
		if c == 1 {
			benches = append(benches,
				&bench{name: "IPAM Allocate + Release, 1 host", concurrency: 1, kind: "churn", hosts: 1, target: true},
				&bench{name: "IPAM Allocate only (pool never fills), 1 host", concurrency: 1, kind: "fill", hosts: 1},
			)
		} else {
			benches = append(benches,
				&bench{name: "IPAM Allocate + Release, 8 hosts (own allocator each)", concurrency: 8, kind: "churn", hosts: 8, target: true},
				&bench{name: "IPAM Allocate + Release, 8 goroutines sharing 1 host's allocator, one pool (one block)", concurrency: 8, kind: "churn", hosts: 1},
				&bench{name: "IPAM Allocate + Release, 8 goroutines sharing 1 host's allocator, a pool each (8 blocks)", concurrency: 8, kind: "churn", hosts: 1, lanes: true},
				&bench{name: "IPAM Allocate only (pool never fills), 8 hosts", concurrency: 8, kind: "fill", hosts: 8},
			)
		}
	}
	if only == "" {
		return benches
	}
	kept := benches[:0]
	for _, b := range benches {
		if strings.HasPrefix(b.kind, "cas") || strings.Contains(b.name, only) {
			kept = append(kept, b)
		}
	}
	return kept
}

// runRounds measures every line once per round, interleaved, adding to
// each line's stats.
func (h *harness) runRounds(cfg config, benches []*bench) error {
	for r := 0; r < cfg.rounds; r++ {
		for _, b := range benches {
			var op func(int) (time.Duration, error)
			switch b.kind {
			case "cas":
				op = h.casOp(b.concurrency)
			case "cas2":
				op = h.cas2Op(b.concurrency)
			case "casmodel":
				op = h.modelOp(b.concurrency)
			default:
				op = h.allocOp(b)
			}
			reqs, conflicts, cpu0 := h.count.reqs.Load(), h.count.conflicts.Load(), processCPU()
			n, el, lats, err := measure(cfg, b.concurrency, op)
			b.st.cpu += processCPU() - cpu0
			if err != nil {
				return fmt.Errorf("%s, concurrency %d: %w", b.name, b.concurrency, err)
			}
			b.st.reqs += h.count.reqs.Load() - reqs
			b.st.conflicts += h.count.conflicts.Load() - conflicts
			b.st.calls += int64(n + cfg.warmup*b.concurrency)
			b.st.n += n
			b.st.elapsed += el
			b.st.lats = append(b.st.lats, lats...)
			b.st.rates = append(b.st.rates, float64(n)/el.Seconds())
		}
	}
	return nil
}

// report prints the markdown table, each line's ratio to the CAS baseline
// at its concurrency, and the verdict on the target.
func report(cfg config, benches []*bench) {
	casOf, floorOf, modelOf := map[int]*bench{}, map[int]*bench{}, map[int]*bench{}
	for _, b := range benches {
		switch b.kind {
		case "cas":
			casOf[b.concurrency] = b
		case "cas2":
			floorOf[b.concurrency] = b
		case "casmodel":
			modelOf[b.concurrency] = b
		}
	}
	fmt.Printf("ipam-bench: %s, GOMAXPROCS=%d, %d CPUs; embedded single-member etcd in this process, data in %s;\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), os.TempDir())
	fmt.Printf("%d interleaved rounds of %v per measurement", cfg.rounds, cfg.duration)
	if cfg.maxOps > 0 {
		fmt.Printf(" (or %d operations)", cfg.maxOps)
	}
	fmt.Printf(", %d warm-up operations per worker.\n\n", cfg.warmup)
	fmt.Println("| measurement | concurrency | ops | ops/s | p50 | p99 | etcd requests per op (failed compares) | CPU per op | ratio to CAS (per round) | vs floor | vs model floor |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
	var verdicts []string
	for _, b := range benches {
		ratio, ratioCol := ratioTo(b, casOf[b.concurrency])
		floorCol, modelCol := "", ""
		if fl := floorOf[b.concurrency]; b.kind == "churn" && fl != nil {
			floorCol = fmt.Sprintf("%.2f", b.st.rate()/fl.st.rate())
		}
		if m := modelOf[b.concurrency]; b.kind == "churn" && m != nil {
			modelCol = fmt.Sprintf("%.2f", b.st.rate()/m.st.rate())
		}
		fmt.Printf("| %s | %d | %d | %.0f | %s | %s | %.3f (%.3f) | %.0f µs | %s | %s | %s |\n",
			b.name, b.concurrency, b.st.n, b.st.rate(), ms(b.st.pct(0.50)), ms(b.st.pct(0.99)),
			float64(b.st.reqs)/float64(b.st.calls), float64(b.st.conflicts)/float64(b.st.calls),
			float64(b.st.cpu.Microseconds())/float64(b.st.calls), ratioCol, floorCol, modelCol)
		if b.target {
			v := "met"
			if ratio < target {
				v = "MISSED"
			}
			verdicts = append(verdicts, fmt.Sprintf("concurrency %d: %.2f, %s", b.concurrency, ratio, v))
		}
	}
	fmt.Println()
	fmt.Println("Latency is one CAS (get + txn), one pair of CAS puts, or one Allocate call; Release is not timed.")
	fmt.Println("Allocate + Release rows count allocations per second of wall time with each allocation's Release")
	fmt.Println("inside that time (two etcd writes per allocation); Allocate only rows keep every address, so they")
	fmt.Println("include a block claim every 64 allocations. Requests per op count an Allocate + Release as one op.")
	fmt.Println("CPU per op is the whole process's (the embedded etcd's and the clients'), user and system, warm-up included.")
	fmt.Println()
	fmt.Printf("Target: allocation rate (Allocate + Release rows) >= %.2f x raw CAS rate at the same concurrency: %s.\n",
		target, strings.Join(verdicts, "; "))
}

// ratioTo returns b's rate over base's and the column text with the ratio
// of each round.
func ratioTo(b, base *bench) (float64, string) {
	if b == base {
		return 1, "1"
	}
	ratio := b.st.rate() / base.st.rate()
	perRound := make([]string, len(b.st.rates))
	for i := range b.st.rates {
		perRound[i] = fmt.Sprintf("%.2f", b.st.rates[i]/base.st.rates[i])
	}
	return ratio, fmt.Sprintf("%.2f (%s)", ratio, strings.Join(perRound, ", "))
}

// processCPU is the CPU time this process has used, user and system: with
// two CPUs shared by etcd and its clients, CPU per operation is what
// bounds the rate at 8 hosts.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
