// Command ipam-bench measures IPAM allocation throughput and latency against
// the raw etcd compare-and-swap rate, measured in the same run, against the
// same embedded etcd, at the same concurrency. It prints a markdown table.
//
//	go run ./cmd/ipam-bench -duration 5s
//
// Target: the allocation rate is at least half the raw CAS rate.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

const target = 0.5

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	ops := flag.Int("ops", 0, "stop a measurement after this many operations (0: run for -duration)")
	warmup := flag.Int("warmup", 20, "unmeasured operations per worker before each measurement")
	flag.Parse()
	if err := run(*duration, *ops, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "ipam-bench:", err)
		os.Exit(1)
	}
}

// result is one measurement.
type result struct {
	name        string
	concurrency int
	n           int
	elapsed     time.Duration
	p50, p99    time.Duration
}

func (r result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// measure runs op in workers goroutines until d has passed or maxOps
// operations completed, and reports the rate and latency percentiles. op
// returns how long the part to be timed took.
func measure(name string, workers int, d time.Duration, maxOps, warmup int, op func(worker int) (time.Duration, error)) (result, error) {
	for w := 0; w < workers; w++ { // warm up: connections, caches, first block
		for i := 0; i < warmup; i++ {
			if _, err := op(w); err != nil {
				return result{}, fmt.Errorf("%s warm-up: %w", name, err)
			}
		}
	}
	var (
		wg       sync.WaitGroup
		count    atomic.Int64
		firstErr error
		errOnce  sync.Once
		lats     = make([][]time.Duration, workers)
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if maxOps > 0 && count.Add(1) > int64(maxOps) {
					return
				}
				lat, err := op(w)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				lats[w] = append(lats[w], lat)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return result{}, fmt.Errorf("%s: %w", name, firstErr)
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	if len(all) == 0 {
		return result{}, fmt.Errorf("%s: no operation completed", name)
	}
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(float64(len(all))*p))] }
	return result{name: name, concurrency: workers, n: len(all), elapsed: elapsed, p50: pct(0.50), p99: pct(0.99)}, nil
}

func run(d time.Duration, maxOps, warmup int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ipam-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := datastore.Open(ctx, datastore.Config{DataDir: dir})
	if err != nil {
		return err
	}
	defer s.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// "churn": every allocation is released again, so a /16 never fills.
	// "fill": allocations are kept; a /10 holds more than any run makes.
	for _, p := range []api.IPPool{
		{Name: "churn", CIDR: "10.0.0.0/16", BlockSize: 26},
		{Name: "fill", CIDR: "10.64.0.0/10", BlockSize: 26},
	} {
		p.Normalize()
		if err := p.Validate(); err != nil {
			return err
		}
		if err := s.Put(ctx, ipam.PoolKey(p.Name), p); err != nil {
			return err
		}
	}

	cas := func(workers int) (result, error) {
		for w := 0; w < workers; w++ {
			if _, err := s.Client.Put(ctx, casKey(workers, w), "0"); err != nil {
				return result{}, err
			}
		}
		return measure("raw etcd CAS: get + txn(ModRevision==rev) put, own key per worker", workers, d, maxOps, warmup,
			func(w int) (time.Duration, error) {
				t0 := time.Now()
				c, cancel := s.Ctx(ctx)
				defer cancel()
				k := casKey(workers, w)
				g, err := s.Client.Get(c, k)
				if err != nil {
					return 0, err
				}
				rev := g.Kvs[0].ModRevision
				tr, err := s.Client.Txn(c).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
					Then(clientv3.OpPut(k, fmt.Sprint(rev))).Commit()
				if err != nil {
					return 0, err
				}
				if !tr.Succeeded {
					return 0, fmt.Errorf("CAS on %s lost: nobody else writes it", k)
				}
				return time.Since(t0), nil
			})
	}

	run := 0
	alloc := func(name string, workers, hosts int, release bool) (result, error) {
		run++
		allocs := make([]*ipam.Allocator, hosts)
		for h := range allocs {
			allocs[h] = ipam.New(s, fmt.Sprintf("bench-%d-host-%d", run, h), quiet)
		}
		sel := ipam.Selection{Family: 4, Pools: []string{"fill"}}
		if release {
			sel.Pools = []string{"churn"}
		}
		var seq atomic.Int64
		return measure(name, workers, d, maxOps, warmup, func(w int) (time.Duration, error) {
			a := allocs[w%hosts]
			handle := fmt.Sprintf("bench.%d.%d", run, seq.Add(1))
			t0 := time.Now()
			ip, err := a.Allocate(ctx, handle, sel)
			lat := time.Since(t0)
			if err != nil {
				return 0, err
			}
			if release {
				if ok, err := a.Release(ctx, ip); err != nil || !ok {
					return 0, fmt.Errorf("release %s: %v, %v", ip, ok, err)
				}
			}
			return lat, nil
		})
	}

	type row struct {
		res    result
		ratio  float64
		target bool
	}
	var rows []row
	casRate := map[int]float64{}
	for _, c := range []int{1, 8} {
		r, err := cas(c)
		if err != nil {
			return err
		}
		casRate[c] = r.rate()
		rows = append(rows, row{res: r, ratio: 1})
	}
	for _, m := range []struct {
		name           string
		workers, hosts int
		release        bool
		target         bool
	}{
		{"IPAM Allocate + Release, 1 host", 1, 1, true, true},
		{"IPAM Allocate + Release, 8 hosts (own allocator each)", 8, 8, true, true},
		{"IPAM Allocate + Release, 8 goroutines sharing 1 host", 8, 1, true, false},
		{"IPAM Allocate only (pool never fills), 1 host", 1, 1, false, false},
		{"IPAM Allocate only (pool never fills), 8 hosts", 8, 8, false, false},
	} {
		r, err := alloc(m.name, m.workers, m.hosts, m.release)
		if err != nil {
			return err
		}
		rows = append(rows, row{res: r, ratio: r.rate() / casRate[m.workers], target: m.target})
	}

	fmt.Printf("ipam-bench: %s, GOMAXPROCS=%d, %d CPUs, embedded single-member etcd (same process) in %s, %v per measurement",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), os.TempDir(), d)
	if maxOps > 0 {
		fmt.Printf(" or %d operations", maxOps)
	}
	fmt.Printf(", %d warm-up operations per worker\n\n", warmup)
	fmt.Println("| measurement | concurrency | ops | ops/s | p50 | p99 | rate / CAS rate |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %d | %d | %.0f | %s | %s | %.2f |\n",
			r.res.name, r.res.concurrency, r.res.n, r.res.rate(), ms(r.res.p50), ms(r.res.p99), r.ratio)
	}
	fmt.Println()
	fmt.Println("Latency: one CAS (get + txn) or one Allocate call; Release is not timed. Allocate + Release rates count")
	fmt.Println("allocations per second of wall time, with each allocation's release inside that time.")
	fmt.Println()
	var verdicts []string
	for _, r := range rows {
		if !r.target {
			continue
		}
		v := "met"
		if r.ratio < target {
			v = "MISSED"
		}
		verdicts = append(verdicts, fmt.Sprintf("concurrency %d: %.2f (%s)", r.res.concurrency, r.ratio, v))
	}
	fmt.Printf("Target: allocation rate (Allocate + Release) >= %.1f x raw CAS rate at the same concurrency: %s\n",
		target, strings.Join(verdicts, "; "))
	return nil
}

func casKey(workers, w int) string { return fmt.Sprintf("/bench/cas/%d/%d", workers, w) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
