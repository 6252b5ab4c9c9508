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

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/datastore/embedded"
	"github.com/calico-libnetwork/calico-libnetwork/dockerapi"
	"github.com/calico-libnetwork/calico-libnetwork/driver"
	"github.com/calico-libnetwork/calico-libnetwork/gc"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
	"github.com/calico-libnetwork/calico-libnetwork/multinet"
	"github.com/calico-libnetwork/calico-libnetwork/netsync"
	"github.com/calico-libnetwork/calico-libnetwork/node"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
	"github.com/calico-libnetwork/calico-libnetwork/policysync"
	"github.com/calico-libnetwork/calico-libnetwork/routing"
)

// reconcileEvery is how often the data plane is compared with the records.
const reconcileEvery = 30 * time.Second

// Run starts the daemon and blocks until ctx is cancelled. Running
// containers keep their networking when it returns.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	startCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	store, err := embedded.Open(startCtx, datastore.Config{
		Endpoints: cfg.EtcdEndpoints, CACertFile: cfg.EtcdCACertFile, CertFile: cfg.EtcdCertFile,
		KeyFile: cfg.EtcdKeyFile, DataDir: cfg.DataDir,
	})
	if err != nil {
		return err
	}
	defer store.Close()
	if len(cfg.EtcdEndpoints) == 0 {
		log.Info("embedded etcd running", "endpoint", store.Endpoints()[0], "dataDir", cfg.DataDir)
	}

	if err := ensureProcSysWritable(log); err != nil {
		return err
	}
	dp := dataplane.New(log, cfg.NodeName)
	if err := dp.EnableForwarding(false); err != nil {
		return err
	}
	fwd := &forwarding{dp: dp, log: log}
	if err := fwd.ensure(); err != nil {
		return err
	}
	if !dataplane.GatewayRoutable() {
		log.Warn("this host has no route to " + dataplane.GatewayIPv4 + " (normally the default route): proxy ARP will not answer for the containers' gateway, so containers cannot send traffic; add a default route")
	}
	if !cfg.NoDefaultPools {
		avoid, err := dataplane.HostPrefixes()
		if err != nil {
			return err
		}
		created, err := ipam.EnsureDefaultPools(startCtx, store, avoid, runningAddrs(dp, log))
		if err != nil {
			return err
		}
		for _, p := range created {
			logDefaultPool(log, p, avoid)
		}
	}
	ctx, stopLoops := context.WithCancel(ctx)
	defer stopLoops() // before the store closes (defers run last-in first-out)

	v4, v6, err := nodeAddresses(cfg, log)
	if err != nil {
		return err
	}
	reg, err := node.Register(startCtx, store, node.Config{Name: cfg.NodeName, DataDir: cfg.DataDir, IPv4: v4, IPv6: v6, Version: api.Version}, log)
	if err != nil {
		return err
	}
	defer reg.Release(context.Background())
	go reg.Heartbeat(ctx, 5*time.Second)
	log.Info("node registered", "node", cfg.NodeName, "ipv4", v4, "ipv6", v6)

	hostMTU := dataplane.DefaultMTU()
	addr4 := v4.Addr()
	if v4.IsValid() {
		if m := dataplane.LinkMTUHolding(addr4); m > 0 {
			hostMTU = m
		}
	}
	blockRoutes := dp.NewBlockRoutes(dp.NewVXLANCarrier(addr4, hostMTU-vxlan.Overhead))
	syncer := routing.New(store, hostRoutes{dp, blockRoutes}, cfg.NodeName, log.With("part", "routing"))
	var carriers []api.CarrierSupport
	for _, m := range []carrier.Mode{carrier.ModeVXLAN, carrier.ModeIPIP} {
		ok, why := blockRoutes.Carrier(m).Available()
		if !ok {
			log.Warn("encapsulation not available on this host", "mode", m, "reason", why)
		}
		carriers = append(carriers, api.CarrierSupport{Mode: string(m), Available: ok, Reason: why})
	}
	var col *gc.Collector // set below, before the sockets serve
	status := func() api.DaemonStatus {
		return api.DaemonStatus{Node: cfg.NodeName, Routing: syncer.Status(), Peers: syncer.Peers(), Carriers: carriers, GC: col.Last().GCReport}
	}
	// The veth MTU follows the pools: with a VXLAN pool it leaves room for
	// the encapsulation, so containers never send what cannot cross hosts.
	mtu := func() int {
		if cfg.VethMTU > 0 {
			return cfg.VethMTU
		}
		if syncer.UsesVXLAN() {
			return hostMTU - blockRoutes.Carrier(carrier.ModeVXLAN).Overhead()
		}
		return hostMTU
	}
	go syncer.Run(ctx)
	select { // so the first Join already knows the pools' encapsulation
	case <-syncer.Ready():
	case <-time.After(10 * time.Second):
		log.Warn("route sync has not read the datastore yet; starting anyway")
	}

	startHostProtection(ctx, cfg, store, log.With("part", "hostprotect"))

	var nets *netsync.Syncer
	dc, err := dockerapi.New(cfg.DockerHost)
	if err != nil {
		log.Warn("networks will not be shared with other hosts and container labels are not read", "err", err)
	} else {
		nets = netsync.New(store, dc, cfg.NodeName, cfg.DriverName, cfg.IPAMDriverName, log.With("part", "netsync"))
	}
	var pol driver.Policy
	joined := func() {}
	if dc != nil { // labels are learnt with policy off too, so that turning it on finds them known
		lr := policysync.NewLabelResolver(store, dc, cfg.NodeName, log.With("part", "labels"))
		go lr.Run(ctx)
		joined = lr.Kick
	}
	if cfg.Policy {
		enf, err := nftpolicy.New(nftpolicy.Config{Log: log.With("part", "nftables")})
		if err != nil {
			return err
		}
		ps := policysync.New(store, enforcer{enf}, cfg.NodeName, log.With("part", "policy"),
			policysync.Options{LastGoodFile: filepath.Join(cfg.DataDir, policysync.LastGoodFile), HoldUnlabelled: dc != nil})
		go ps.Run(ctx, 30*time.Second)
		select { // the kernel holds the full policy before any Join
		case <-ps.Ready():
		case <-time.After(30 * time.Second):
			log.Warn("network policy not applied yet; Joins wait for it")
		}
		pol = ps
	} else if err := removePolicyTable(log); err != nil {
		return err
	}
	kick := func() {
		if nets != nil {
			nets.Kick()
		}
	}
	alloc := ipam.New(store, cfg.NodeName, log.With("part", "ipam"))
	drv := driver.New(driver.Config{Store: store, Dataplane: dp, IPAM: alloc, Host: cfg.NodeName, MTU: mtu, Log: log.With("part", "driver"), NetworksChanged: kick,
		Policy: pol, EndpointJoined: joined})
	// Before serving: running containers' addresses are claimed again (if
	// the datastore lost them) before any new container can be given one.
	if res, err := drv.Reconcile(startCtx); err != nil {
		log.Warn("initial data plane reconcile incomplete", "err", err)
	} else {
		log.Info("data plane reconciled", "routesAdded", res.RoutesAdded, "routesRemoved", res.RoutesRemoved, "adopted", res.Adopted)
	}
	var eng gc.Engine
	if dc != nil {
		eng = newEngine(dc, cfg.DriverName)
	}
	col = gc.New(gc.Config{Store: store, Host: cfg.NodeName, Grace: cfg.GCGrace, NodeTimeout: cfg.GCNodeTimeout, Every: cfg.GCInterval,
		Engine: eng, Endpoints: drv, Lease: reg.Lease, Log: log.With("part", "gc")})

	servers, err := listenAll(socketPlan(cfg, NetworkMux(drv, status, log.With("socket", api.NetworkSocket)),
		IPAMMux(ipam.NewDriver(alloc, log.With("part", "ipam-driver")), log.With("socket", api.IPAMSocket))))
	if err != nil {
		return err
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func(s servedSocket) {
			if err := s.Server.Serve(s.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(s)
	}
	if nets != nil {
		go nets.Run(ctx, 2*time.Second)
	}
	go col.Run(ctx)
	go multinet.New(store, dp, cfg.NodeName, log.With("part", "multinet")).Run(ctx, reconcileEvery)
	log.Info("calico-libnetwork serving", "version", api.Version, "node", cfg.NodeName,
		"sockets", socketPaths(servers), "vethMTU", mtu())

	ticker := time.NewTicker(reconcileEvery)
	defer ticker.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = fmt.Errorf("plugin socket failed: %w", err)
			break loop
		case <-ticker.C:
			if err := fwd.ensure(); err != nil {
				log.Warn("restoring forward rules failed", "err", err)
			}
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			if res, err := drv.Reconcile(rctx); err != nil {
				log.Warn("data plane reconcile failed", "err", err)
			} else if res != (driver.RepairResult{}) {
				log.Info("data plane repaired", "routesAdded", res.RoutesAdded, "routesRemoved", res.RoutesRemoved, "adopted", res.Adopted)
			}
			rcancel()
		}
	}
	log.Info("shutting down: sockets closed, container networking left in place")
	shutCtx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	for _, s := range servers {
		_ = s.Server.Shutdown(shutCtx)
		os.Remove(s.Path)
	}
	return runErr
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
