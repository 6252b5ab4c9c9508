package ctl

import (
	"context"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

func (a *app) ipamCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ipam",
		Short: "Show, check and repair IP address management",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErrorf(cmd, "give an ipam command: show, check or release")
		},
	}
	cmd.AddCommand(a.ipamShowCommand(), a.ipamCheckCommand(), a.ipamReleaseCommand())
	return cmd
}

func (a *app) ipamShowCommand() *cobra.Command {
	var showBlocks bool
	var ipArg string
	cmd := &cobra.Command{
		Use:   "show [--show-blocks] [--ip ADDR]",
		Short: "Show address usage per pool and block, or who holds an address",
		Args:  cobra.NoArgs,
		Example: `  calicoctl ipam show
  calicoctl ipam show --show-blocks
  calicoctl ipam show --ip 192.168.0.5`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ip netip.Addr
			if ipArg != "" {
				var err error
				if ip, err = parseIPArg(ipArg); err != nil {
					return usageErrorf(cmd, "%v", err)
				}
			}
			s, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			snap, err := ipam.LoadSnapshot(cmd.Context(), s)
			if err != nil {
				return err
			}
			if ip.IsValid() {
				printIPInfo(a.env.Stdout, snap.Lookup(ip))
				return nil
			}
			printUsage(a.env.Stdout, snap, showBlocks)
			return nil
		},
	}
	cmd.Flags().BoolVar(&showBlocks, "show-blocks", false, "show each block, its host and its usage")
	cmd.Flags().StringVar(&ipArg, "ip", "", "show who holds this address")
	return cmd
}

func parseIPArg(s string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
		return ip.Unmap(), nil
	}
	if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil && p.IsSingleIP() {
		return p.Addr(), nil
	}
	return netip.Addr{}, fmt.Errorf("--ip %q is not an IP address (e.g. 192.168.0.5 or fd00::5)", s)
}

// percentOf formats n and its share of total as "5 (8%)".
func percentOf(n, total *big.Int) string {
	pct := 0.0
	if total.Sign() > 0 {
		f, _ := new(big.Float).Quo(new(big.Float).SetInt(n), new(big.Float).SetInt(total)).Float64()
		pct = 100 * f
	}
	return fmt.Sprintf("%s (%.0f%%)", n, pct)
}

func usageCells(size *big.Int, inUse int) []string {
	used := big.NewInt(int64(inUse))
	free := new(big.Int).Sub(size, used)
	return []string{size.String(), percentOf(used, size), percentOf(free, size)}
}

func printUsage(w io.Writer, snap *ipam.Snapshot, showBlocks bool) {
	pools, orphans := snap.Usage()
	header := []string{"GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"}
	if showBlocks {
		header = []string{"GROUPING", "CIDR", "HOST", "IPS TOTAL", "IPS IN USE", "IPS FREE"}
	}
	var rows [][]string
	for _, p := range pools {
		row := []string{"IP Pool", p.Pool.CIDR}
		if showBlocks {
			row = append(row, "")
		}
		rows = append(rows, append(row, usageCells(p.Size, p.InUse)...))
		if showBlocks {
			for _, b := range p.Blocks {
				rows = append(rows, append([]string{"Block", b.CIDR.String(), b.Host}, usageCells(big.NewInt(int64(b.Size)), b.InUse)...))
			}
		}
	}
	if showBlocks {
		for _, b := range orphans {
			rows = append(rows, append([]string{"Block (no pool)", b.CIDR.String(), b.Host}, usageCells(big.NewInt(int64(b.Size)), b.InUse)...))
		}
	}
	writeBox(w, header, rows)
	if !showBlocks && len(orphans) > 0 {
		n := 0
		for _, b := range orphans {
			n += b.InUse
		}
		fmt.Fprintf(w, "%d blocks with %d addresses in use lie in no pool (their pool was deleted): see calicoctl ipam show --show-blocks\n", len(orphans), n)
	}
}

