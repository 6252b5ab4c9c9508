//go:build e2e

package multihost

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// redirectAB measures every path with the eBPF redirect path off (every
// daemon restarted with CALICO_BPF_REDIRECT=off: the kernel's forwarding
// path with the nftables policy, as before it) and on (the shipped
// default), in alternating rounds (off, on; three times), each subject
// beside its baseline as measureThroughput does. pairs get the "on" runs;
// the "off" runs are returned. The daemons are left on.
func redirectAB(t *testing.T, tb *Testbed, pairs []*benchPair, secs int) []*benchPair {
	off := make([]*benchPair, len(pairs))
	for i, p := range pairs {
		off[i] = &benchPair{name: p.name, from: p.from, to: p.to}
	}
	for round := 0; round < 3; round++ {
		for _, c := range []struct {
			env string
			ps  []*benchPair
		}{{"off", off}, {"auto", pairs}} {
			setRedirect(t, tb, c.env)
			for g := 0; g < len(c.ps); g += 2 {
				for _, p := range c.ps[g : g+2] {
					bps, err := iperf(p.from.ns, p.to.ns, p.to.ip, secs)
					if err != nil {
						t.Fatalf("%s (redirect %s): %v", p.name, c.env, err)
					}
					p.runs = append(p.runs, bps/1e9)
				}
			}
		}
	}
	for _, p := range append(append([]*benchPair(nil), pairs...), off...) {
		p.gbps = median(p.runs)
	}
	// What the programs did in the last "on" round, from each host's node
	// status (VXLAN encapsulated and taken apart by them, not the device).
	for _, h := range tb.Hosts {
		st, err := h.nodeStatus()
		if err != nil {
			t.Errorf("%s: node status: %v", h.Name, err)
			continue
		}
		if i := strings.Index(st, "Data path:"); i >= 0 {
			t.Logf("%s: %s", h.Name, strings.TrimSpace(st[i:min(len(st), i+400)]))
		}
	}
	return off
}

// setRedirect restarts every daemon with CALICO_BPF_REDIRECT=env unless it
// already runs so, and checks from its log that the path is as asked.
func setRedirect(t *testing.T, tb *Testbed, env string) {
	want := "eBPF redirect path on"
	if env == "off" {
		want = "eBPF redirect path off"
	}
	for _, h := range tb.Hosts {
		p := h.Daemon()
		if strings.Contains(lastRun(p.Log()), want) {
			continue
		}
		if err := h.StopDaemon(syscall.SIGTERM); err != nil {
			t.Fatalf("%s: stop daemon: %v", h.Name, err)
		}
		p.env = append(p.env, "CALICO_BPF_REDIRECT="+env) // the last one counts
		if err := h.StartDaemon(); err != nil {
			t.Fatalf("%s: restart daemon with CALICO_BPF_REDIRECT=%s: %v", h.Name, env, err)
		}
		if !strings.Contains(lastRun(p.Log()), want) {
			t.Fatalf("%s: daemon started with CALICO_BPF_REDIRECT=%s does not say %q; log ends:\n%s", h.Name, env, want, tail(p.LogPath, 20))
		}
	}
	time.Sleep(2 * time.Second) // let the restarted daemons' first passes settle
}

// redirectTable renders the A/B runs: each path on and off against its
// baseline measured beside it, and on against off.
func redirectTable(on, off []*benchPair, secs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### eBPF redirect path on and off (%s, %d CPUs, kernel %s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), numCPU(), kernel())
	fmt.Fprintf(&b, "iperf3 TCP, one stream, %d s per run; three rounds, each measuring every path with the path off (daemons restarted with CALICO_BPF_REDIRECT=off) and then on; medians.\n\n", secs)
	b.WriteString("| path | off: Gbit/s | off vs baseline | on: Gbit/s | on vs baseline | on vs off | target (issue 15) |\n|---|---:|---:|---:|---:|---:|---|\n")
	targets := map[int]struct {
		min  float64
		what string
	}{0: {1.00, ">= 1.00x bridge"}, 2: {0.95, ">= 0.95x hosts"}, 4: {0.85, ">= 0.85x hosts"}}
	for i := 0; i < len(on); i += 2 {
		s, sb, o, ob := on[i], on[i+1], off[i], off[i+1]
		ro, rf := s.gbps/sb.gbps, o.gbps/ob.gbps
		tg, v := targets[i], "(VXLAN's own cost: no target)"
		if tg.what != "" {
			v = verdict(ro >= tg.min, tg.what)
		}
		fmt.Fprintf(&b, "| %s | %.2f (%s) | %.2fx | %.2f (%s) | **%.2fx** | %.2fx | %s |\n", s.name, o.gbps, fmtRuns(o.runs), rf, s.gbps, fmtRuns(s.runs), ro, s.gbps/o.gbps, v)
		fmt.Fprintf(&b, "| %s | %.2f (%s) | | %.2f (%s) | | | |\n", sb.name, ob.gbps, fmtRuns(ob.runs), sb.gbps, fmtRuns(sb.runs))
	}
	return b.String()
}

// redirectWanted: CALICO_BENCH_BPF=0 measures only the daemons' default.
func redirectWanted() bool { return os.Getenv("CALICO_BENCH_BPF") != "0" }
