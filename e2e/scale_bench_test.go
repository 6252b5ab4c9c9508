//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
)

// rssKiB is a process's resident memory.
func rssKiB(t *testing.T, pid int) float64 { return memKiB(t, pid)["VmRSS"] }

// memKiB is a process's resident memory from /proc/PID/status, in KiB:
// VmRSS, and its parts RssAnon (heap, stacks) and RssFile (mapped files:
// the binary, the embedded etcd's database).
func memKiB(t *testing.T, pid int) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "VmRSS:" || strings.HasPrefix(f[0], "Rss")) {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[strings.TrimSuffix(f[0], ":")] = v
		}
	}
	if _, ok := out["VmRSS"]; !ok {
		t.Fatal("no VmRSS")
	}
	return out
}

// cpuSeconds is a process's user+system CPU time (0 when it cannot be read).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 (state) on
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// dockerdPID is the engine's process, from its pid file (0 if unknown).
func dockerdPID() int {
	b, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// passTime is an agent's mean pass time over the passes between two
// scrapes of the daemon's metrics.
func passTime(before, after map[string]float64, agent string) (time.Duration, int) {
	sum := `calico_libnetwork_dataplane_apply_duration_seconds_sum{agent="` + agent + `"}`
	cnt := `calico_libnetwork_dataplane_apply_duration_seconds_count{agent="` + agent + `"}`
	n := after[cnt] - before[cnt]
	if n <= 0 {
		return 0, 0
	}
	return time.Duration((after[sum] - before[sum]) / n * float64(time.Second)), int(n)
}

// callTime is the daemon's mean time answering one plugin call between two
// scrapes (from its call histogram).
func callTime(before, after map[string]float64, socket, call string) time.Duration {
	l := `{call="` + call + `",socket="` + socket + `"}`
	n := after["calico_libnetwork_docker_call_duration_seconds_count"+l] - before["calico_libnetwork_docker_call_duration_seconds_count"+l]
	if n <= 0 {
		return 0
	}
	s := after["calico_libnetwork_docker_call_duration_seconds_sum"+l] - before["calico_libnetwork_docker_call_duration_seconds_sum"+l]
	return time.Duration(s / n * float64(time.Second))
}

// window is what one block of docker runs cost, on either network.
type window struct {
	lat           []time.Duration
	dockerdCPU    float64 // engine CPU seconds per run
	daemonCPU     float64 // our daemon's CPU seconds per run
	join, create  time.Duration
	request       time.Duration
	passes        map[string]float64 // agent -> passes per run
	passTime      map[string]float64 // agent -> pass seconds per run
	datastoreOps  float64            // etcd requests per run
	before, after map[string]float64
}

var benchAgents = []string{"labels", "policy", "multinet", "routing", "repair", "gc", "netsync", "hostprotect", "bgp"}

// benchRun is the containers and networks one bench made; teardown
// removes them all at once.
type benchRun struct {
	containers []string
	networks   []string
}

// start starts a sleeping container on network (docker run -d), with no
// cleanup of its own.
func (r *benchRun) start(t *testing.T, network string) {
	t.Helper()
	name := uniqueName(t, "c")
	r.containers = append(r.containers, name)
	if _, errOut, err := dockerRun("run", "-d", "--label", labelArg(), "--name", name, "--net", network, Image, "sleep", "3600"); err != nil {
		t.Fatalf("docker run on %s: %v: %s", network, err, errOut)
	}
}

// engineDiscarded is set once a bench has stopped the sandbox's engine for
// good: later tests of the run are skipped (begin).
var engineDiscarded atomic.Bool

// teardown removes what the bench made. In the suite's sandbox it stops
// the engine at once instead (discardEngine): the sandbox's end takes the
// containers, their namespaces, veths and mounts, and the engine's data
// root with it, and the suite's teardown the daemon's etcd; removing 2N
// containers one at a time through the engine took about an hour at
// N = 1,000 (many at once left Docker 20.10 hung). Elsewhere (the
// machine's own engine) they are removed one at a time.
func (r *benchRun) teardown(t *testing.T) {
	if e2eutil.InSandbox() != "" {
		start := time.Now()
		err := discardEngine()
		if err == nil {
			t.Logf("teardown: the sandbox's engine stopped in %s; its %d containers and %d networks go with the sandbox",
				time.Since(start).Round(time.Millisecond), len(r.containers), len(r.networks))
			return
		}
		t.Logf("teardown: cannot stop the sandbox's engine (%v): removing the containers one at a time", err)
	}
	for _, name := range r.containers {
		removeContainer(t, name)
	}
	for _, name := range r.networks {
		removeNetwork(t, name)
	}
}

// discardEngine kills the sandbox's dockerd (SIGKILL: a graceful stop
// would take every container's network down through the plugin, all at
// once) and waits until it is gone. The containers keep running until the
// sandbox ends (plugin-sandbox.sh down kills its PID namespace and removes
// its directory, the data root with it); no later test can use the engine.
func discardEngine() error {
	pid := dockerdPID()
	if pid == 0 {
		return errors.New("no pid file for the engine")
	}
	engineDiscarded.Store(true)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill dockerd (pid %d): %w", pid, err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return nil
		}
	}
	return fmt.Errorf("dockerd (pid %d) still there 30 s after SIGKILL", pid)
}

