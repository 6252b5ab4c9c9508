package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// probeTimeout bounds each question to the daemon's sockets.
const probeTimeout = 3 * time.Second

// nodeName is this host's node name, as the daemon picks it: --nodename,
// else NODENAME, else the host name.
func (a *app) nodeName() string {
	if a.nodeNameFlag != "" {
		return a.nodeNameFlag
	}
	if n := strings.TrimSpace(a.env.Getenv("NODENAME")); n != "" {
		return n
	}
	if h, err := a.env.Hostname(); err == nil {
		return strings.TrimSpace(h)
	}
	return ""
}

func socketClient(path string) *http.Client {
	return &http.Client{
		Timeout: probeTimeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}},
	}
}

// pluginCall posts to a Docker plugin socket and decodes the JSON answer.
func pluginCall(ctx context.Context, path, method string, out any) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("socket does not exist")
		}
		return err
	}
	c := socketClient(path)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/"+method, strings.NewReader("{}"))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	resp, err := c.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("nothing answers on the socket (%v)", errors.Unwrap(op.Err))
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", method, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// socketState says whether a plugin socket serves the interface it should.
type socketState struct {
	name, path, want string
	err              error
}

func probeSocket(ctx context.Context, dir, name, want string) socketState {
	st := socketState{name: strings.TrimSuffix(name, ".sock"), path: filepath.Join(dir, name), want: want}
	var act struct{ Implements []string }
	if err := pluginCall(ctx, st.path, "Plugin.Activate", &act); err != nil {
		st.err = err
		return st
	}
	for _, i := range act.Implements {
		if i == want {
			return st
		}
	}
	st.err = fmt.Errorf("answers, but implements %v instead of %s", act.Implements, want)
	return st
}

// daemonVersion asks the local daemon for its version over its network
// driver socket.
func daemonVersion(ctx context.Context, pluginDir string) (string, error) {
	var v api.VersionInfo
	if err := pluginCall(ctx, filepath.Join(pluginDir, api.NetworkSocket), "Calico.Version", &v); err != nil {
		return "", err
	}
	if v.Version == "" {
		return "", errors.New("no version in the answer")
	}
	if v.GitCommit != "" {
		return v.Version + " (git commit " + v.GitCommit + ")", nil
	}
	return v.Version, nil
}

func (a *app) defaultPluginDir() string {
	if d := a.env.Getenv("CALICO_PLUGIN_DIR"); d != "" {
		return d
	}
	return a.env.DefaultPluginDir
}

