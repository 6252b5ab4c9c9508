package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/datastore/embedded"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func openEmbedded(t *testing.T, dir string) *datastore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := embedded.Open(ctx, datastore.Config{DataDir: dir})
	if err != nil {
		t.Fatalf("open embedded etcd in %s: %v", dir, err)
	}
	return s
}

// asNobody runs a command as the unprivileged user nobody.
func asNobody(name string, args ...string) (string, error) {
	full := append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", name}, args...)
	out, err := exec.Command("setpriv", full...).CombinedOutput()
	return string(out), err
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CALICO_REQUIRE_ROOT_TESTS") == "1" {
				t.Fatalf("%s is needed (scripts/install-deps.sh installs it): %v", tool, err)
			}
			t.Skipf("SKIPPED: %s is not installed", tool)
		}
	}
}

// TestEmbeddedIsRootOnly: the embedded datastore listens on a 0600 unix
// socket in a 0700 data dir and on nothing else; root reads and writes it,
// the unprivileged user nobody can do neither, with curl or with etcdctl;
// etcd's HTTP gateway is off.
func TestEmbeddedIsRootOnly(t *testing.T) {
	testns.RequireRoot(t)
	needTools(t, "setpriv", "curl", "etcdctl")
	ctx := context.Background()
	base := t.TempDir()
	// Open the way to the data dir, as /var/lib is: only the data dir and
	// the socket keep others out.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "data")
	if err := os.MkdirAll(dir, 0o755); err != nil { // as an admin might have made it
		t.Fatal(err)
	}
	s := openEmbedded(t, dir)
	defer s.Close()
	key := api.Prefix + "secret"
	if err := s.Put(ctx, key, "root's"); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, datastore.SocketFile)
	want := "unix://" + sock
	if got := s.Endpoints()[0]; got != want {
		t.Fatalf("endpoint %q, want %q", got, want)
	}
	if got := datastore.EmbeddedEndpoint(dir); got != want {
		t.Fatalf("recorded endpoint %q, want %q", got, want)
	}
	for path, mode := range map[string]os.FileMode{dir: 0o700, sock: 0o600, filepath.Join(dir, datastore.EndpointFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %o, want %o", path, fi.Mode().Perm(), mode)
		}
	}
	// Root: the commands work (so their failing as nobody means something).
	if out, err := exec.Command("curl", "-sS", "--max-time", "5", "--unix-socket", sock, "http://localhost/version").CombinedOutput(); err != nil || !strings.Contains(string(out), "etcdserver") {
		t.Fatalf("root: curl /version over the socket: %v: %s", err, out)
	}
	if out, err := exec.Command("etcdctl", "--endpoints", want, "--dial-timeout=3s", "get", key, "--print-value-only").CombinedOutput(); err != nil || !strings.Contains(string(out), "root's") {
		t.Fatalf("root: etcdctl get: %v: %s", err, out)
	}
	// The HTTP gateway (JSON at /v3/...) is off.
	out, err := exec.Command("curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock,
		"-X", "POST", "-d", `{"key":"L2NhbGljbw==","range_end":"L2NhbGljcA=="}`, "http://localhost/v3/kv/range").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "404" {
		t.Errorf("the gateway answered /v3/kv/range: HTTP %s (%v); want 404", out, err)
	}

	// nobody: no read, no write, with either tool.
	for _, c := range []struct {
		what string
		argv []string
	}{
		{"curl read", []string{"curl", "-sSv", "--max-time", "5", "--unix-socket", sock, "http://localhost/version"}},
		{"curl write", []string{"curl", "-sSv", "--max-time", "5", "--unix-socket", sock, "-X", "POST", "-d", `{"key":"L2NhbGljby9saWJuZXR3b3JrL3YxL3NlY3JldA==","value":"bm9ib2R5"}`, "http://localhost/v3/kv/put"}},
		{"etcdctl get", []string{"etcdctl", "--endpoints", want, "--dial-timeout=1s", "--command-timeout=2s", "get", key}},
		{"etcdctl put", []string{"etcdctl", "--endpoints", want, "--dial-timeout=1s", "--command-timeout=2s", "put", key, "nobody's"}},
	} {
		out, err := asNobody(c.argv[0], c.argv[1:]...)
		if err == nil {
			t.Errorf("%s as nobody succeeded: %s", c.what, out)
			continue
		}
		if strings.Contains(out, "root's") {
			t.Errorf("%s as nobody read the value: %s", c.what, out)
		}
		if c.argv[0] == "curl" && !strings.Contains(out, "Permission denied") {
			t.Errorf("%s as nobody failed for another reason than permission: %s", c.what, out)
		}
		t.Logf("%s as nobody: %v: %s", c.what, err, lineWith(out, "denied", "Failed", "error"))
	}
	var got string
	if _, err := s.Get(ctx, key, &got); err != nil || got != "root's" {
		t.Fatalf("after nobody's attempts the key holds %q (%v)", got, err)
	}
	// Even with the data dir opened up, the socket itself refuses nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := asNobody("curl", "-sSv", "--max-time", "5", "--unix-socket", sock, "http://localhost/version"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("with the data dir 0755, nobody's curl on the 0600 socket: %v: %s; want permission denied", err, out)
	}
}

