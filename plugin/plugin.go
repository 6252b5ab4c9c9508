package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/bgp"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/bpfredirect"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/ipip"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/mssclamp"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/datastore/embedded"
	"github.com/calico-libnetwork/calico-libnetwork/docker/engineapi"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/docker/labels"
	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
	"github.com/calico-libnetwork/calico-libnetwork/docker/sharing"
	"github.com/calico-libnetwork/calico-libnetwork/gc"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
	"github.com/calico-libnetwork/calico-libnetwork/metrics"
	"github.com/calico-libnetwork/calico-libnetwork/multinet"
	"github.com/calico-libnetwork/calico-libnetwork/node"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
	"github.com/calico-libnetwork/calico-libnetwork/policysync"
	"github.com/calico-libnetwork/calico-libnetwork/routing"
	"golang.org/x/sync/errgroup"
)

// reconcileEvery is how often the data plane is compared with the records.
const reconcileEvery = 30 * time.Second

// daemon is one run's parts. Run wires them top to bottom; every
// goroutine they need runs in group and is joined before Run returns.
type daemon struct {
	cfg   *Config
	log   *slog.Logger
	group *errgroup.Group
	ctx   context.Context // the group's: ends on shutdown or when a part fails

	store         *datastore.Store
	dp            *dataplane.Dataplane
	fwd           *forwarding
	reg           *node.Registration
	agents        *agent.Recorder
	metrics       *metrics.Metrics
	obs           agent.Observer      // the recorder and the metrics
	ps            *policysync.Syncer  // nil with policy off
	enf           *nftpolicy.Enforcer // nil with policy off
	routes        *routing.Syncer
	bgp           *bgp.Agent
	carriers      []api.CarrierSupport
	hostMTU       int
	mssClampTable *mssclamp.Clamp
	redirect      *bpfredirect.Path // nil: the kernel's path only (redirectOff says why)
	redirectOff   string
	v4            netip.Prefix      // this node's address, the VXLAN tunnel's source
	docker        *engineapi.Client // nil when the engine API cannot be reached
	nets          *sharing.Syncer
	joined        func()
	policy        netdriver.Policy
	alloc         *ipam.Allocator
	drv           *netdriver.Driver
	col           *gc.Collector
	servers       []servedSocket
}

// Run starts the daemon and blocks until ctx is cancelled or a socket
// fails. Running containers keep their networking when it returns.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	d := &daemon{cfg: cfg, log: log, agents: agent.NewRecorder(), metrics: metrics.New(), joined: func() {}}
	d.obs = agent.Observers{d.agents, d.metrics}
	startCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := d.openStore(startCtx); err != nil {
		return err
	}
	defer d.store.Close() // last: after every part is joined
	if err := d.prepareHost(startCtx); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	d.group, d.ctx = errgroup.WithContext(ctx)
	defer func() { stop(); _ = d.group.Wait() }()

	if err := d.register(startCtx); err != nil {
		return err
	}
	defer d.reg.Release(context.Background())
	d.startRouting()
	d.startBGP()
	d.startHostProtection(startCtx)
	d.connectDocker()
	if err := d.startPolicy(); err != nil {
		return err
	}
	d.startRedirect()
	d.newDrivers(startCtx)
	if err := d.serve(); err != nil {
		return err
	}
	d.startBackground()
	d.serveMetrics()
	log.Info("calico-libnetwork serving", "version", api.Version, "node", cfg.NodeName,
		"sockets", socketPaths(d.servers), "vethMTU", d.mtu(), "tunnelMTU", d.tunnelMTUs())

	err := d.group.Wait()
	log.Info("shutting down: sockets closed, container networking left in place")
	return err
}

// run runs fn in the daemon's group until the daemon stops.
func (d *daemon) run(fn func(ctx context.Context)) {
	d.group.Go(func() error { fn(d.ctx); return nil })
}

