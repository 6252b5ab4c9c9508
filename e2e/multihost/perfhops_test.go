//go:build e2e

package multihost

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hop is one stage of the forwarding path, recognised by the kernel
// functions its cycles are spent in (perf's software clock samples: this
// machine's VM has no hardware counters).
type hop struct {
	name string
	re   *regexp.Regexp
}

// hops are tried in order; the first match names a sample's stage.
var hops = []hop{
	{"idle", regexp.MustCompile(`^(default_idle|cpu_idle|do_idle|pv_native_safe_halt|native_safe_halt|acpi_idle|intel_idle|cpuidle_|arch_cpu_idle|poll_idle|mwait_idle)`)},
	{"nftables/iptables rules (ours and Docker's: iptables here is nft)", regexp.MustCompile(`^(nft_|nf_hook_slow|nf_tables_|__nft_|nf_nat_inet_fn|nf_nat_ipv4_|ipt_do_table|xt_)`)},
	{"conntrack", regexp.MustCompile(`^(nf_conntrack|__nf_conntrack|nf_ct_|ipv4_conntrack|hash_conntrack|nf_confirm|__nf_ct_|tcp_packet|nf_checksum)`)},
	{"VXLAN / IPIP encapsulation", regexp.MustCompile(`^(vxlan_|udp_tunnel|iptunnel_|ip_tunnel|ipip_|__udp4_lib_rcv|udp_gro|udp4_gro|udp_queue_rcv|udp_rcv|udp4_lib|skb_udp_tunnel|udp_gso|__skb_udp_tunnel|udp4_ufo|udp_sock)`)},
	{"GRO / GSO (aggregation, segmentation)", regexp.MustCompile(`^(dev_gro_receive|napi_gro|inet_gro|tcp_gro|tcp4_gro|skb_gro|gro_|__skb_gso|skb_segment|tcp_gso|inet_gso|tcp4_gso|skb_mac_gso|napi_complete|__napi_poll|net_rx_action|napi_)`)},
	{"veth (the container's and the uplink veths)", regexp.MustCompile(`^(veth_|__veth|netif_rx|__netif_receive|netif_receive|__netif_rx|enqueue_to_backlog|process_backlog|dev_hard_start_xmit|__dev_queue_xmit|dev_queue_xmit|validate_xmit|sch_direct_xmit|skb_scrub_packet|eth_type_trans|__dev_forward_skb|dev_forward_skb|br_)`)},
	{"routing decision and forwarding", regexp.MustCompile(`^(ip_forward|ip_route|fib_|ip_rcv|ip_sublist_rcv|ip_list_rcv|ip_output|ip_finish_output|__ip_finish_output|ip_local_|ip_queue_xmit|__ip_queue_xmit|neigh_|ip_neigh|dst_|ipv4_dst|rt_dst|l3mdev|ip_mc_|ip_protocol_deliver|ip_rcv_finish|inet_addr_type|__mkroute|rt_cache|ipv4_mtu|ip_skb_dst_mtu|__ip_local_out|ip_local_out)`)},
	{"checksums and copies", regexp.MustCompile(`^(csum_|do_csum|__skb_checksum|skb_checksum|copy_|_copy_|__copy|rep_movs|memcpy|__memcpy|memmove|skb_copy|__skb_datagram_iter|simple_copy_to_iter|copyin|copyout|clear_page|memset|__memset)`)},
	{"TCP in the endpoints (iperf3's own sockets)", regexp.MustCompile(`^(tcp_|__tcp_|inet_|sock_|sk_|__sk_|release_sock|lock_sock|skb_|__skb|kfree_skb|__kfree_skb|consume_skb|alloc_skb|__alloc_skb|kmalloc|__kmalloc|kmem_cache|kfree|page_frag|skb_release)`)},
}

// profileHops runs iperf3 once more over each calico path with perf
// sampling every CPU, and prints where the cycles went, per hop, as a
// markdown table. Enabled by CALICO_BENCH_PERF=1 (perf must be installed).
func profileHops(t *testing.T, pairs []*benchPair, secs int) string {
	if _, err := exec.LookPath("perf"); err != nil {
		t.Log("LOUD: CALICO_BENCH_PERF=1 but perf is not installed (apt-get install linux-perf): no per-hop profile")
		return ""
	}
	var rows []map[string]float64
	var names []string
	for _, p := range pairs {
		share, err := profilePair(t, p, secs)
		if err != nil {
			t.Errorf("profile %s: %v", p.name, err)
			continue
		}
		rows = append(rows, share)
		names = append(names, p.name)
	}
	return hopTable(names, rows)
}