// runBlock runs k containers on net and measures them; calico blocks also
// read the daemon's metrics around the block.
func runBlock(t *testing.T, r *benchRun, net string, k int, calico bool) window {
	w := window{passes: map[string]float64{}, passTime: map[string]float64{}}
	if calico {
		w.before = scrapeMetrics(t)
	}
	dpid := dockerdPID()
	e0, d0 := cpuSeconds(dpid), cpuSeconds(dmn.pid())
	for i := 0; i < k; i++ {
		start := time.Now()
		r.start(t, net)
		w.lat = append(w.lat, time.Since(start))
	}
	w.dockerdCPU = (cpuSeconds(dpid) - e0) / float64(k)
	w.daemonCPU = (cpuSeconds(dmn.pid()) - d0) / float64(k)
	if !calico {
		return w
	}
	w.after = scrapeMetrics(t)
	b, a := w.before, w.after
	w.join = callTime(b, a, "network", "NetworkDriver.Join")
	w.create = callTime(b, a, "network", "NetworkDriver.CreateEndpoint")
	w.request = callTime(b, a, "ipam", "IpamDriver.RequestAddress")
	for _, ag := range benchAgents {
		cnt := `calico_libnetwork_dataplane_apply_duration_seconds_count{agent="` + ag + `"}`
		sum := `calico_libnetwork_dataplane_apply_duration_seconds_sum{agent="` + ag + `"}`
		w.passes[ag] = (a[cnt] - b[cnt]) / float64(k)
		w.passTime[ag] = (a[sum] - b[sum]) / float64(k)
	}
	w.datastoreOps = (a["calico_libnetwork_datastore_operation_duration_seconds_count"] - b["calico_libnetwork_datastore_operation_duration_seconds_count"]) / float64(k)
	return w
}