func (d *daemon) openStore(ctx context.Context) error {
	cfg := d.cfg
	store, err := embedded.Open(ctx, datastore.Config{
		Endpoints: cfg.EtcdEndpoints, CACertFile: cfg.EtcdCACertFile, CertFile: cfg.EtcdCertFile,
		KeyFile: cfg.EtcdKeyFile, DataDir: cfg.DataDir,
	})
	if err != nil {
		return err
	}
	d.store = store
	store.Observe(d.metrics)
	if len(cfg.EtcdEndpoints) == 0 {
		d.log.Info("embedded etcd running", "endpoint", store.Endpoints()[0], "dataDir", cfg.DataDir)
	}
	return nil
}

// prepareHost readies the kernel (forwarding) and, unless told not to, the
// default pools.
func (d *daemon) prepareHost(ctx context.Context) error {
	if err := ensureProcSysWritable(d.log); err != nil {
		return err
	}
	d.dp = dataplane.New(d.log, d.cfg.NodeName)
	if err := d.dp.EnableForwarding(false); err != nil {
		return err
	}
	d.fwd = &forwarding{dp: d.dp, log: d.log}
	if err := d.fwd.ensure(); err != nil {
		return err
	}
	// Without the clamp TCP across a tunnel still works, by path MTU
	// discovery: no reason to refuse to start.
	d.mssClampTable = mssclamp.New(nftpolicy.DefaultIfacePrefix)
	if _, err := d.mssClampTable.Ensure(); err != nil {
		d.log.Warn("no MSS clamp: TCP into VXLAN/IPIP relies on path MTU discovery", "err", err)
	}
	if !dataplane.GatewayRoutable() {
		d.log.Warn("this host has no route to " + dataplane.GatewayIPv4 + " (normally the default route): proxy ARP will not answer for the containers' gateway, so containers cannot send traffic; add a default route")
	}
	if d.cfg.NoDefaultPools {
		return nil
	}
	avoid, err := dataplane.HostPrefixes()
	if err != nil {
		return err
	}
	created, err := ipam.EnsureDefaultPools(ctx, d.store, avoid, runningAddrs(d.dp, d.log))
	if err != nil {
		return err
	}
	for _, p := range created {
		logDefaultPool(d.log, p, avoid)
	}
	return nil
}

// register records this node and keeps its lease alive.
func (d *daemon) register(ctx context.Context) error {
	cfg := d.cfg
	v4, v6, err := nodeAddresses(cfg, d.log)
	if err != nil {
		return err
	}
	d.reg, err = node.Register(ctx, d.store, node.Config{Name: cfg.NodeName, DataDir: cfg.DataDir, IPv4: v4, IPv6: v6, Version: api.Version,
		Encapsulations: kernelEncapsulations()}, d.log)
	if err != nil {
		return err
	}
	d.run(func(ctx context.Context) { d.reg.Heartbeat(ctx, 5*time.Second) })
	d.log.Info("node registered", "node", cfg.NodeName, "ipv4", v4, "ipv6", v6)
	d.v4, d.hostMTU = v4, dataplane.DefaultMTU()
	if v4.IsValid() {
		if m := dataplane.LinkMTUHolding(v4.Addr()); m > 0 {
			d.hostMTU = m
		}
	}
	return nil
}

// startRouting runs the agent that routes to other hosts' blocks, and
// waits (a while) for its first pass, so that the first Join already knows
// the pools' encapsulation.
func (d *daemon) startRouting() {
	blockRoutes := d.dp.NewBlockRoutes(d.dp.NewVXLANCarrier(d.v4.Addr(), d.hostMTU-vxlan.Overhead), ipip.New(d.v4.Addr(), d.hostMTU-ipip.Overhead))
	d.routes = routing.New(d.store, hostRoutes{d.dp, blockRoutes}, d.cfg.NodeName, d.log.With("part", "routing"))
	d.routes.Observer = d.obs
	for _, m := range []carrier.Mode{carrier.ModeVXLAN, carrier.ModeIPIP} {
		ok, why := blockRoutes.Carrier(m).Available()
		if !ok {
			d.log.Warn("encapsulation not available on this host", "mode", m, "reason", why)
		}
		d.carriers = append(d.carriers, api.CarrierSupport{Mode: string(m), Available: ok, Reason: why})
	}
	d.run(d.routes.Run)
	select {
	case <-d.routes.Ready():
	case <-time.After(10 * time.Second):
		d.log.Warn("route sync has not read the datastore yet; starting anyway")
	}
}