// profilePair samples the whole machine while iperf3 runs over p, and
// returns each hop's share of the busy (non-idle) samples.
func profilePair(t *testing.T, p *benchPair, secs int) (map[string]float64, error) {
	data := filepath.Join(t.TempDir(), "perf.data")
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+60)*time.Second)
	defer cancel()
	rec := exec.CommandContext(ctx, "perf", "record", "-q", "-o", data, "-e", "cpu-clock", "-F", "2000", "-a", "--", "sleep", strconv.Itoa(secs))
	if err := rec.Start(); err != nil {
		return nil, err
	}
	if _, err := iperf(p.from.ns, p.to.ns, p.to.ip, secs+1); err != nil {
		_ = rec.Process.Kill()
		_ = rec.Wait()
		return nil, err
	}
	if err := rec.Wait(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	// Only the path's own work: iperf3 (its sockets, and the softirqs that
	// run on its way out), the softirq threads and the idle task. The
	// machine is shared: other processes' samples would swamp the hops.
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "sym", "-g", "none",
		"--percent-limit", "0.01", "--comms", pathComms()).Output()
	if err != nil {
		return nil, fmt.Errorf("perf report: %w", err)
	}
	share := classify(out)
	t.Logf("%s: per-hop share of busy samples: %v\ntop symbols:\n%s", p.name, share, topSymbols(out, 25))
	return share, nil
}

// pathComms are the tasks whose samples belong to the measured path.
func pathComms() string {
	comms := []string{"iperf3", "swapper"}
	for cpu := 0; cpu < numCPU(); cpu++ {
		comms = append(comms, fmt.Sprintf("ksoftirqd/%d", cpu))
	}
	return strings.Join(comms, ",")
}

// topSymbols is the report's first n symbol lines, each with its hop.
func topSymbols(report []byte, n int) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(report))
	for sc.Scan() && n > 0 {
		m := reportLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		fmt.Fprintf(&b, "  %6s%%  %-40s %s\n", m[1], m[3], hopOf(m[2], m[3]))
		n--
	}
	return b.String()
}

func hopOf(kind, sym string) string {
	if kind != "k" {
		return "user space (iperf3)"
	}
	for _, h := range hops {
		if h.re.MatchString(sym) {
			return h.name
		}
	}
	return "other kernel"
}

var reportLine = regexp.MustCompile(`^\s*([0-9.]+)%\s+\[([a-z.])\]\s+(\S+)`)

// classify sums perf report's per-symbol percentages into hops; user-space
// samples count as "user space (iperf3)", unknown kernel symbols as "other
// kernel". Shares are of the busy samples (idle left out).
func classify(report []byte) map[string]float64 {
	sum := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(report))
	for sc.Scan() {
		m := reportLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pct, _ := strconv.ParseFloat(m[1], 64)
		sum[hopOf(m[2], m[3])] += pct
	}
	busy := 0.0
	for k, v := range sum {
		if k != "idle" {
			busy += v
		}
	}
	out := map[string]float64{}
	for k, v := range sum {
		if k != "idle" && busy > 0 {
			out[k] = 100 * v / busy
		}
	}
	out["(idle, % of all samples)"] = sum["idle"]
	return out
}

// hopTable renders one column per path, one row per hop.
func hopTable(names []string, rows []map[string]float64) string {
	if len(rows) == 0 {
		return ""
	}
	keys := map[string]bool{}
	for _, r := range rows {
		for k := range r {
			keys[k] = true
		}
	}
	var order []string
	for k := range keys {
		order = append(order, k)
	}
	sort.Slice(order, func(i, j int) bool { return rows[0][order[i]] > rows[0][order[j]] })
	var b strings.Builder
	fmt.Fprintf(&b, "| hop (%% of busy CPU samples) | %s |\n|---|%s\n", strings.Join(names, " | "), strings.Repeat("---:|", len(names)))
	for _, k := range order {
		fmt.Fprintf(&b, "| %s |", k)
		for _, r := range rows {
			fmt.Fprintf(&b, " %.1f |", r[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// perfEnabled says whether TestBenchmarks also profiles the hops.
func perfEnabled() bool { return os.Getenv("CALICO_BENCH_PERF") == "1" }

// classify's sums, from a report of perf's own format.
func TestClassifyHops(t *testing.T) {
	report := []byte(`# Samples: 4K of event 'cpu-clock'
#
    50.00%  [k] default_idle
    10.00%  [k] nft_do_chain
     5.00%  [k] veth_xmit
    10.00%  [k] vxlan_xmit_one
     5.00%  [k] fib_table_lookup
    10.00%  [k] copy_user_enhanced_fast_string
     5.00%  [.] iperf_send
     5.00%  [k] some_unknown_function
`)
	got := classify(report)
	want := map[string]float64{
		"(idle, % of all samples)": 50,
		"nftables/iptables rules (ours and Docker's: iptables here is nft)": 20,
		"veth (the container's and the uplink veths)":                       10,
		"VXLAN / IPIP encapsulation":                                        20,
		"routing decision and forwarding":                                   10,
		"checksums and copies":                                              20,
		"user space (iperf3)":                                               10,
		"other kernel":                                                      10,
	}
	for k, v := range want {
		if d := got[k] - v; d > 0.01 || d < -0.01 {
			t.Errorf("%s: %.2f, want %.2f (all: %v)", k, got[k], v, got)
		}
	}
}