func (a *app) nodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Show this host's node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErrorf(cmd, "give a node command: status")
		},
	}
	var pluginDir string
	status := &cobra.Command{
		Use:   "status",
		Short: "Is this host's daemon running and serving, is the datastore reachable, and what this node holds",
		Long: `Report on this host: whether the calico-libnetwork daemon is running and serving
both plugin sockets, whether the datastore answers, this node's record and the
blocks it owns. The node is --nodename, else NODENAME, else the host name, as
for the daemon. Exits 1 when the daemon is not running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.nodeStatus(cmd.Context(), pluginDir)
		},
	}
	status.Flags().StringVar(&pluginDir, "plugin-dir", a.defaultPluginDir(), "where the daemon serves its Docker plugin sockets (env CALICO_PLUGIN_DIR)")
	status.Flags().StringVar(&a.nodeNameFlag, "nodename", "", "this host's node name (default: NODENAME, else the host name)")
	cmd.AddCommand(status)
	return cmd
}

func (a *app) nodeStatus(ctx context.Context, pluginDir string) error {
	w := a.env.Stdout
	socks := []socketState{
		probeSocket(ctx, pluginDir, api.NetworkSocket, "NetworkDriver"),
		probeSocket(ctx, pluginDir, api.IPAMSocket, "IpamDriver"),
	}
	running := socks[0].err == nil && socks[1].err == nil
	switch {
	case running:
		fmt.Fprintln(w, "Calico process is running.")
	case socks[0].err != nil && socks[1].err != nil:
		fmt.Fprintln(w, "Calico process is not running.")
	default:
		fmt.Fprintln(w, "Calico process is not running: it serves only one of its plugin sockets.")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Daemon:")
	for _, s := range socks {
		state := fmt.Sprintf("serving (%s)", s.want)
		if s.err != nil {
			state = "not serving: " + s.err.Error()
		}
		fmt.Fprintf(w, "  %-12s %s: %s\n", s.name, s.path, state)
	}
	if running {
		if v, err := daemonVersion(ctx, pluginDir); err == nil {
			fmt.Fprintf(w, "  %-12s %s\n", "version", v)
		}
	}
	fmt.Fprintln(w)
	if running {
		var st api.DaemonStatus
		if err := pluginCall(ctx, filepath.Join(pluginDir, api.NetworkSocket), "Calico.Status", &st); err == nil {
			a.printDaemonStatus(w, st)
		}
	}

	name := a.nodeName()
	s, err := a.open(ctx)
	fmt.Fprintln(w, "Datastore:")
	if err != nil {
		fmt.Fprintf(w, "  not reachable: %s\n", oneLine(err.Error()))
	} else {
		fmt.Fprintf(w, "  %s: reachable\n", a.ds.describe())
	}
	fmt.Fprintln(w)
	if err == nil {
		if err := a.printNode(ctx, w, s, name); err != nil {
			return err
		}
	}
	if !running {
		return &silentError{}
	}
	return nil
}

func (a *app) printNode(ctx context.Context, w io.Writer, s *datastore.Store, name string) error {
	var n api.Node
	_, err := s.Get(ctx, api.NodeKey(name), &n)
	var derr *datastore.DecodeError
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		fmt.Fprintf(w, "Node %s:\n  no node record in the datastore (the daemon writes it when it starts; NODENAME sets the name)\n", name)
	case errors.As(err, &derr):
		fmt.Fprintf(w, "Node %s:\n  its record cannot be read (%v): fix it with calicoctl apply\n", name, derr.Err)
	case err != nil:
		return err
	default:
		fmt.Fprintf(w, "Node %s:\n", name)
		fmt.Fprintf(w, "  IPv4 address: %s\n", orNone(api.PrefixText(n.IPv4Address)))
		fmt.Fprintf(w, "  IPv6 address: %s\n", orNone(api.PrefixText(n.IPv6Address)))
		if n.Version != "" {
			fmt.Fprintf(w, "  version:      %s\n", n.Version)
		}
		if n.LastSeen.IsZero() {
			fmt.Fprintln(w, "  last seen:    never")
		} else {
			fmt.Fprintf(w, "  last seen:    %s ago (%s)\n", age(a.env.Now().Sub(n.LastSeen)), n.LastSeen.UTC().Format(time.RFC3339))
		}
		if err := a.printLiveness(ctx, w, s, name); err != nil {
			return err
		}
	}
	snap, err := ipam.LoadSnapshot(ctx, s)
	if err != nil {
		return err
	}
	blocks := snap.BlocksOf(name)
	fmt.Fprintln(w)
	if len(blocks) == 0 {
		fmt.Fprintf(w, "Blocks owned by %s: none\n", name)
		return nil
	}
	fmt.Fprintf(w, "Blocks owned by %s:\n", name)
	rows := make([][]string, 0, len(blocks))
	for _, b := range blocks {
		rows = append(rows, append([]string{b.CIDR.String(), orNone(b.Pool)}, usageCells(big.NewInt(int64(b.Size)), b.InUse)...))
	}
	writeBox(w, []string{"BLOCK", "POOL", "IPS TOTAL", "IPS IN USE", "IPS FREE"}, rows)
	return nil
}

func (a *app) versionCommand() *cobra.Command {
	var pluginDir string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the client's version and, if it is reachable, the local daemon's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := a.env.Stdout
			fmt.Fprintf(w, "Client Version:    %s\n", api.Version)
			fmt.Fprintf(w, "Git commit:        %s\n", api.BuildCommit())
			v, err := daemonVersion(cmd.Context(), pluginDir)
			if err != nil {
				v = a.versionFromNode(cmd.Context())
			}
			if v == "" {
				sock := filepath.Join(pluginDir, api.NetworkSocket)
				if probeSocket(cmd.Context(), pluginDir, api.NetworkSocket, "NetworkDriver").err == nil {
					v = "unknown (the daemon on " + sock + " does not report its version)"
				} else {
					v = "unknown (no daemon answers on " + sock + ")"
				}
			}
			fmt.Fprintf(w, "Daemon Version:    %s\n", v)
			return nil
		},
	}
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", a.defaultPluginDir(), "where the daemon serves its Docker plugin sockets (env CALICO_PLUGIN_DIR)")
	return cmd
}

// versionFromNode reads the version the local daemon recorded in its node
// record, or "".
func (a *app) versionFromNode(ctx context.Context) string {
	if _, err := a.resolveConfig(); err != nil {
		return ""
	}
	s, err := a.open(ctx)
	if err != nil {
		return ""
	}
	var n api.Node
	if _, err := s.Get(ctx, api.NodeKey(a.nodeName()), &n); err != nil || n.Version == "" {
		return ""
	}
	return n.Version + " (from node " + n.Name + "'s record)"
}

// printDataPath says which path established container traffic takes.
func printDataPath(w io.Writer, dp *api.DataPathStatus) {
	if dp == nil {
		return
	}
	fmt.Fprintln(w, "Data path:")
	if dp.Redirect {
		fmt.Fprintf(w, "  eBPF redirect on %d endpoints and %d uplinks/tunnels; packets redirected into containers %d, out %d, left to the kernel %d\n",
			dp.Endpoints, dp.Uplinks, dp.ToEndpoint, dp.Out, dp.Passed)
		if dp.Encapsulated+dp.Decapsulated > 0 {
			fmt.Fprintf(w, "  VXLAN done by the eBPF path: %d packets encapsulated, %d taken apart\n", dp.Encapsulated, dp.Decapsulated)
		}
	} else {
		fmt.Fprintf(w, "  kernel forwarding only (nftables): %s\n", dp.Reason)
	}
	fmt.Fprintln(w)
}

func (a *app) printDaemonStatus(w io.Writer, st api.DaemonStatus) {
	printReadiness(w, st.Readiness)
	fmt.Fprintln(w, "Route sync:")
	r := st.Routing
	switch {
	case r.LastApply.IsZero():
		fmt.Fprintln(w, "  not applied yet")
	default:
		state := "in sync"
		if !r.Synced {
			state = "errors: " + oneLine(r.LastError)
		}
		fmt.Fprintf(w, "  %d routes to other hosts' blocks, last applied %s ago: %s\n", r.Routes, age(a.env.Now().Sub(r.LastApply)), state)
	}
	for _, sk := range r.Skipped {
		fmt.Fprintf(w, "  not installed: %s\n", sk)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Encapsulation on this host:")
	for _, c := range st.Carriers {
		if c.Available {
			fmt.Fprintf(w, "  %-6s available\n", c.Mode)
		} else {
			fmt.Fprintf(w, "  %-6s NOT AVAILABLE: %s\n", c.Mode, c.Reason)
		}
	}
	fmt.Fprintln(w)
	printDataPath(w, st.DataPath)
	a.printBGP(w, st.BGP)
	a.printGC(w, st.GC)
	a.printAgents(w, st.Agents)
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "Peers: none (no other node is registered)")
		fmt.Fprintln(w)
		return
	}
	fmt.Fprintln(w, "Peers:")
	rows := make([][]string, 0, len(st.Peers))
	for _, p := range st.Peers {
		path := "other subnet"
		if p.SameSubnet {
			path = "same subnet"
		}
		daemon := "down"
		if p.Live {
			daemon = "live"
		}
		seen := "never"
		if !p.LastSeen.IsZero() {
			seen = age(a.env.Now().Sub(p.LastSeen)) + " ago"
		}
		rows = append(rows, []string{p.Name, orNone(api.PrefixText(p.IPv4)), orNone(api.PrefixText(p.IPv6)), path, daemon, seen})
	}
	writeBox(w, []string{"NODE", "IPV4", "IPV6", "PATH", "DAEMON", "LAST SEEN"}, rows)
	fmt.Fprintln(w)
}

// printAgents shows the last pass of each loop that turns the datastore
// into kernel state, so a stuck or failing one is seen.
func (a *app) printAgents(w io.Writer, agents []api.AgentStatus) {
	if len(agents) == 0 {
		return // a daemon older than the agents' report
	}
	fmt.Fprintln(w, "Agents:")
	rows := make([][]string, 0, len(agents))
	for _, ag := range agents {
		state := "ok"
		if ag.LastError != "" {
			state = "failing: " + oneLine(ag.LastError)
		}
		rows = append(rows, []string{ag.Name, age(a.env.Now().Sub(ag.LastPass)) + " ago", fmt.Sprintf("%dms", ag.TookMillis),
			fmt.Sprintf("%d", ag.Passes), fmt.Sprintf("%d", ag.Failures), state})
	}
	writeBox(w, []string{"AGENT", "LAST PASS", "TOOK", "PASSES", "FAILED", "STATE"}, rows)
	fmt.Fprintln(w)
}

// printGC shows the collector's last pass on this host.
func (a *app) printGC(w io.Writer, r api.GCReport) {
	fmt.Fprintln(w, "Garbage collector:")
	if r.At.IsZero() {
		fmt.Fprintln(w, "  no pass yet")
		fmt.Fprintln(w)
		return
	}
	role := ""
	if r.Leader {
		role = "; collects gone nodes' records too"
	}
	fmt.Fprintf(w, "  last pass %s ago: %d released, %d pending%s\n", age(a.env.Now().Sub(r.At)), len(r.Collected), r.Pending, role)
	if r.Error != "" {
		fmt.Fprintf(w, "  errors: %s\n", oneLine(r.Error))
	}
	if !r.EngineChecked {
		fmt.Fprintln(w, "  the Docker engine did not answer: endpoints it no longer knows are not looked for")
	}
	for _, m := range r.Missing {
		fmt.Fprintf(w, "  endpoint %s: not listed by the Docker engine since %s ago (removed once past the grace period)\n", shortID(m.Endpoint), age(a.env.Now().Sub(m.Since)))
	}
	fmt.Fprintln(w)
}

// printLiveness says whether the node's daemon is alive: it holds the
// claim on its name while it runs (an etcd lease renewed every 5 s, gone
// 20 s after the daemon dies); the record itself is written only when the
// node's settings change and when its daemon stops.
func (a *app) printLiveness(ctx context.Context, w io.Writer, s *datastore.Store, name string) error {
	var c api.NodeClaim
	_, err := s.Get(ctx, api.NodeClaimKey(name), &c)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
		fmt.Fprintln(w, "  daemon:       down (no live claim on the name: stopped, or out of reach of etcd for 20 s)")
	case err != nil:
		return err
	default:
		fmt.Fprintf(w, "  daemon:       live (pid %d, since %s)\n", c.PID, c.Since.UTC().Format(time.RFC3339))
	}
	return nil
}

// printReadiness shows what the daemon's /readyz answers.
func printReadiness(w io.Writer, r *api.Readiness) {
	if r == nil {
		return // a daemon older than its readiness report
	}
	state := "ready"
	if !r.Ready {
		state = "NOT READY"
	}
	fmt.Fprintf(w, "Readiness (as /readyz answers): %s\n", state)
	for _, c := range r.Checks {
		mark := "ok"
		if !c.OK {
			mark = "FAILING"
		}
		fmt.Fprintf(w, "  %-10s %-8s %s\n", c.Name, mark, oneLine(c.Detail))
	}
	fmt.Fprintln(w)
}