// TestThousandContainersBench starts 1,000 containers on one calico
// network and 1,000 on a bridge network of the same engine, interleaved in
// blocks of 100 (calico, bridge, calico, ...), and compares the docker run
// latency of the last 100 with the first 100 of each (target for calico:
// <= 1.2x); the bridge series is the engine's own growth with the number of
// containers. It splits the calico series per call (Join, CreateEndpoint,
// RequestAddress from the daemon's call histogram), per CPU (engine and
// daemon) and per agent pass, and reports the daemon's memory per endpoint
// and the repair and policy pass times at 1,000 endpoints. CALICO_BENCH=1
// runs it; CALICO_BENCH_CONTAINERS changes the count per network.
func TestThousandContainersBench(t *testing.T) {
	if os.Getenv("CALICO_BENCH") != "1" {
		t.Skip("benchmark: set CALICO_BENCH=1 to run it")
	}
	n := 1000
	if s := os.Getenv("CALICO_BENCH_CONTAINERS"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v >= 200 {
			n = v - v%100
		}
	}
	const block = 100
	r := &benchRun{}
	t.Cleanup(func() { r.teardown(t) })
	net, bridge := uniqueName(t, "net"), uniqueName(t, "bridge")
	docker(t, append(append([]string{"network", "create"}, calicoNetArgs()...), net)...)
	r.networks = append(r.networks, net)
	docker(t, "network", "create", "--label", labelArg(), bridge)
	r.networks = append(r.networks, bridge)
	r.start(t, net) // warm up: image, first block
	r.start(t, bridge)
	mem0, heap0 := memKiB(t, dmn.pid()), scrapeMetrics(t)
	var cal, brg []window
	for i := 0; i < n/block; i++ {
		cal = append(cal, runBlock(t, r, net, block, true))
		brg = append(brg, runBlock(t, r, bridge, block, false))
		c, b := cal[i], brg[i]
		t.Logf("%d+%d containers: calico median %s (join %s, create %s, request %s; engine %.0f ms CPU/run, daemon %.0f ms CPU/run, %.1f etcd ops/run, passes/run %v), bridge median %s (engine %.0f ms CPU/run)",
			(i+1)*block, (i+1)*block, ms(summarize(c.lat).median), ms(c.join), ms(c.create), ms(c.request), c.dockerdCPU*1000, c.daemonCPU*1000,
			c.datastoreOps, c.passes, ms(summarize(b.lat).median), b.dockerdCPU*1000)
	}
	mem1 := memKiB(t, dmn.pid())
	before := scrapeMetrics(t)
	time.Sleep(35 * time.Second) // at least one repair pass (every 30 s) and a policy resync
	r.start(t, net)              // one policy change (a new endpoint) at n endpoints
	time.Sleep(2 * time.Second)
	after := scrapeMetrics(t)
	report(t, n, cal, brg, memUse{mem0, mem1, heap0, before}, before, after)
}

// memUse is the daemon's memory before and after the runs: /proc's
// resident sizes and the Go runtime's metrics.
type memUse struct{ proc0, proc1, go0, go1 map[string]float64 }

