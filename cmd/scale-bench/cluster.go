package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/node"
)

// mode is how simulated hosts (and watchers) show they are alive.
type mode string

const (
	// modeLease: today's daemon, the claim's lease kept alive.
	modeLease mode = "lease keep-alive (today)"
	// modeRewrite: the old heartbeat, nodes/<name> rewritten every 5 s
	// besides the keep-alive (the baseline).
	modeRewrite mode = "record rewrite every 5 s (before)"
)

const heartbeat = 5 * time.Second

// etcdProc is an etcd server of the benchmark's own.
type etcdProc struct {
	cmd *exec.Cmd
	dir string
	url string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(bin string) (*etcdProc, error) {
	dir, err := os.MkdirTemp("", "scale-bench-etcd-")
	if err != nil {
		return nil, err
	}
	cp, err1 := freePort()
	pp, err2 := freePort()
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("no free port: %v %v", err1, err2)
	}
	url, peer := fmt.Sprintf("http://127.0.0.1:%d", cp), fmt.Sprintf("http://127.0.0.1:%d", pp)
	cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer, "--log-level", "error")
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (Debian: apt-get install etcd-server): %w", bin, err)
	}
	return &etcdProc{cmd: cmd, dir: dir, url: url}, nil
}

func (e *etcdProc) stop() {
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	_ = e.cmd.Wait()
	_ = os.RemoveAll(e.dir)
}

// cluster is one scenario's etcd, its simulated hosts and their loops.
type cluster struct {
	etcd  *etcdProc
	store *datastore.Store
	dir   string
	mode  mode
	log   *slog.Logger
	group *errgroup.Group
	ctx   context.Context
	stop  context.CancelFunc
}

func newCluster(cfg config, m mode) (*cluster, error) {
	e, err := startEtcd(cfg.etcd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s *datastore.Store
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) { // etcd takes a moment to listen
		if s, err = datastore.Connect(ctx, datastore.Config{Endpoints: []string{e.url}}); err == nil {
			if err = s.Ping(ctx); err == nil {
				break
			}
			s.Close()
		}
		if time.Since(start) > 20*time.Second {
			e.stop()
			return nil, fmt.Errorf("etcd at %s: %w", e.url, err)
		}
	}
	dir, _ := os.MkdirTemp("", "scale-bench-hosts-")
	c := &cluster{etcd: e, store: s, dir: dir, mode: m, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var gctx context.Context
	gctx, c.stop = context.WithCancel(context.Background())
	c.group, c.ctx = errgroup.WithContext(gctx)
	return c, nil
}

func (c *cluster) close() {
	c.stop()
	_ = c.group.Wait()
	c.store.Close()
	c.etcd.stop()
	_ = os.RemoveAll(c.dir)
}

// revision is etcd's revision: every write moves it, keep-alives do not.
func (c *cluster) revision() (int64, error) {
	res, err := c.store.Read(c.ctx, datastore.Get(api.PingKey))
	if err != nil {
		return 0, err
	}
	return res.Revision, nil
}

var poolPrefix = netip.MustParsePrefix("10.128.0.0/9")

// blockAt is the i-th /26 of the pool.
func blockAt(i int) netip.Prefix {
	a := poolPrefix.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i) * 64
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 26)
}

// hostAddr is host i's address on one flat /16.
func hostAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i%256 + 1)}), 16)
}

// addHost registers host name (its claim and Node record, as a daemon does)
// and keeps it alive in the cluster's mode.
func (c *cluster) addHost(name string, i int) error {
	reg, err := node.Register(c.ctx, c.store, node.Config{Name: name, DataDir: filepath.Join(c.dir, name), IPv4: hostAddr(i), Version: api.Version}, c.log)
	if err != nil {
		return err
	}
	c.group.Go(func() error {
		if c.mode == modeLease {
			reg.Heartbeat(c.ctx, heartbeat)
			return nil
		}
		c.oldHeartbeat(reg)
		return nil
	})
	return nil
}

// oldHeartbeat is what the daemon did before issue 14: keep the lease
// alive and rewrite the Node record with a new LastSeen every 5 s.
func (c *cluster) oldHeartbeat(reg *node.Registration) {
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		_ = c.store.KeepAliveOnce(c.ctx, reg.Lease())
		n := reg.Node()
		n.LastSeen = time.Now().UTC().Truncate(time.Second)
		_ = c.store.Put(c.ctx, api.NodeKey(n.Name), n)
	}
}

// addBlock writes a block affine to host with two addresses in use, and
// their endpoints (what a host running two containers has).
func (c *cluster) addBlock(host string, cidr netip.Prefix, endpoints bool) error {
	b := api.Block{CIDR: cidr, Affinity: host, Allocations: make([]*api.Owner, 64)}
	for i := 0; i < 2; i++ {
		b.Allocations[i] = &api.Owner{Host: host, Handle: fmt.Sprintf("%s-%d", host, i), Seq: uint64(i + 1)}
	}
	if err := c.store.Put(c.ctx, api.BlockKey(cidr), b); err != nil {
		return err
	}
	if !endpoints {
		return nil
	}
	for i := 0; i < 2; i++ {
		a := cidr.Addr()
		for range i {
			a = a.Next()
		}
		id := fmt.Sprintf("%s-ep%d-%060d", host, i, 0)
		ep := api.Endpoint{ID: id, NetworkID: "net1", Host: host, IPv4: netip.PrefixFrom(a, 32), MAC: "ee:ee:ee:ee:ee:ee",
			HostIface: "cali" + id[:11], CreatedAt: time.Now().UTC(), LabelsKnown: true}
		if err := c.store.Put(c.ctx, api.EndpointKey(host, id), ep); err != nil {
			return err
		}
	}
	return nil
}

// populate registers n simulated hosts, each with a block and two
// endpoints, 16 at a time.
func (c *cluster) populate(n int) error {
	if err := c.store.Put(c.ctx, api.PoolKey("scale"), api.IPPool{Name: "scale", CIDR: poolPrefix.String(), BlockSize: 26,
		IPIPMode: api.EncapNever, VXLANMode: api.EncapNever}); err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(16)
	for i := 0; i < n; i++ {
		g.Go(func() error {
			name := fmt.Sprintf("sim-%04d", i)
			if err := c.addHost(name, i+10); err != nil {
				return err
			}
			return c.addBlock(name, blockAt(i), true)
		})
	}
	return g.Wait()
}