func printIPInfo(w io.Writer, info ipam.IPInfo) {
	if info.Handle == "" {
		switch {
		case info.Block != nil:
			fmt.Fprintf(w, "IP %s is not assigned (block %s, host %s, pool %s)\n", info.IP, info.Block.CIDR, orNone(info.Block.Host), orNone(info.Block.Pool))
		case info.Pool != nil:
			fmt.Fprintf(w, "IP %s is not assigned (pool %s, no block carved for it yet)\n", info.IP, info.Pool.Name)
		default:
			fmt.Fprintf(w, "IP %s is not assigned: it is in no IP pool\n", info.IP)
		}
		if len(info.Endpoints) > 0 {
			e := info.Endpoints[0]
			fmt.Fprintf(w, "Warning: endpoint %s on host %s records this address although IPAM does not hold it (see calicoctl ipam check)\n", e.ID, e.Host)
		}
		return
	}
	fmt.Fprintf(w, "IP %s is in use\n", info.IP)
	fmt.Fprintf(w, "  Handle:    %s\n", info.Handle)
	if len(info.Endpoints) == 0 {
		fmt.Fprintf(w, "  Endpoint:  none (the address may be leaked, or its container is still starting: see calicoctl ipam check)\n")
		fmt.Fprintf(w, "  Host:      %s (the block's host)\n", orNone(info.Block.Host))
	}
	for _, e := range info.Endpoints {
		fmt.Fprintf(w, "  Endpoint:  %s\n", e.ID)
		fmt.Fprintf(w, "  Network:   %s\n", e.NetworkID)
		if e.HostIface != "" {
			fmt.Fprintf(w, "  Interface: %s\n", e.HostIface)
		}
		if e.MAC != "" {
			fmt.Fprintf(w, "  MAC:       %s\n", e.MAC)
		}
		fmt.Fprintf(w, "  Host:      %s\n", e.Host)
	}
	pool := "none (deleted)"
	if info.Pool != nil {
		pool = fmt.Sprintf("%s (%s)", info.Pool.Name, info.Pool.CIDR)
	}
	fmt.Fprintf(w, "  Block:     %s (host %s)\n", info.Block.CIDR, orNone(info.Block.Host))
	fmt.Fprintf(w, "  Pool:      %s\n", pool)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (a *app) ipamCheckCommand() *cobra.Command {
	var fix bool
	var grace, nodeTimeout time.Duration
	var pluginDir string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Look for leaked addresses and records; --fix releases what the garbage collector would",
		Long: `Cross-check IPAM against the endpoints and nodes, with the daemons' own
garbage rules: addresses given out that no endpoint took, addresses of deleted
endpoints that Docker never released, addresses and endpoints of nodes that are
gone (deleted, or not seen for --node-timeout), stale handle records; and, for
information, endpoints whose address is not allocated, blocks in no pool and
records that disagree with the blocks. Every daemon collects its own garbage
once it is older than the grace period (--ipam-gc-grace); --fix releases now
what is due, changing only records that are still as they were read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			snap, err := ipam.LoadSnapshot(cmd.Context(), s)
			if err != nil {
				return err
			}
			opt := ipam.CollectOptions{Now: a.env.Now(), Grace: grace, NodeGoneAfter: nodeTimeout}
			r := snap.Check(opt)
			printCheck(a.env.Stdout, r, opt.Now)
			// What only this host's daemon knows: endpoints its Docker
			// engine no longer lists, which its collector will remove.
			var st api.DaemonStatus
			if err := pluginCall(cmd.Context(), filepath.Join(pluginDir, api.NetworkSocket), "Calico.Status", &st); err == nil && !st.GC.At.IsZero() {
				fmt.Fprintln(a.env.Stdout)
				fmt.Fprintf(a.env.Stdout, "This host's daemon (%s):\n", st.Node)
				a.printGC(a.env.Stdout, st.GC)
			}
			if fix {
				return a.fixGarbage(cmd.Context(), s, r.Garbage, opt.Now)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&fix, "fix", false, "release the garbage that is due, now")
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", a.defaultPluginDir(), "where this host's daemon serves its Docker plugin sockets (env CALICO_PLUGIN_DIR)")
	cmd.Flags().DurationVar(&grace, "grace", 10*time.Minute, "how old garbage must be to be due (the daemons' --ipam-gc-grace)")
	cmd.Flags().DurationVar(&nodeTimeout, "node-timeout", 24*time.Hour, "a node whose daemon has not been seen for this long is gone; 0: only deleted nodes (the daemons' --ipam-gc-node-timeout)")
	return cmd
}

func (a *app) fixGarbage(ctx context.Context, s *datastore.Store, garbage []ipam.Finding, now time.Time) error {
	fixed, skipped := 0, 0
	for _, f := range garbage {
		if f.Due.After(now) {
			continue
		}
		ok, err := ipam.Apply(ctx, s, f)
		if err != nil {
			return fmt.Errorf("releasing %s: %w", f, err)
		}
		if ok {
			fixed++
			fmt.Fprintf(a.env.Stdout, "Released %s\n", f)
		} else {
			skipped++
		}
	}
	fmt.Fprintf(a.env.Stdout, "Fixed %s", plural(fixed, "problem"))
	if skipped > 0 {
		fmt.Fprintf(a.env.Stdout, " (%d changed since they were read and were left alone)", skipped)
	}
	fmt.Fprintln(a.env.Stdout, ".")
	return nil
}

func printCheck(w io.Writer, r ipam.CheckReport, now time.Time) {
	fmt.Fprintln(w, "Checking IPAM for inconsistencies...")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Found %s, %s, %s in use, %s, %s.\n", plural(r.Pools, "IP pool"), plural(r.Blocks, "block"),
		plural(r.InUse, "address"), plural(r.Endpoints, "endpoint"), plural(r.Nodes, "node"))
	fmt.Fprintln(w)
	section := func(title string, rows [][]string) {
		fmt.Fprintf(w, "%s: %d\n", title, len(rows))
		if len(rows) > 0 {
			writeAligned(w, "  ", rows)
		}
	}
	var rows [][]string
	for _, f := range r.Garbage {
		what := f.Key
		if f.IP.IsValid() {
			what = f.IP.String()
		} else if f.Block.IsValid() {
			what = "block " + f.Block.String()
		}
		due := "due now"
		if f.Due.After(now) {
			due = "due in " + age(f.Due.Sub(now))
		}
		rows = append(rows, []string{what, string(f.Kind), "host " + orNone(f.Host), due, f.Reason})
	}
	section("Garbage (released by the collector once due)", rows)
	rows = nil
	for _, e := range r.EndpointsWithoutAllocation {
		rows = append(rows, []string{e.IP.String(), "endpoint " + shortID(e.Endpoint.ID), "host " + e.Endpoint.Host,
			"network " + shortID(e.Endpoint.NetworkID), e.Reason})
	}
	section("Endpoints with no allocation", rows)
	rows = nil
	for _, b := range r.BlocksNoPool {
		rows = append(rows, []string{b.CIDR.String(), "host " + orNone(b.Host), fmt.Sprintf("%d in use", b.InUse)})
	}
	section("Blocks in no IP pool", rows)
	rows = nil
	for _, i := range r.RecordIssues {
		rows = append(rows, []string{i.Key, i.Reason})
	}
	section("Records that disagree with the blocks", rows)
	fmt.Fprintln(w)
	if n := r.Problems(); n == 0 {
		fmt.Fprintln(w, "Check complete: no problems found.")
	} else {
		fmt.Fprintf(w, "Check complete: found %s.\n", plural(n, "problem"))
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func (a *app) ipamReleaseCommand() *cobra.Command {
	var ipArgs []string
	var force bool
	cmd := &cobra.Command{
		Use:   "release --ip ADDR",
		Short: "Release an address IPAM holds (a leaked allocation)",
		Long: `Release an address that is allocated but no longer used, e.g. one that
calicoctl ipam check lists as an allocation with no endpoint. An address that an
endpoint still holds is refused unless --force.`,
		Example: "  calicoctl ipam release --ip 192.168.0.5",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(ipArgs) == 0 {
				return usageErrorf(cmd, "give the address to release with --ip ADDR")
			}
			var ips []netip.Addr
			for _, s := range ipArgs {
				ip, err := parseIPArg(s)
				if err != nil {
					return usageErrorf(cmd, "%v", err)
				}
				ips = append(ips, ip)
			}
			s, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			for _, ip := range ips {
				if _, err := ipam.ReleaseIP(cmd.Context(), s, ip, force); err != nil {
					return err
				}
				fmt.Fprintf(a.env.Stdout, "Successfully released IP address %s\n", ip)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&ipArgs, "ip", nil, "the address to release (repeat, or comma-separate, for several)")
	cmd.Flags().BoolVar(&force, "force", false, "release even though an endpoint holds the address")
	return cmd
}