func report(t *testing.T, n int, cal, brg []window, mem memUse, before, after map[string]float64) {
	cf, cl := cal[0], cal[len(cal)-1]
	bf, bl := brg[0], brg[len(brg)-1]
	csf, csl := summarize(cf.lat), summarize(cl.lat)
	bsf, bsl := summarize(bf.lat), summarize(bl.lat)
	rc, rb := ratio(csl.median, csf.median), ratio(bsl.median, bsf.median)
	repair, nr := passTime(before, after, "repair")
	pol, np := passTime(before, after, "policy")
	var b strings.Builder
	fmt.Fprintf(&b, "%d containers on one calico network and %d on one bridge network, one host, `docker run -d` one after another in alternating blocks of 100 (Docker %s, %d CPUs, %s)\n\n",
		n, n, docker(t, "version", "--format", "{{.Server.Version}}"), runtime.NumCPU(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "| measurement | calico first 100 | calico last 100 | ratio | bridge first 100 | bridge last 100 | ratio |\n|---|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| docker run median | %s | %s | **%.2f** | %s | %s | **%.2f** |\n", ms(csf.median), ms(csl.median), rc, ms(bsf.median), ms(bsl.median), rb)
	fmt.Fprintf(&b, "| docker run p90 | %s | %s | %.2f | %s | %s | %.2f |\n", ms(csf.p90), ms(csl.p90), ratio(csl.p90, csf.p90), ms(bsf.p90), ms(bsl.p90), ratio(bsl.p90, bsf.p90))
	fmt.Fprintf(&b, "| engine CPU per run | %.0f ms | %.0f ms | %.2f | %.0f ms | %.0f ms | %.2f |\n", cf.dockerdCPU*1000, cl.dockerdCPU*1000, cl.dockerdCPU/cf.dockerdCPU,
		bf.dockerdCPU*1000, bl.dockerdCPU*1000, bl.dockerdCPU/bf.dockerdCPU)
	fmt.Fprintf(&b, "| our daemon CPU per run | %.1f ms | %.1f ms | %.2f | | | |\n", cf.daemonCPU*1000, cl.daemonCPU*1000, cl.daemonCPU/cf.daemonCPU)
	for _, c := range []struct {
		name string
		f, l time.Duration
	}{{"Join (daemon, mean per call)", cf.join, cl.join}, {"CreateEndpoint (daemon, mean per call)", cf.create, cl.create}, {"RequestAddress (daemon, mean per call)", cf.request, cl.request}} {
		fmt.Fprintf(&b, "| %s | %.1f ms | %.1f ms | %.2f | | | |\n", c.name, float64(c.f)/1e6, float64(c.l)/1e6, ratio(c.l, c.f))
	}
	fmt.Fprintf(&b, "| etcd requests per run | %.1f | %.1f | | | | |\n", cf.datastoreOps, cl.datastoreOps)
	for _, ag := range benchAgents {
		if cf.passes[ag] == 0 && cl.passes[ag] == 0 {
			continue
		}
		fmt.Fprintf(&b, "| %s: passes / pass time per run | %.2f / %.1f ms | %.2f / %.1f ms | | | | |\n", ag, cf.passes[ag], cf.passTime[ag]*1000, cl.passes[ag], cl.passTime[ag]*1000)
	}
	fmt.Fprintf(&b, "\ntarget for calico last 100 / first 100 <= 1.2: %s\n\n", map[bool]string{true: "met", false: "NOT MET"}[rc <= 1.2])
	fmt.Fprintf(&b, "| at %d endpoints | value |\n|---|---:|\n", n)
	per := func(a, b float64) float64 { return (b - a) / float64(n) }
	fmt.Fprintf(&b, "| daemon RSS before / after | %.1f MiB / %.1f MiB |\n", mem.proc0["VmRSS"]/1024, mem.proc1["VmRSS"]/1024)
	fmt.Fprintf(&b, "| daemon memory per endpoint (RSS) | %.1f KiB |\n", per(mem.proc0["VmRSS"], mem.proc1["VmRSS"]))
	fmt.Fprintf(&b, "| of it anonymous (heap, stacks) / mapped files (etcd's database) | %.1f KiB / %.1f KiB |\n",
		per(mem.proc0["RssAnon"], mem.proc1["RssAnon"]), per(mem.proc0["RssFile"], mem.proc1["RssFile"]))
	fmt.Fprintf(&b, "| Go heap in use / allocated, per endpoint | %.1f KiB / %.1f KiB |\n",
		per(mem.go0["go_memstats_heap_inuse_bytes"], mem.go1["go_memstats_heap_inuse_bytes"])/1024,
		per(mem.go0["go_memstats_heap_alloc_bytes"], mem.go1["go_memstats_heap_alloc_bytes"])/1024)
	fmt.Fprintf(&b, "| repair (reconcile) pass, mean of %d | %s |\n", nr, ms(repair))
	fmt.Fprintf(&b, "| policy pass, mean of %d | %s |\n", np, ms(pol))
	fmt.Fprintf(&b, "\nMade by: CALICO_BENCH=1 go test -tags e2e -count=1 -v -timeout 60m -run TestThousandContainersBench ./e2e/\n")
	fmt.Printf("\n%s\n", b.String())
	if out := os.Getenv("CALICO_BENCH_OUT"); out != "" {
		f, err := os.OpenFile(out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.WriteString(b.String())
			f.Close()
		}
	}
}
