//go:build e2e

package multihost

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// PKI is a throwaway CA with a certificate per etcd member (server and peer,
// valid for the member's address and 127.0.0.1) and one client certificate
// the daemons, calicoctl and the test use.
type PKI struct {
	Dir        string
	CA         string
	ClientCert string
	ClientKey  string
	Member     map[netip.Addr][2]string // cert, key
}

// NewPKI writes the certificates into dir.
func NewPKI(dir string, members []netip.Addr) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CA: filepath.Join(dir, "ca.pem"), Member: map[netip.Addr][2]string{}}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "calico-multihost test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	if err := writePEM(p.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	serial := int64(2)
	leaf := func(name string, ips []net.IP, usage []x509.ExtKeyUsage) (string, string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: usage,
			IPAddresses: ips, DNSNames: []string{"localhost"},
		}
		serial++
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return "", "", err
		}
		cert, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := writePEM(cert, "CERTIFICATE", der); err != nil {
			return "", "", err
		}
		return cert, keyPath, writePEM(keyPath, "EC PRIVATE KEY", kb)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for i, ip := range members {
		c, k, err := leaf(fmt.Sprintf("member%d", i+1), []net.IP{ip.AsSlice(), net.IPv4(127, 0, 0, 1)}, both)
		if err != nil {
			return nil, err
		}
		p.Member[ip] = [2]string{c, k}
	}
	if p.ClientCert, p.ClientKey, err = leaf("client", nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}); err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// EtcdCluster is three etcd members, one in each host's namespace, with
// client and peer TLS and client certificate authentication.
type EtcdCluster struct {
	tb      *Testbed
	PKI     *PKI
	Members []*EtcdMember

	proxyMu sync.Mutex
	proxies []net.Listener
}

// EtcdMember is one member.
type EtcdMember struct {
	Name      string
	Host      *Host
	ClientURL string // https://IP:2379, as the daemons use it
	LocalURL  string // https://127.0.0.1:PORT, a proxy into the host's namespace, for the test
	proc      *Proc
}

// ClientURLs are the members' URLs as the daemons use them.
func (c *EtcdCluster) ClientURLs() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

func (c *EtcdCluster) start() error {
	tb := c.tb
	var initial []string
	for i, h := range tb.Hosts {
		m := &EtcdMember{Name: fmt.Sprintf("etcd%d", i+1), Host: h, ClientURL: fmt.Sprintf("https://%s:2379", h.IP())}
		c.Members = append(c.Members, m)
		initial = append(initial, fmt.Sprintf("%s=https://%s:2380", m.Name, h.IP()))
	}
	for _, m := range c.Members {
		ip := m.Host.IP()
		cert := c.PKI.Member[ip]
		argv := []string{"nsenter", "--net=" + m.Host.NSPath(), "--", "etcd",
			"--name", m.Name,
			"--data-dir", filepath.Join(m.Host.Dir, "etcd"),
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", fmt.Sprintf("https://%s:2380", ip),
			"--initial-advertise-peer-urls", fmt.Sprintf("https://%s:2380", ip),
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", tb.ID,
			"--initial-cluster-state", "new",
			"--client-cert-auth", "--trusted-ca-file", c.PKI.CA, "--cert-file", cert[0], "--key-file", cert[1],
			"--peer-client-cert-auth", "--peer-trusted-ca-file", c.PKI.CA, "--peer-cert-file", cert[0], "--peer-key-file", cert[1],
			"--logger", "zap", "--log-outputs", "stderr",
		}
		p, err := startProc(m.Host.Name+" "+m.Name, filepath.Join(m.Host.Dir, "etcd.log"), nil, argv...)
		if err != nil {
			return err
		}
		m.proc = p
		l, err := c.proxy(m.Host.NSPath(), fmt.Sprintf("%s:2379", ip))
		if err != nil {
			return err
		}
		m.LocalURL = "https://" + l.Addr().String()
	}
	var locals []string
	for _, m := range c.Members {
		locals = append(locals, m.LocalURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var store *datastore.Store
	err := Eventually(45*time.Second, 500*time.Millisecond, func() error {
		for _, m := range c.Members {
			if m.proc.Exited() {
				return fmt.Errorf("%s exited at start; log %s ends:\n%s", m.Name, m.proc.LogPath, tail(m.proc.LogPath, 20))
			}
		}
		s, err := datastore.Connect(ctx, datastore.Config{Endpoints: locals, CACertFile: c.PKI.CA, CertFile: c.PKI.ClientCert, KeyFile: c.PKI.ClientKey, Timeout: 5 * time.Second})
		if err != nil {
			return err
		}
		store = s
		return nil
	})
	if err != nil {
		return fmt.Errorf("etcd cluster did not come up: %w", err)
	}
	tb.Store = store
	return Eventually(30*time.Second, 300*time.Millisecond, func() error {
		for _, m := range c.Members {
			if _, err := m.Status(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}

// proxy listens on a loopback port of the test's own namespace and
// forwards each connection to addr inside the namespace at nsPath: the test
// reaches the cluster without any address or route in the machine's
// namespace.
func (c *EtcdCluster) proxy(nsPath, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.proxyMu.Lock()
	c.proxies = append(c.proxies, l)
	c.proxyMu.Unlock()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				up, err := DialInNetNS(nsPath, "tcp", addr, 3*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, conn); closeWrite(up); done <- struct{}{} }()
				go func() { _, _ = io.Copy(conn, up); closeWrite(conn); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return l, nil
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (c *EtcdCluster) closeProxies() {
	c.proxyMu.Lock()
	defer c.proxyMu.Unlock()
	for _, l := range c.proxies {
		l.Close()
	}
	c.proxies = nil
}

// Status asks this member alone for its status.
func (m *EtcdMember) Status(ctx context.Context) (leader bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	leads, err := m.Host.tb.Store.MemberLeads(cctx, m.LocalURL)
	if err != nil {
		return false, fmt.Errorf("etcd member %s: %w", m.Name, err)
	}
	return leads, nil
}

// Leader returns the member that leads the cluster now.
func (c *EtcdCluster) Leader(ctx context.Context) (*EtcdMember, error) {
	for _, m := range c.Members {
		if m.proc.Exited() {
			continue
		}
		if l, err := m.Status(ctx); err == nil && l {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no etcd member says it leads")
}

// Stop stops the member (SIGTERM).
func (m *EtcdMember) Stop() error { return m.proc.Stop(syscall.SIGTERM, 15*time.Second) }

// Start starts a stopped member again, with its data.
func (m *EtcdMember) Start() error { return m.proc.Restart() }

// Running reports whether the member's process is alive.
func (m *EtcdMember) Running() bool { return !m.proc.Exited() }
