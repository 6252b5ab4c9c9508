package plugin

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(*testing.T, *Config)
	}{
		{name: "defaults", check: func(t *testing.T, c *Config) {
			if c.DataDir != "/var/lib/calico" || c.PluginDir != "/run/docker/plugins" || len(c.EtcdEndpoints) != 0 || c.LogLevel != slog.LevelInfo {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "env fallback", env: map[string]string{"ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.2:2379", "NODENAME": "h1", "CALICO_LIBNETWORK_VETH_MTU": "1400", "LOG_LEVEL": "debug", "NO_DEFAULT_POOLS": "true", "IP": "10.0.0.5"},
			check: func(t *testing.T, c *Config) {
				if len(c.EtcdEndpoints) != 2 || c.NodeName != "h1" || c.VethMTU != 1400 || c.LogLevel != slog.LevelDebug || !c.NoDefaultPools || c.IP != "10.0.0.5" {
					t.Errorf("env: %+v", c)
				}
			}},
		{name: "flag beats env", args: []string{"--nodename", "flag"}, env: map[string]string{"NODENAME": "env"},
			check: func(t *testing.T, c *Config) {
				if c.NodeName != "flag" {
					t.Errorf("nodename = %q", c.NodeName)
				}
			}},
		{name: "bad mtu", args: []string{"--veth-mtu", "abc"}, wantErr: "--veth-mtu"},
		{name: "mtu too small", args: []string{"--veth-mtu", "100"}, wantErr: "between 576 and 65535"},
		{name: "bad endpoint", args: []string{"--etcd-endpoints", "10.0.0.1:2379"}, wantErr: "give URLs"},
		{name: "bad level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "bad ip", args: []string{"--ip", "nope"}, wantErr: "--ip"},
		{name: "cert without key", args: []string{"--etcd-cert-file", "/etc/hostname"}, wantErr: "go together"},
		{name: "missing CA", args: []string{"--etcd-ca-cert-file", "/nonexistent/ca.pem"}, wantErr: "/nonexistent/ca.pem"},
		{name: "TLS files with http", args: []string{"--etcd-endpoints", "https://10.0.0.1:2379,http://10.0.0.2:2379", "--etcd-ca-cert-file", "/etc/hostname"},
			wantErr: "etcd endpoint http://10.0.0.2:2379 is plain http:// but TLS files are given (--etcd-ca-cert-file, --etcd-cert-file, --etcd-key-file): use https://10.0.0.2:2379"},
		{name: "TLS files with https", args: []string{"--etcd-endpoints", "https://10.0.0.1:2379", "--etcd-cert-file", "/etc/hostname", "--etcd-key-file", "/etc/hostname"},
			check: func(t *testing.T, c *Config) {
				if c.EtcdCertFile != "/etc/hostname" {
					t.Errorf("cert file = %q", c.EtcdCertFile)
				}
			}},
		{name: "bad NO_DEFAULT_POOLS", env: map[string]string{"NO_DEFAULT_POOLS": "maybe"}, wantErr: "NO_DEFAULT_POOLS"},
		{name: "stray argument", args: []string{"run"}, wantErr: "unexpected argument"},
		{name: "unknown flag", args: []string{"--frobnicate"}, wantErr: "frobnicate"},
		{name: "gc defaults", check: func(t *testing.T, c *Config) {
			if c.GCGrace != 10*time.Minute || c.GCInterval != time.Minute || c.GCNodeTimeout != 24*time.Hour {
				t.Errorf("gc defaults: grace %s, interval %s, node timeout %s", c.GCGrace, c.GCInterval, c.GCNodeTimeout)
			}
		}},
		{name: "gc from env", env: map[string]string{"CALICO_IPAM_GC_GRACE": "30s", "CALICO_IPAM_GC_INTERVAL": "5s", "CALICO_IPAM_GC_NODE_TIMEOUT": "0"},
			check: func(t *testing.T, c *Config) {
				if c.GCGrace != 30*time.Second || c.GCInterval != 5*time.Second || c.GCNodeTimeout != 0 {
					t.Errorf("gc: %s %s %s", c.GCGrace, c.GCInterval, c.GCNodeTimeout)
				}
			}},
		{name: "bad gc grace", args: []string{"--ipam-gc-grace", "ten minutes"}, wantErr: "--ipam-gc-grace"},
		{name: "negative gc grace", args: []string{"--ipam-gc-grace", "-1m"}, wantErr: "--ipam-gc-grace"},
		{name: "gc interval too long", args: []string{"--ipam-gc-interval", "5m"}, wantErr: "from 1s to 1m"},
		{name: "metrics on loopback by default", check: metricsAddrIs("127.0.0.1:9091")},
		{name: "metrics address from env", env: map[string]string{"CALICO_METRICS_ADDR": "0.0.0.0:9100"}, check: metricsAddrIs("0.0.0.0:9100")},
		{name: "metrics off with an empty flag", args: []string{"--metrics-addr", ""}, check: metricsAddrIs("")},
		{name: "metrics off from env", env: map[string]string{"CALICO_METRICS_ADDR": "off"}, check: metricsAddrIs("")},
		{name: "metrics address without a port", args: []string{"--metrics-addr", "127.0.0.1"}, wantErr: "--metrics-addr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			c, err := ParseFlags(tc.args, getenv, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func metricsAddrIs(want string) func(*testing.T, *Config) {
	return func(t *testing.T, c *Config) {
		if c.MetricsAddr != want {
			t.Errorf("MetricsAddr = %q, want %q", c.MetricsAddr, want)
		}
	}
}
