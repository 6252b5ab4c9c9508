package datastore

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EndpointFile, inside the data dir, records the embedded etcd's client URL so
// that calicoctl and a restarted daemon find it without flags.
const EndpointFile = "etcd-endpoint"

// Embedded is a single-member etcd serving on loopback only.
type Embedded struct {
	Endpoint string
	etcd     *embed.Etcd
	dataDir  string
}

// StartEmbedded runs etcd in dataDir/etcd on two loopback ports. It reuses the
// client port recorded by an earlier run when that port is free, so clients
// that cached it keep working; two data dirs never share a port.
func StartEmbedded(dataDir string) (*Embedded, error) {
	if dataDir == "" {
		return nil, errors.New("embedded etcd needs a data dir (--data-dir)")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dataDir, err)
	}
	clientPort := 0
	if b, err := os.ReadFile(filepath.Join(dataDir, EndpointFile)); err == nil {
		if u, err := url.Parse(strings.TrimSpace(string(b))); err == nil && portFree(u.Host) {
			fmt.Sscanf(u.Port(), "%d", &clientPort)
		}
	}
	var err error
	if clientPort == 0 {
		if clientPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	pURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}

	cfg := embed.NewConfig()
	cfg.Name = "calico-libnetwork"
	cfg.Dir = filepath.Join(dataDir, "etcd")
	cfg.ListenClientUrls = []url.URL{cURL}
	cfg.AdvertiseClientUrls = []url.URL{cURL}
	cfg.ListenPeerUrls = []url.URL{pURL}
	cfg.AdvertisePeerUrls = []url.URL{pURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.LogLevel = "fatal" // its shutdown chatter is logged at error level
	cfg.AutoCompactionMode = "revision"
	cfg.AutoCompactionRetention = "1000"
	// A member restarted with a new peer port must not refuse to start.
	cfg.StrictReconfigCheck = false

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s (is another daemon using this --data-dir?): %w", cfg.Dir, err)
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
	if err := os.WriteFile(filepath.Join(dataDir, EndpointFile), []byte(cURL.String()+"\n"), 0o600); err != nil {
		e.Close()
		return nil, fmt.Errorf("record embedded etcd endpoint: %w", err)
	}
	return &Embedded{Endpoint: cURL.String(), etcd: e, dataDir: dataDir}, nil
}

// Close stops etcd and removes the endpoint record, so clients do not dial a
// dead port.
func (e *Embedded) Close() {
	e.etcd.Close()
	os.Remove(filepath.Join(e.dataDir, EndpointFile))
}

// EmbeddedEndpoint returns the recorded client URL of the embedded etcd in
// dataDir, or "" when no daemon recorded one.
func EmbeddedEndpoint(dataDir string) string {
	b, err := os.ReadFile(filepath.Join(dataDir, EndpointFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(hostport string) bool {
	l, err := net.Listen("tcp", hostport)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func quietZap() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