// lineWith returns the first line of s holding one of subs.
func lineWith(s string, subs ...string) string {
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				return strings.TrimSpace(l)
			}
		}
	}
	return strings.TrimSpace(s)
}

// TestEmbeddedRestartAndUpgrade: a data dir written by an earlier version
// (etcd on loopback TCP ports) is taken over with its data; a restart keeps
// the data; a second daemon on the same data dir is refused without
// disturbing the first.
func TestEmbeddedRestartAndUpgrade(t *testing.T) {
	testns.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	oldStyleEtcd(t, dir, api.Prefix+"old", `"from before"`)

	s := openEmbedded(t, dir)
	var got string
	if _, err := s.Get(ctx, api.Prefix+"old", &got); err != nil || got != "from before" {
		t.Fatalf("after the upgrade the old key holds %q (%v)", got, err)
	}
	if err := s.Put(ctx, api.Prefix+"new", "x"); err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := embedded.Open(c, datastore.Config{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "another running daemon") {
		t.Fatalf("a second daemon on the same data dir: err = %v, want a refusal", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("the first daemon's etcd stopped answering after the refused second start: %v", err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, datastore.EndpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("endpoint record left after Close: %v", err)
	}
	s = openEmbedded(t, dir)
	defer s.Close()
	if _, err := s.Get(ctx, api.Prefix+"new", &got); err != nil || got != "x" {
		t.Fatalf("after a restart the key holds %q (%v)", got, err)
	}
}

// oldStyleEtcd runs etcd in dir/etcd the way earlier versions did (client
// and peer on loopback TCP ports) and writes one key.
func oldStyleEtcd(t *testing.T, dir, key, val string) {
	t.Helper()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	cURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port())}
	pURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port())}
	cfg := embed.NewConfig()
	cfg.Name = "calico-libnetwork"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cURL}, []url.URL{cURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pURL}, []url.URL{pURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "fatal"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{cURL.String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CAS(ctx, nil, []datastore.Op{datastore.PutRaw(key, val)}); err != nil {
		t.Fatal(err)
	}
}

// The embedded etcd does not keep every write in memory: after some
// thousand writes it has taken a snapshot (its in-memory log is cut at
// each), and what was written reads back the same, also after a restart.
func TestEmbeddedSnapshotsBoundMemory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := embedded.Open(ctx, datastore.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1200 {
		if err := s.Put(ctx, fmt.Sprintf("/calico/libnetwork/v1/test/%d", i%50), i); err != nil {
			t.Fatal(err)
		}
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "etcd", "member", "snap", "*.snap"))
	for deadline := time.Now().Add(10 * time.Second); len(snaps) == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		snaps, _ = filepath.Glob(filepath.Join(dir, "etcd", "member", "snap", "*.snap"))
	}
	if len(snaps) == 0 {
		t.Fatal("no etcd snapshot after 1,200 writes: every write since start is still held in memory")
	}
	s.Close()
	s, err = embedded.Open(ctx, datastore.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	if _, err := s.Get(ctx, "/calico/libnetwork/v1/test/49", &v); err != nil || v != 1199 {
		t.Fatalf("after a restart: %d, %v; want 1199", v, err)
	}
}
