package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/ipam"

	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
)

// fakeIPAM is a stand-in only for the HTTP layer under test; the real
// drivers are exercised end to end elsewhere.
type fakeIPAM struct{ panicOn string }

func (f fakeIPAM) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{RequiresMACAddress: true}, nil
}
func (f fakeIPAM) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{}, nil
}
func (f fakeIPAM) RequestPool(r *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if r.Pool == f.panicOn {
		panic("boom")
	}
	if r.Pool == "bad" {
		return nil, errors.New("no such pool: create it first")
	}
	return &ipam.RequestPoolResponse{PoolID: "p", Pool: r.Pool}, nil
}
func (f fakeIPAM) ReleasePool(*ipam.ReleasePoolRequest) error { return nil }
func (f fakeIPAM) RequestAddress(*ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	return nil, nil
}
func (f fakeIPAM) ReleaseAddress(*ipam.ReleaseAddressRequest) error { return nil }

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
}

func serveOn(t *testing.T, mux http.Handler) (string, *http.Client) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.sock")
	l, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return path, unixClient(path)
}

func TestHandlerReplies(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, c := serveOn(t, IPAMMux(fakeIPAM{panicOn: "panic"}, log))
	tests := []struct {
		name       string
		path, body string
		status     int
		errSubstr  string
		wantField  string
	}{
		{"activate", "/Plugin.Activate", "", 200, "", "Implements"},
		{"capabilities with empty body", "/IpamDriver.GetCapabilities", "", 200, "", "RequiresMACAddress"},
		{"capabilities with null", "/IpamDriver.GetCapabilities", "null", 200, "", "RequiresMACAddress"},
		{"ok", "/IpamDriver.RequestPool", `{"Pool":"10.0.0.0/24"}`, 200, "", "PoolID"},
		{"garbage JSON", "/IpamDriver.RequestPool", `{"Pool":`, 400, "invalid JSON", "Err"},
		{"wrong type", "/IpamDriver.RequestPool", `{"Pool":42}`, 400, "invalid JSON", "Err"},
		{"handler error", "/IpamDriver.RequestPool", `{"Pool":"bad"}`, 500, "create it first", "Err"},
		{"handler panic", "/IpamDriver.RequestPool", `{"Pool":"panic"}`, 500, "boom", "Err"},
		{"oversized body", "/IpamDriver.RequestPool", strings.Repeat("x", 2<<20), 413, "larger than", "Err"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Post("http://plugin"+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("reply is not JSON: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d, want %d (%v)", resp.StatusCode, tc.status, body)
			}
			if _, ok := body[tc.wantField]; !ok {
				t.Errorf("reply %v lacks %q", body, tc.wantField)
			}
			if tc.errSubstr != "" && !strings.Contains(body["Err"].(string), tc.errSubstr) {
				t.Errorf("Err = %q, want it to contain %q", body["Err"], tc.errSubstr)
			}
		})
	}
	// Still serving after garbage and a panic.
	resp, err := c.Post("http://plugin/IpamDriver.GetCapabilities", "application/json", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("server not serving after bad requests: %v", err)
	}
	resp.Body.Close()
}

func TestNetworkMuxImplements(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, c := serveOn(t, NetworkMux(netdriver.New(netdriver.Config{}), nil, log)) // only Activate is called
	resp, err := c.Post("http://plugin/Plugin.Activate", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string][]string
	_ = json.NewDecoder(resp.Body).Decode(&m)
	if len(m["Implements"]) != 1 || m["Implements"][0] != "NetworkDriver" {
		t.Fatalf("Activate = %v", m)
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "calico.sock")
	// A socket file left by a crashed daemon: exists, nobody listens.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	l2, err := listenUnix(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l2.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("plugin socket mode %v (%v), want 0600: only Docker (root) may call the drivers", fi.Mode().Perm(), err)
	}
	// A live one is not stolen.
	if _, err := listenUnix(path); err == nil || !strings.Contains(err.Error(), "another running daemon") {
		t.Fatalf("second listener on a live socket: err = %v", err)
	}
}

// TestDocker28Calls: the network socket says GwAllocChecker in its
// capabilities and answers GwAllocCheck with skip for both families, as
// Docker 28 asks before IPAM.
func TestDocker28Calls(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, c := serveOn(t, NetworkMux(netdriver.New(netdriver.Config{}), nil, log))
	for _, tc := range []struct{ path, body, want string }{
		{"/NetworkDriver.GetCapabilities", "", `{"Scope":"local","ConnectivityScope":"global","GwAllocChecker":true}`},
		{"/NetworkDriver.GwAllocCheck", `{"Options":{"com.docker.network.enable_ipv4":true}}`, `{"SkipIPv4":true,"SkipIPv6":true}`},
		{"/NetworkDriver.GwAllocCheck", "", `{"SkipIPv4":true,"SkipIPv6":true}`},
	} {
		resp, err := c.Post("http://plugin"+tc.path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != tc.want {
			t.Errorf("%s %s: %d %s, want 200 %s", tc.path, tc.body, resp.StatusCode, b, tc.want)
		}
	}
}
