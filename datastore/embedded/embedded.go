// Package embedded runs the single-member etcd the daemon uses when no
// etcd endpoints are given. It is apart from package datastore so that
// only the daemon (and tests) link etcd's server: calicoctl reads the
// endpoint record the server leaves (datastore.ReadEmbeddedEndpoint) and
// dials it as any client.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// maxSocketPath is the longest path a unix socket can have (sun_path).
const maxSocketPath = 107

// Server is a single-member etcd that listens on a unix socket in the data
// dir and nowhere else.
type Server struct {
	Endpoint string
	etcd     *embed.Etcd
	dataDir  string
}

// snapshotCount is how many writes the embedded etcd keeps in memory
// before it snapshots and drops them.
const snapshotCount = 1000

// Start runs etcd in dataDir/etcd. Its clients reach it only through
// dataDir/etcd.sock, mode 0600 in a data dir made 0700, so only root can
// read or write the datastore: no TCP port (a local user, a container or a
// web page through DNS rebinding has nothing to connect to), no peer
// listener (a single member has no peers to hear from), no HTTP gateway and
// no CORS.
func Start(dataDir string) (*Server, error) {
	if dataDir == "" {
		return nil, errors.New("embedded etcd needs a data dir (--data-dir)")
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dataDir, err)
	}
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, datastore.SocketFile)
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("the embedded etcd's socket %s is longer than %d bytes, the most a unix socket path may have: use a shorter --data-dir", sock, maxSocketPath)
	}
	if socketAnswers(sock) {
		return nil, fmt.Errorf("%s is served by another running daemon: two daemons cannot share --data-dir %s", sock, dataDir)
	}
	cURL := url.URL{Scheme: "unix", Path: sock}

	cfg := embed.NewConfig()
	cfg.Name = "calico-libnetwork"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ListenClientUrls = []url.URL{cURL}
	// Advertised URLs must be host:port; nobody dials them (a single
	// member, no gateway), they only name the member.
	cfg.AdvertiseClientUrls = []url.URL{{Scheme: "unix", Host: "localhost:0"}}
	cfg.ListenPeerUrls = nil
	cfg.AdvertisePeerUrls = []url.URL{{Scheme: "unix", Host: "localhost:0"}}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.EnableGRPCGateway = false
	cfg.CORS = map[string]struct{}{}
	cfg.HostWhitelist = map[string]struct{}{"localhost": {}}
	cfg.Logger = "zap"
	cfg.LogLevel = "fatal" // its shutdown chatter is logged at error level
	// Left at zero (only etcd's own command sets the default), every request
	// counts as slow: etcd renders each one as protobuf text for a warning
	// that the log level then drops, which cost a tenth of the CPU of an
	// IPAM allocation and its release (BENCHMARKS.md, IPAM section).
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	cfg.AutoCompactionMode = "revision"
	cfg.AutoCompactionRetention = "1000"
	// A member that ran with a loopback peer port before must still start.
	cfg.StrictReconfigCheck = false
	// etcd keeps every write since its last snapshot in memory (10,000 by
	// default, plus 5,000 for slow followers a single member never has):
	// a block, a handle and three endpoint writes per container held about
	// 8 KiB of heap per container. Snapshots every 1,000 writes (cheap: the
	// data is in bbolt already) bound it.
	cfg.SnapshotCount, cfg.SnapshotCatchUpEntries = snapshotCount, snapshotCount/10

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s (is another daemon using this --data-dir?): %w", cfg.Dir, err)
	}
	// The data dir is already 0700; the socket is made 0600 as well, so it
	// stays root's even if someone opens the directory up.
	if err := os.Chmod(sock, 0o600); err != nil {
		e.Close()
		return nil, fmt.Errorf("make %s private: %w", sock, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s failed: %w", cfg.Dir, err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s did not become ready within 60s", cfg.Dir)
	}
	if err := os.WriteFile(filepath.Join(dir, datastore.EndpointFile), []byte(cURL.String()+"\n"), 0o600); err != nil {
		e.Close()
		return nil, fmt.Errorf("record embedded etcd endpoint: %w", err)
	}
	return &Server{Endpoint: cURL.String(), etcd: e, dataDir: dir}, nil
}

// privateDir creates dir, or takes an existing one, as root's alone (0700):
// it holds the datastore and its socket.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("make data dir %s private (0700): %w", dir, err)
	}
	return nil
}

// socketAnswers reports whether something accepts connections on path.
func socketAnswers(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Close stops etcd and removes the endpoint record, so clients do not dial a
// dead socket.
func (e *Server) Close() {
	e.etcd.Close()
	os.Remove(filepath.Join(e.dataDir, datastore.EndpointFile))
}

// Open connects to cfg.Endpoints, or starts the embedded etcd in
// cfg.DataDir when no endpoints are given; closing the store stops it.
func Open(ctx context.Context, cfg datastore.Config) (*datastore.Store, error) {
	if len(cfg.Endpoints) > 0 {
		return datastore.Connect(ctx, cfg)
	}
	e, err := Start(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.Endpoints = []string{e.Endpoint}
	s, err := datastore.Connect(ctx, cfg)
	if err != nil {
		e.Close()
		return nil, err
	}
	s.OnClose(e.Close)
	return s, nil
}
