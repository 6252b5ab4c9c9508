//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rssKiB is a process's resident memory.
func rssKiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	t.Fatal("no VmRSS")
	return 0
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

// TestThousandContainersBench starts 1,000 containers on one host (one
// calico network, sequentially) and compares the docker run latency of the
// last 100 with the first 100 (target <= 1.2x), and reports the daemon's
// memory per endpoint and the repair (reconcile) and policy pass times at
// 1,000 endpoints, from the daemon's own metrics. CALICO_BENCH=1 runs it;
// CALICO_BENCH_CONTAINERS changes the count.
func TestThousandContainersBench(t *testing.T) {
	if os.Getenv("CALICO_BENCH") != "1" {
		t.Skip("benchmark: set CALICO_BENCH=1 to run it")
	}
	n := 1000
	if s := os.Getenv("CALICO_BENCH_CONTAINERS"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v >= 200 {
			n = v
		}
	}
	net := newNetwork(t)
	runContainer(t, net) // warm up: image, first block
	rss0 := rssKiB(t, dmn.pid())
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		runContainer(t, net)
		lat = append(lat, time.Since(start))
		if (i+1)%100 == 0 {
			t.Logf("%d containers, last docker run %s", i+1, lat[i].Round(time.Millisecond))
		}
	}
	rss1 := rssKiB(t, dmn.pid())
	before := scrapeMetrics(t)
	time.Sleep(35 * time.Second) // at least one repair pass (every 30 s) and a policy resync
	runContainer(t, net)         // one policy change (a new endpoint) at n endpoints
	time.Sleep(2 * time.Second)
	after := scrapeMetrics(t)
	first, last := summarize(lat[:100]), summarize(lat[len(lat)-100:])
	r := ratio(last.median, first.median)
	repair, nr := passTime(before, after, "repair")
	pol, np := passTime(before, after, "policy")
	var b strings.Builder
	fmt.Fprintf(&b, "%d containers on one calico network, one host, `docker run -d` one after another (Docker %s, %d CPUs, %s)\n\n",
		n, docker(t, "version", "--format", "{{.Server.Version}}"), runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "| measurement | value |\n|---|---:|\n")
	fmt.Fprintf(&b, "| docker run, first 100: median / p90 | %s / %s |\n", ms(first.median), ms(first.p90))
	fmt.Fprintf(&b, "| docker run, last 100: median / p90 | %s / %s |\n", ms(last.median), ms(last.p90))
	fmt.Fprintf(&b, "| last 100 / first 100 (median) | **%.2f** (target <= 1.2: %s) |\n", r, map[bool]string{true: "met", false: "NOT MET"}[r <= 1.2])
	fmt.Fprintf(&b, "| daemon RSS before / after | %.1f MiB / %.1f MiB |\n", rss0/1024, rss1/1024)
	fmt.Fprintf(&b, "| daemon memory per endpoint | %.1f KiB |\n", (rss1-rss0)/float64(n))
	fmt.Fprintf(&b, "| repair (reconcile) pass at %d endpoints, mean of %d | %s |\n", n, nr, ms(repair))
	fmt.Fprintf(&b, "| policy pass at %d endpoints, mean of %d | %s |\n", n, np, ms(pol))
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
