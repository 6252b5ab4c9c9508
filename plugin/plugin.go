package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/driver"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// Socket names inside the plugin dir: Docker finds the drivers by these.
const (
	NetworkSocket = "calico.sock"
	IPAMSocket    = "calico-ipam.sock"
)

// reconcileEvery is how often the data plane is compared with the records.
const reconcileEvery = 30 * time.Second

// Run starts the daemon and blocks until ctx is cancelled. Running
// containers keep their networking when it returns.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	startCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	store, err := datastore.Open(startCtx, datastore.Config{
		Endpoints: cfg.EtcdEndpoints, CACertFile: cfg.EtcdCACertFile, CertFile: cfg.EtcdCertFile,
		KeyFile: cfg.EtcdKeyFile, DataDir: cfg.DataDir,
	})
	if err != nil {
		return err
	}
	defer store.Close()
	if ep := store.EmbeddedEndpoint(); ep != "" {
		log.Info("embedded etcd running", "endpoint", ep, "dataDir", cfg.DataDir)
	}

	dp := dataplane.New(log)
	if err := dp.EnableForwarding(false); err != nil {
		return err
	}
	if err := dp.EnsureForwarding(); err != nil {
		return err
	}
	if !cfg.NoDefaultPools {
		avoid, err := dataplane.HostPrefixes()
		if err != nil {
			return err
		}
		created, err := ipam.EnsureDefaultPools(startCtx, store, avoid)
		if err != nil {
			return err
		}
		for _, p := range created {
			log.Info("created default IP pool", "pool", p.Name, "cidr", p.CIDR)
		}
	}
	mtu := cfg.VethMTU
	if mtu == 0 {
		mtu = dataplane.DefaultMTU()
	}

	alloc := ipam.New(store, cfg.NodeName, log.With("part", "ipam"))
	drv := driver.New(driver.Config{Store: store, Dataplane: dp, Host: cfg.NodeName, MTU: mtu, Log: log.With("part", "driver")})
	if res, err := drv.Reconcile(startCtx); err != nil {
		log.Warn("initial data plane reconcile incomplete", "err", err)
	} else {
		log.Info("data plane reconciled", "routesAdded", res.RoutesAdded, "routesRemoved", res.RoutesRemoved, "linksRemoved", res.LinksRemoved)
	}

	netPath := filepath.Join(cfg.PluginDir, NetworkSocket)
	ipamPath := filepath.Join(cfg.PluginDir, IPAMSocket)
	netL, err := listenUnix(netPath)
	if err != nil {
		return err
	}
	ipamL, err := listenUnix(ipamPath)
	if err != nil {
		netL.Close()
		os.Remove(netPath)
		return err
	}
	servers := []*http.Server{
		{Handler: NetworkMux(drv, log.With("socket", NetworkSocket)), ReadHeaderTimeout: 10 * time.Second},
		{Handler: IPAMMux(ipam.NewDriver(alloc, log.With("part", "ipam-driver")), log.With("socket", IPAMSocket)), ReadHeaderTimeout: 10 * time.Second},
	}
	errc := make(chan error, 2)
	for i, l := range []net.Listener{netL, ipamL} {
		go func(s *http.Server, l net.Listener) {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(servers[i], l)
	}
	log.Info("calico-libnetwork serving", "version", Version, "node", cfg.NodeName,
		"network", netPath, "ipam", ipamPath, "vethMTU", mtu)

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
			if err := dp.EnsureForwarding(); err != nil {
				log.Warn("restoring forward rules failed", "err", err)
			}
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			if res, err := drv.Reconcile(rctx); err != nil {
				log.Warn("data plane reconcile failed", "err", err)
			} else if res != (dataplane.ReconcileResult{}) {
				log.Info("data plane repaired", "routesAdded", res.RoutesAdded, "routesRemoved", res.RoutesRemoved, "linksRemoved", res.LinksRemoved)
			}
			rcancel()
		}
	}
	log.Info("shutting down: sockets closed, container networking left in place")
	shutCtx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	for _, s := range servers {
		_ = s.Shutdown(shutCtx)
	}
	os.Remove(netPath)
	os.Remove(ipamPath)
	return runErr
}