// startBGP runs the BGP speaker's agent: it stays off until a
// BGPConfiguration named default exists.
func (d *daemon) startBGP() {
	d.bgp = bgp.New(d.store, d.cfg.NodeName, d.cfg.DataDir, d.log.With("part", "bgp"))
	d.bgp.Observer = d.obs
	d.bgp.Routes = learnedRoutes{}
	d.run(d.bgp.Run)
}

// learnedRoutes puts the BGP speaker's learned routes in the kernel
// (protocol 79, behind the route sync's routes to the same blocks).
type learnedRoutes struct{}

func (learnedRoutes) ApplyLearned(rs []bgp.Route) ([]string, error) {
	want := make([]carrier.BlockRoute, 0, len(rs))
	for _, r := range rs {
		want = append(want, carrier.BlockRoute{Dst: r.Dst, Via: r.Via, Mode: carrier.ModeDirect})
	}
	_, err := dataplane.ApplyBGPRoutes(want)
	in, lerr := dataplane.BGPRoutesInKernel()
	return in, errors.Join(err, lerr)
}

// mtu is the veth MTU: the uplink's (or --veth-mtu), whatever the pools
// encapsulate. Only the tunnels' devices have the smaller MTU; the MSS
// clamp (package mssclamp) and path MTU discovery size what crosses them.
func (d *daemon) mtu() int {
	if d.cfg.VethMTU > 0 {
		return d.cfg.VethMTU
	}
	return d.hostMTU
}

// tunnelMTUs says, for the start-up log, which tunnels the pools use and
// their MTU.
func (d *daemon) tunnelMTUs() string {
	var out []string
	if d.routes.UsesVXLAN() {
		out = append(out, fmt.Sprintf("%s %d", vxlan.Device, d.hostMTU-vxlan.Overhead))
	}
	if d.routes.UsesIPIP() {
		out = append(out, fmt.Sprintf("%s %d", ipip.Device, d.hostMTU-ipip.Overhead))
	}
	return strings.Join(out, ", ")
}

// startHostProtection runs the host protection agent and waits for its
// first apply, so that no container starts before it.
func (d *daemon) startHostProtection(ctx context.Context) {
	log := d.log.With("part", "hostprotect")
	hs := newHostProtection(ctx, d.cfg, d.store, log)
	hs.Observer = d.obs
	d.run(func(ctx context.Context) { hs.Run(ctx, 30*time.Second) })
	select {
	case <-hs.Ready():
	case <-time.After(15 * time.Second):
		log.Warn("host protection not applied yet (etcd slow?); going on: it applies as soon as etcd answers")
	}
}

// connectDocker reaches the engine API, for network sharing and labels.
// Labels are learnt with policy off too, so that turning it on finds them
// known.
func (d *daemon) connectDocker() {
	dc, err := engineapi.New(d.cfg.DockerHost)
	if err != nil {
		d.log.Warn("networks will not be shared with other hosts and container labels are not read", "err", err)
		return
	}
	d.docker = dc
	d.nets = sharing.New(d.store, dc, d.cfg.NodeName, d.cfg.DriverName, d.cfg.IPAMDriverName, d.log.With("part", "netsync"))
	d.nets.Observer = d.obs
	lr := labels.New(d.store, dc, d.cfg.NodeName, d.log.With("part", "labels"))
	lr.Observer, lr.Driver = d.obs, d.cfg.DriverName
	d.run(lr.Run)
	d.joined = lr.Kick
}

// startPolicy runs the policy agent and waits for the kernel to hold the
// full policy before any Join; with policy off it removes our table.
func (d *daemon) startPolicy() error {
	if !d.cfg.Policy {
		return removePolicyTable(d.log)
	}
	enf, err := nftpolicy.New(nftpolicy.Config{Log: d.log.With("part", "nftables")})
	if err != nil {
		return err
	}
	ps := policysync.New(d.store, enforcer{enf}, d.cfg.NodeName, d.log.With("part", "policy"),
		policysync.Options{LastGoodFile: filepath.Join(d.cfg.DataDir, policysync.LastGoodFile), HoldUnlabelled: d.docker != nil})
	ps.Observer = d.obs
	d.ps, d.enf = ps, enf
	d.run(func(ctx context.Context) { ps.Run(ctx, 30*time.Second) })
	select {
	case <-ps.Ready():
	case <-time.After(30 * time.Second):
		d.log.Warn("network policy not applied yet; Joins wait for it")
	}
	d.policy = ps
	return nil
}

