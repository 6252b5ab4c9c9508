// Command scale-bench measures the cluster at scale (issue 14): the node
// records, blocks and endpoints of many simulated hosts in a real etcd (an
// etcd process of its own), watched by the real route-sync and policy
// agents of a few real hosts, and prints a markdown table:
//
//   - etcd writes per second while nothing changes, with node liveness on
//     the claims' leases (today) against the old heartbeat that rewrote
//     every nodes/<name> every 5 s (the baseline, measured in the same run);
//   - the agents' passes and this process's CPU in that window;
//   - route convergence p50/p99: from a block record written to the route
//     sync of every watching host handing its route to the data plane;
//   - the watchers' heap per watcher.
//
// The agents' kernel side is a recorder (the kernel apply time is measured
// by the multi-host benchmark in e2e/multihost): what is measured here is
// what grows with the number of hosts, the datastore and the agents.
//
//	go run ./cmd/scale-bench -hosts 50,500 -steady 20s -samples 50
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// config is one run's settings.
type config struct {
	hosts    []int
	watchers int
	steady   time.Duration
	samples  int
	etcd     string
}

func main() {
	hosts := flag.String("hosts", "50,500", "simulated host counts, comma-separated (the first is the baseline size)")
	watchers := flag.Int("watchers", 3, "real hosts whose agents watch the simulated ones")
	steady := flag.Duration("steady", 20*time.Second, "how long the steady state is watched")
	samples := flag.Int("samples", 50, "blocks claimed to measure route convergence")
	etcd := flag.String("etcd", "etcd", "the etcd server binary")
	flag.Parse()
	cfg := config{watchers: *watchers, steady: *steady, samples: *samples, etcd: *etcd}
	for _, h := range strings.Split(*hosts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(h))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "scale-bench: -hosts %q: give positive numbers\n", *hosts)
			os.Exit(2)
		}
		cfg.hosts = append(cfg.hosts, n)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "scale-bench:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	var rows []result
	for _, n := range cfg.hosts {
		for _, m := range []mode{modeRewrite, modeLease} {
			fmt.Fprintf(os.Stderr, "scale-bench: %d hosts, %s ...\n", n, m)
			r, err := scenario(cfg, n, m)
			if err != nil {
				return fmt.Errorf("%d hosts, %s: %w", n, m, err)
			}
			fmt.Fprintf(os.Stderr, "scale-bench: %+v\n", r)
			rows = append(rows, r)
		}
	}
	printTable(os.Stdout, cfg, rows)
	return nil
}
