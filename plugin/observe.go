package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/metrics"
)

// syncedAgents are the agents whose last pass must have succeeded for the
// data plane to count as in sync.
var syncedAgents = map[string]bool{"routing": true, "policy": true, "hostprotect": true, "multinet": true, "repair": true}

// watchMetrics registers what the metrics read from the daemon's parts
// and runs the IPAM gauges' mirror.
func (d *daemon) watchMetrics() {
	m := d.metrics
	src := metrics.Sources{
		DatastoreReachable: func() bool { return !d.store.Down() },
		NodeUp:             func() bool { return time.Since(d.reg.LastHeartbeat()) < 20*time.Second },
		LastHeartbeat:      d.reg.LastHeartbeat,
		Routes:             func() int { return d.routes.Status().Routes },
		Peers: func() (all, live int) {
			ps := d.routes.Peers()
			for _, p := range ps {
				if p.Live {
					live++
				}
			}
			return len(ps), live
		},
		Veths: func() (int, error) {
			inv, err := d.dp.Inventory()
			return len(inv), err
		},
		GCCollected: d.col.Collected,
		Ready: func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return d.readiness(ctx).Ready
		},
	}
	if d.ps != nil {
		src.Policy = func() (int, int) { c := d.ps.Counts(); return c.Endpoints, c.Policies }
	}
	if d.enf != nil {
		src.NFTables = func() (metrics.NFTCounts, error) {
			c, err := d.enf.Counts()
			return metrics.NFTCounts{Chains: c.Chains, Rules: c.Rules, Sets: c.Sets, Elements: c.Elements}, err
		}
	}
	src.DataPath = func() metrics.DataPathCounts {
		st := d.dataPathStatus()
		return metrics.DataPathCounts{On: st.Redirect, Endpoints: st.Endpoints, Uplinks: st.Uplinks, ToEndpoint: st.ToEndpoint, Out: st.Out, Passed: st.Passed, Decapsulated: st.Decapsulated, Encapsulated: st.Encapsulated}
	}
	m.Watch(src)
	stats := agent.Mirrored{Name: "ipam-stats", Store: d.store, Prefixes: metrics.IPAMPrefixes, Model: m.NewIPAMStats(d.cfg.NodeName),
		Observer: d.agents, Options: datastore.MirrorOptions{Debounce: 200 * time.Millisecond, Resync: 5 * time.Minute}}
	d.run(stats.Run)
}

// serveMetrics serves /metrics, /livez and /readyz on --metrics-addr. An
// address that cannot be listened on is logged, not fatal: the drivers
// matter more than their metrics.
func (d *daemon) serveMetrics() {
	if d.cfg.MetricsAddr == "" {
		d.log.Info("metrics and health checks not served (--metrics-addr is empty)")
		return
	}
	d.watchMetrics()
	l, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		d.log.Error("metrics and health checks not served: give a free --metrics-addr (CALICO_METRICS_ADDR), or empty to turn them off", "addr", d.cfg.MetricsAddr, "err", err)
		return
	}
	srv := &http.Server{Handler: d.metrics.Handler(d.readiness), ReadHeaderTimeout: 5 * time.Second}
	d.run(func(ctx context.Context) {
		go func() { <-ctx.Done(); _ = srv.Close() }()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics server failed", "err", err)
		}
	})
	d.log.Info("serving metrics and health checks", "addr", l.Addr().String(), "paths", "/metrics /livez /readyz")
}

// readiness is what /readyz and calicoctl node status report: the
// datastore answers, both plugin sockets accept connections, and the
// agents that keep the data plane last passed without error.
// The checks run side by side, each within its own budget, so that an
// unreachable etcd does not use up the sockets' time.
func (d *daemon) readiness(ctx context.Context) api.Readiness {
	checks := make([]api.ReadyCheck, 3)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		checks[0] = d.checkDatastore(c)
	}()
	go func() { defer wg.Done(); checks[1] = d.checkSockets(ctx) }()
	checks[2] = d.checkDataplane()
	wg.Wait()
	r := api.Readiness{Ready: true, Checks: checks}
	for _, c := range checks {
		r.Ready = r.Ready && c.OK
	}
	return r
}

func (d *daemon) checkDatastore(ctx context.Context) api.ReadyCheck {
	c := api.ReadyCheck{Name: "datastore", OK: true, Detail: "etcd at " + strings.Join(d.store.Endpoints(), ",") + " answers"}
	if err := d.store.Ping(ctx); err != nil {
		c.OK, c.Detail = false, "etcd does not answer: "+err.Error()
	}
	return c
}

func (d *daemon) checkSockets(ctx context.Context) api.ReadyCheck {
	c := api.ReadyCheck{Name: "sockets", OK: len(d.servers) > 0}
	var paths, bad []string
	for _, s := range d.servers {
		paths = append(paths, s.Path)
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := (&net.Dialer{}).DialContext(dctx, "unix", s.Path)
		cancel()
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", s.Path, err))
			continue
		}
		conn.Close()
	}
	c.Detail = "serving " + strings.Join(paths, ", ")
	if len(bad) > 0 {
		c.OK, c.Detail = false, "not serving: "+strings.Join(bad, "; ")
	}
	return c
}

func (d *daemon) checkDataplane() api.ReadyCheck {
	c := api.ReadyCheck{Name: "dataplane", OK: true, Detail: "routes, policy and endpoints applied"}
	var bad []string
	if st := d.routes.Status(); !st.Synced {
		bad = append(bad, "routes to other hosts not in sync: "+orText(st.LastError, "not applied yet"))
	}
	for _, a := range d.agents.Status() {
		if syncedAgents[a.Name] && a.LastError != "" {
			bad = append(bad, a.Name+": "+a.LastError)
		}
	}
	if len(bad) > 0 {
		c.OK, c.Detail = false, strings.Join(bad, "; ")
	}
	return c
}

func orText(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}