// newDrivers makes the network and IPAM drivers' domain parts, and claims
// running containers' addresses again (if the datastore lost them) before
// any new container can be given one.
func (d *daemon) newDrivers(ctx context.Context) {
	kick := func() {
		if d.nets != nil {
			d.nets.Kick()
		}
	}
	d.alloc = ipam.New(d.store, d.cfg.NodeName, d.log.With("part", "ipam"))
	d.drv = netdriver.New(netdriver.Config{Store: d.store, Dataplane: d.dp, IPAM: d.alloc, Host: d.cfg.NodeName, MTU: d.mtu,
		Log: d.log.With("part", "driver"), NetworksChanged: kick, Policy: d.policy, EndpointJoined: d.joined,
		Steps: d.metrics.ObserveStep})
	d.run(d.drv.RunReaper)
	if res, err := d.drv.Reconcile(ctx); err != nil {
		d.log.Warn("initial data plane reconcile incomplete", "err", err)
	} else {
		d.log.Info("data plane reconciled", "routesAdded", res.RoutesAdded, "routesRemoved", res.RoutesRemoved, "adopted", res.Adopted)
	}
	var eng gc.Engine
	if d.docker != nil {
		eng = newEngine(d.docker, d.cfg.DriverName)
	}
	d.col = gc.New(gc.Config{Store: d.store, Host: d.cfg.NodeName, Grace: d.cfg.GCGrace, NodeTimeout: d.cfg.GCNodeTimeout, Every: d.cfg.GCInterval,
		Engine: eng, Endpoints: d.drv, Lease: d.reg.Lease, Log: d.log.With("part", "gc"), Observer: d.obs})
}

func (d *daemon) status() api.DaemonStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ready := d.readiness(ctx)
	return api.DaemonStatus{Node: d.cfg.NodeName, Routing: d.routes.Status(), Peers: d.routes.Peers(), Carriers: d.carriers,
		GC: d.col.Last().GCReport, Agents: d.agents.Status(), Readiness: &ready, BGP: d.bgp.Status(), DataPath: d.dataPathStatus()}
}

// serve listens on the plugin sockets; a socket that fails stops the
// daemon, and shutdown closes them all (gracefully, for 10 s).
func (d *daemon) serve() error {
	netMux := d.metrics.WrapCalls("network", NetworkMux(d.drv, d.status, d.log.With("socket", api.NetworkSocket)))
	ipamMux := d.metrics.WrapCalls("ipam", IPAMMux(ipamdriver.New(d.alloc, d.log.With("part", "ipam-driver")), d.log.With("socket", api.IPAMSocket)))
	servers, err := listenAll(socketPlan(d.cfg, netMux, ipamMux))
	if err != nil {
		return err
	}
	d.servers = servers
	for _, s := range servers {
		d.group.Go(func() error {
			if err := s.Server.Serve(s.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("plugin socket failed: %w", err)
			}
			return nil
		})
	}
	d.run(func(ctx context.Context) {
		<-ctx.Done()
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Server.Shutdown(shutCtx)
			os.Remove(s.Path)
		}
	})
	return nil
}

// startBackground runs the agents that need the drivers: network sharing,
// garbage collection, multi-network routes and endpoint repair.
func (d *daemon) startBackground() {
	if d.nets != nil {
		d.run(func(ctx context.Context) { d.nets.Run(ctx, 2*time.Second) })
	}
	d.run(d.col.Run)
	mn := multinet.New(d.store, d.dp, d.cfg.NodeName, d.log.With("part", "multinet"))
	mn.Observer = d.obs
	d.run(func(ctx context.Context) { mn.Run(ctx, reconcileEvery) })
	repair := agent.Periodic{Name: "repair", WaitFirst: true, Every: reconcileEvery, Observer: d.obs, Log: d.log, Pass: d.repair}
	d.run(repair.Run)
}

