package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
)

// result is one scenario's figures.
type result struct {
	hosts          int
	mode           mode
	writesPerSec   float64
	routingPasses  float64 // per watcher per second, while steady
	policyPasses   float64
	routingCPU     float64 // share of a core per watcher spent in routing passes, while steady
	policyCPU      float64
	processCPU     float64 // the whole process (every simulated host's heartbeat and the watchers), share of a core
	heapPerWatcher float64 // MiB
	convP50        time.Duration
	convP99        time.Duration
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// scenario builds a cluster of n simulated hosts and cfg.watchers real ones
// in mode m and measures it.
func scenario(cfg config, n int, m mode) (result, error) {
	r := result{hosts: n, mode: m}
	c, err := newCluster(cfg, m)
	if err != nil {
		return r, err
	}
	defer c.close()
	if err := c.populate(n); err != nil {
		return r, err
	}
	heap0 := heapInUse()
	obs := newPasses()
	var ws []*watcher
	for i := 0; i < cfg.watchers; i++ {
		w, err := c.addWatcher(i, obs)
		if err != nil {
			return r, err
		}
		ws = append(ws, w)
	}
	if err := waitRoutes(c.ctx, ws, n, 2*time.Minute); err != nil {
		return r, err
	}
	time.Sleep(2 * heartbeat) // the first heartbeats and passes are over
	r.heapPerWatcher = float64(heapInUse()-min(heap0, heapInUse())) / float64(cfg.watchers) / (1 << 20)
	if err := c.steady(cfg, obs, &r); err != nil {
		return r, err
	}
	lat, err := c.converge(cfg, ws, n)
	if err != nil {
		return r, err
	}
	r.convP50, r.convP99 = percentile(lat, 50), percentile(lat, 99)
	return r, nil
}

// steady watches the cluster while nothing changes.
func (c *cluster) steady(cfg config, obs *passes, r *result) error {
	rev0, err := c.revision()
	if err != nil {
		return err
	}
	n0, t0 := obs.snapshot()
	cpu0, start := cpuTime(), time.Now()
	time.Sleep(cfg.steady)
	took := time.Since(start)
	cpu := cpuTime() - cpu0
	rev1, err := c.revision()
	if err != nil {
		return err
	}
	n1, t1 := obs.snapshot()
	secs, w := took.Seconds(), float64(cfg.watchers)
	r.writesPerSec = float64(rev1-rev0) / secs
	r.routingPasses = float64(n1["routing"]-n0["routing"]) / w / secs
	r.policyPasses = float64(n1["policy"]-n0["policy"]) / w / secs
	r.routingCPU = (t1["routing"] - t0["routing"]).Seconds() / w / secs
	r.policyCPU = (t1["policy"] - t0["policy"]).Seconds() / w / secs
	r.processCPU = cpu.Seconds() / secs
	return nil
}

// converge claims cfg.samples new blocks, one at a time, and returns, for
// each and each watcher, the time from the write to its route being
// handed to the data plane.
func (c *cluster) converge(cfg config, ws []*watcher, n int) ([]time.Duration, error) {
	var lat []time.Duration
	for s := 0; s < cfg.samples; s++ {
		cidr := blockAt(n + 1000 + s)
		host := fmt.Sprintf("sim-%04d", s%n)
		start := time.Now()
		if err := c.addBlock(host, cidr, false); err != nil {
			return nil, err
		}
		for _, w := range ws {
			for {
				if at, ok := w.routes.seen(cidr); ok {
					lat = append(lat, at.Sub(start))
					break
				}
				if time.Since(start) > 10*time.Second {
					return nil, fmt.Errorf("%s: no route to %s within 10s", w.name, cidr)
				}
				time.Sleep(time.Millisecond)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return lat, nil
}

func percentile(xs []time.Duration, p int) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

var _ agent.Observer = (*passes)(nil)

// printTable prints the results with each mode's figures against the
// baseline (the old heartbeat at the same size, and the smallest size).
func printTable(w io.Writer, cfg config, rows []result) {
	fmt.Fprintf(w, "Simulated hosts each with a Node record, a claim on a lease, a /26 block and two endpoints; %d real watchers (route sync + policy agents); steady window %s; %d blocks claimed for convergence; %d CPUs.\n\n",
		cfg.watchers, cfg.steady, cfg.samples, runtime.NumCPU())
	fmt.Fprintln(w, "| hosts | liveness | etcd writes/s (steady) | routing passes/s per watcher | policy passes/s per watcher | routing CPU per watcher | policy CPU per watcher | process CPU | heap per watcher | convergence p50 | p99 |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %s | %.2f | %.3f | %.3f | %.2f%% | %.2f%% | %.1f%% | %.1f MiB | %s | %s |\n", r.hosts, r.mode, r.writesPerSec,
			r.routingPasses, r.policyPasses, 100*r.routingCPU, 100*r.policyCPU, 100*r.processCPU, r.heapPerWatcher, ms(r.convP50), ms(r.convP99))
	}
	fmt.Fprintln(w)
	verdicts(w, rows)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// verdicts compares each size's figures with the smallest's and the old
// heartbeat's, and states the targets.
func verdicts(w io.Writer, rows []result) {
	base := map[mode]result{}
	for _, r := range rows {
		if b, ok := base[r.mode]; !ok || r.hosts < b.hosts {
			base[r.mode] = r
		}
	}
	for _, r := range rows {
		if r.mode != modeLease {
			continue
		}
		b, old := base[modeLease], result{}
		for _, o := range rows {
			if o.mode == modeRewrite && o.hosts == r.hosts {
				old = o
			}
		}
		grow := "no growth"
		if r.writesPerSec > b.writesPerSec+0.05 {
			grow = fmt.Sprintf("GROWS (%.2f -> %.2f)", b.writesPerSec, r.writesPerSec)
		}
		fmt.Fprintf(w, "- %d hosts: steady etcd writes %.2f/s against %.2f/s with the old heartbeat (%s against %d hosts: target nothing grows); convergence p99 %s (target < 100 ms: %s)\n",
			r.hosts, r.writesPerSec, old.writesPerSec, grow, b.hosts, ms(r.convP99), met(r.convP99 < 100*time.Millisecond))
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}