// repair puts back the forward rules, the MSS clamp and the endpoints' kernel
// state.
func (d *daemon) repair(ctx context.Context) (bool, error) {
	if err := d.fwd.ensure(); err != nil {
		d.log.Warn("restoring forward rules failed", "err", err)
	}
	if wrote, err := d.mssClampTable.Ensure(); err != nil {
		d.log.Warn("restoring the MSS clamp failed", "err", err)
	} else if wrote {
		d.log.Warn("MSS clamp table was missing or changed; restored it", "table", "inet "+mssclamp.Table)
	}
	res, err := d.drv.Reconcile(ctx)
	if err != nil {
		d.log.Warn("data plane reconcile failed", "err", err)
		return false, err
	}
	if res != (netdriver.RepairResult{}) {
		d.log.Info("data plane repaired", "routesAdded", res.RoutesAdded, "routesRemoved", res.RoutesRemoved, "adopted", res.Adopted)
	}
	return false, nil
}

// runningAddrs are the addresses of the containers this host runs, from the
// kernel: after the datastore lost its records, the default pools are chosen
// to hold them.
func runningAddrs(dp *dataplane.Dataplane, log *slog.Logger) []netip.Addr {
	inv, err := dp.Inventory()
	if err != nil {
		log.Warn("cannot list this host's veths", "err", err)
		return nil
	}
	var out []netip.Addr
	for _, ke := range inv {
		for _, a := range ke.Addrs {
			out = append(out, a.Addr())
		}
	}
	return out
}

// hostRoutes adapts the data plane to what the route syncer needs.
type hostRoutes struct {
	*dataplane.Dataplane
	routes *dataplane.BlockRoutes
}

func (h hostRoutes) ApplyRoutes(r []carrier.BlockRoute) (dataplane.ApplyResult, error) {
	return h.routes.Apply(r)
}

func anyVXLAN(pools []api.IPPool) bool {
	for _, p := range pools {
		if p.VXLANMode != api.EncapNever && p.VXLANMode != "" {
			return true
		}
	}
	return false
}

// nodeAddresses resolves this node's addresses from --ip/--ip6 and the
// autodetection method. An explicit setting that cannot be resolved is an
// error; a failed plain autodetection only leaves the address empty (a
// single host needs none).
func nodeAddresses(cfg *Config, log *slog.Logger) (v4, v6 netip.Prefix, err error) {
	resolve := func(family int, val, method string) (netip.Prefix, error) {
		switch {
		case val == "none":
			return netip.Prefix{}, nil
		case val == "" || val == "autodetect":
			p, err := dataplane.Autodetect(family, method)
			if err != nil {
				if method != "" {
					return netip.Prefix{}, err
				}
				if family == 4 {
					log.Warn("could not autodetect this node's IPv4 address; other hosts cannot route to it (set --ip)", "err", err)
				}
				return netip.Prefix{}, nil
			}
			return p, nil
		case strings.HasPrefix(val, "can-reach="), strings.HasPrefix(val, "interface="):
			return dataplane.Autodetect(family, val)
		case strings.Contains(val, "/"):
			p, err := netip.ParsePrefix(val)
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("node address %q: %w", val, err)
			}
			return p, nil
		default:
			a, err := netip.ParseAddr(val)
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("node address %q: %w", val, err)
			}
			return dataplane.PrefixOfAddr(a), nil
		}
	}
	if v4, err = resolve(4, cfg.IP, cfg.AutodetectIP); err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	if v6, err = resolve(6, cfg.IP6, ""); err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	return v4, v6, nil
}

// enforcer adapts the nftables enforcer to what the policy syncer needs.
type enforcer struct{ *nftpolicy.Enforcer }

func (e enforcer) Apply(ds *policy.DesiredState) (fmt.Stringer, error) {
	return e.Enforcer.Apply(ds)
}

func (e enforcer) Resync(ds *policy.DesiredState) (fmt.Stringer, error) {
	return e.Enforcer.Resync(ds)
}

func (e enforcer) ApplyDelta(d *policy.Delta) (fmt.Stringer, error) {
	return e.Enforcer.ApplyDelta(d)
}
