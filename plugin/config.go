// Package plugin wires the daemon: configuration, start-up, the two plugin
// sockets, background loops and shutdown. It holds no business logic.
package plugin

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Date is the build date, stamped at link time; the version and commit are
// api.Version and api.GitCommit, shared with calicoctl.
var Date = "unknown"

// Config is everything the daemon is told at start.
type Config struct {
	DataDir        string
	NodeName       string
	EtcdEndpoints  []string
	EtcdCACertFile string
	EtcdCertFile   string
	EtcdKeyFile    string
	IP             string // an address, "autodetect", "can-reach=ADDR" or "interface=REGEX"
	IP6            string
	AutodetectIP   string // IP_AUTODETECTION_METHOD
	PluginDir      string
	VethMTU        int
	LogLevel       slog.Level
	NoDefaultPools bool
	ShowVersion    bool
	DockerHost     string
	Policy         bool // enforce network policy (nftables)
	BPFRedirect    bool // use the eBPF redirect path where the kernel can (--bpf-redirect)
	DriverName     string
	IPAMDriverName string
	// Docker managed plugin mode (see managed.go).
	SingleSocket bool   // serve both drivers on PluginDir/calico.sock
	LegacyDir    string // also serve calico.sock and calico-ipam.sock here
	// Garbage collection (gc package).
	GCGrace       time.Duration // how old an orphan must be before it is released
	GCNodeTimeout time.Duration // a node not seen for this long is gone (0: only deleted nodes)
	// MetricsAddr is where /metrics, /livez and /readyz are served over
	// HTTP ("": not served).
	MetricsAddr string
	GCInterval  time.Duration // how often the collector passes
}

// ParseFlags reads flags, falling back to the environment for each, and
// validates them. Errors are one line that names the flag.
func ParseFlags(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("calico-libnetwork", flag.ContinueOnError)
	// Usage only on --help; a bad flag is one line (returned below).
	var usage strings.Builder
	fs.SetOutput(&usage)
	var c Config
	var raw rawFlags
	defineFlags(fs, &c, &raw, getenv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage.String())
			return nil, err
		}
		return nil, fmt.Errorf("%v (see --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: all settings are --flags (see --help)", fs.Arg(0))
	}
	if c.ShowVersion {
		return &c, nil
	}
	for _, check := range []func() error{
		func() error { return c.parseRaw(raw) },
		c.checkAddrs,
		c.checkNodeAndDir,
		c.checkEtcdTLS,
		func() error { return c.parseNoDefaultPools(getenv("NO_DEFAULT_POOLS")) },
		func() error { return c.parseGC(raw) },
		c.checkLegacyDir,
		c.checkMetricsAddr,
	} {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// rawFlags are the flags given as text and parsed into Config after
// fs.Parse.
type rawFlags struct {
	endpoints, mtu, level, policy string
	bpfRedirect                   string
	grace, nodeTimeout, gcEvery   string
}

// defineFlags declares every flag on fs, each defaulting to its
// environment variable (read through getenv) when that is set.
func defineFlags(fs *flag.FlagSet, c *Config, r *rawFlags, getenv func(string) string) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	hostname, _ := os.Hostname()
	fs.StringVar(&c.DataDir, "data-dir", env("CALICO_DATA_DIR", "/var/lib/calico"), "state directory; holds the embedded etcd when no endpoints are given")
	fs.StringVar(&c.NodeName, "nodename", env("NODENAME", hostname), "this host's name in the datastore (env NODENAME)")
	fs.StringVar(&r.endpoints, "etcd-endpoints", env("ETCD_ENDPOINTS", ""), "comma-separated etcd URLs; empty runs an embedded etcd (env ETCD_ENDPOINTS)")
	fs.StringVar(&c.EtcdCACertFile, "etcd-ca-cert-file", env("ETCD_CA_CERT_FILE", ""), "CA for etcd TLS (env ETCD_CA_CERT_FILE)")
	fs.StringVar(&c.EtcdCertFile, "etcd-cert-file", env("ETCD_CERT_FILE", ""), "client certificate for etcd (env ETCD_CERT_FILE)")
	fs.StringVar(&c.EtcdKeyFile, "etcd-key-file", env("ETCD_KEY_FILE", ""), "client key for etcd (env ETCD_KEY_FILE)")
	fs.StringVar(&c.IP, "ip", env("IP", ""), "this node's IPv4 address[/len], or autodetect, can-reach=ADDR, interface=REGEX (env IP)")
	fs.StringVar(&c.IP6, "ip6", env("IP6", ""), "this node's IPv6 address[/len], autodetect, or none (env IP6); default: autodetect, none if there is no IPv6 default route")
	fs.StringVar(&c.AutodetectIP, "ip-autodetection-method", env("IP_AUTODETECTION_METHOD", ""), "how to find the IPv4 address when --ip is empty: can-reach=ADDR or interface=REGEX (env IP_AUTODETECTION_METHOD)")
	fs.StringVar(&c.PluginDir, "plugin-dir", env("CALICO_PLUGIN_DIR", "/run/docker/plugins"), "where Docker looks for plugin sockets")
	fs.StringVar(&r.mtu, "veth-mtu", env("CALICO_LIBNETWORK_VETH_MTU", ""), "MTU of container veths; default: the host interface's (env CALICO_LIBNETWORK_VETH_MTU)")
	fs.StringVar(&r.level, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	fs.StringVar(&r.policy, "policy", env("CALICO_POLICY", "on"), "network policy enforcement with nftables: on or off (env CALICO_POLICY); off leaves every container reachable")
	fs.StringVar(&r.bpfRedirect, "bpf-redirect", env("CALICO_BPF_REDIRECT", "auto"), "the eBPF redirect path for established container TCP traffic: auto (on where the kernel can run it) or off, the kernel's forwarding path only (env CALICO_BPF_REDIRECT)")
	fs.StringVar(&c.DockerHost, "docker-host", env("DOCKER_HOST", "unix:///var/run/docker.sock"), "Docker engine socket, used to share networks by name between hosts (env DOCKER_HOST)")
	fs.StringVar(&c.DriverName, "network-driver-name", env("CALICO_NETWORK_DRIVER_NAME", "calico"), "the network driver's names as Docker reports them, comma-separated; the first is used to create networks shared from other hosts")
	fs.StringVar(&c.IPAMDriverName, "ipam-driver-name", env("CALICO_IPAM_DRIVER_NAME", "calico-ipam"), "the IPAM driver's name as Docker reports it")
	fs.BoolVar(&c.SingleSocket, "single-socket", false, "serve the network and IPAM drivers both on one socket, calico.sock (a Docker managed plugin)")
	fs.StringVar(&c.LegacyDir, "legacy-plugin-dir", "", "also serve calico.sock and calico-ipam.sock in this directory: a managed plugin's view of the host's /run/docker/plugins, so that --driver calico and --ipam-driver calico-ipam resolve")
	fs.StringVar(&r.grace, "ipam-gc-grace", env("CALICO_IPAM_GC_GRACE", "10m"), "how old an orphaned address or endpoint record must be before the garbage collector releases it, as a Go duration (env CALICO_IPAM_GC_GRACE)")
	fs.StringVar(&r.nodeTimeout, "ipam-gc-node-timeout", env("CALICO_IPAM_GC_NODE_TIMEOUT", "24h"), "a node whose daemon has not been seen for this long is gone: its blocks and addresses are released; 0 releases only deleted nodes' (env CALICO_IPAM_GC_NODE_TIMEOUT)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env("CALICO_METRICS_ADDR", "127.0.0.1:9091"), "host:port serving Prometheus /metrics and the /livez and /readyz health checks over HTTP; empty or off turns them off (env CALICO_METRICS_ADDR)")
	fs.StringVar(&r.gcEvery, "ipam-gc-interval", env("CALICO_IPAM_GC_INTERVAL", "1m"), "how often the garbage collector passes, at most 1m (env CALICO_IPAM_GC_INTERVAL)")
}

// parseRaw parses the etcd endpoints, --policy, --bpf-redirect, --veth-mtu
// and --log-level.
func (c *Config) parseRaw(r rawFlags) error {
	for _, e := range strings.Split(r.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			if !strings.Contains(e, "://") {
				return fmt.Errorf("--etcd-endpoints %q: give URLs such as http://10.0.0.1:2379", e)
			}
			c.EtcdEndpoints = append(c.EtcdEndpoints, e)
		}
	}
	switch strings.ToLower(r.policy) {
	case "on", "true", "1":
		c.Policy = true
	case "off", "false", "0":
	default:
		return fmt.Errorf("--policy %q: use on or off", r.policy)
	}
	switch strings.ToLower(r.bpfRedirect) {
	case "auto", "on", "true", "1":
		c.BPFRedirect = true
	case "off", "false", "0":
	default:
		return fmt.Errorf("--bpf-redirect %q: use auto or off", r.bpfRedirect)
	}
	if r.mtu != "" {
		n, err := strconv.Atoi(r.mtu)
		if err != nil || n < 576 || n > 65535 {
			return fmt.Errorf("--veth-mtu %q: give a number between 576 and 65535", r.mtu)
		}
		c.VethMTU = n
	}
	if err := c.LogLevel.UnmarshalText([]byte(r.level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", r.level)
	}
	return nil
}

// checkAddrs checks --ip, --ip6 and --ip-autodetection-method.
func (c *Config) checkAddrs() error {
	for _, v := range []struct{ flag, val string }{{"--ip", c.IP}, {"--ip6", c.IP6}, {"--ip-autodetection-method", c.AutodetectIP}} {
		if v.val == "" || v.val == "autodetect" || (v.flag == "--ip6" && v.val == "none") ||
			strings.HasPrefix(v.val, "can-reach=") || strings.HasPrefix(v.val, "interface=") {
			continue
		}
		if _, err := netip.ParseAddr(strings.Split(v.val, "/")[0]); err != nil || v.flag == "--ip-autodetection-method" {
			return fmt.Errorf("%s %q: give an IP address, autodetect, can-reach=ADDR or interface=REGEX", v.flag, v.val)
		}
	}
	return nil
}

func (c *Config) checkNodeAndDir() error {
	if c.NodeName == "" {
		return fmt.Errorf("--nodename is empty and the hostname is unknown: set --nodename or NODENAME")
	}
	if strings.ContainsAny(c.NodeName, "/ ") {
		return fmt.Errorf("--nodename %q: use a name without '/' or spaces", c.NodeName)
	}
	if c.DataDir == "" {
		return fmt.Errorf("--data-dir is empty: give a directory for the daemon's state")
	}
	return nil
}

// checkEtcdTLS checks that the TLS files exist and fit the endpoints'
// schemes.
func (c *Config) checkEtcdTLS() error {
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		return fmt.Errorf("--etcd-cert-file and --etcd-key-file go together: give both or neither")
	}
	for _, f := range []string{c.EtcdCACertFile, c.EtcdCertFile, c.EtcdKeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("etcd TLS file %s: %w", f, err)
		}
	}
	return datastore.CheckEndpointSchemes(c.EtcdEndpoints, c.EtcdCACertFile, c.EtcdCertFile, c.EtcdKeyFile)
}

func (c *Config) parseNoDefaultPools(v string) error {
	switch strings.ToLower(v) {
	case "", "false", "0", "no":
	case "true", "1", "yes":
		c.NoDefaultPools = true
	default:
		return fmt.Errorf("NO_DEFAULT_POOLS=%q: use true or false", v)
	}
	return nil
}

// parseGC parses the garbage collector's durations.
func (c *Config) parseGC(r rawFlags) error {
	var err error
	if c.GCGrace, err = parseDuration("--ipam-gc-grace", r.grace); err != nil {
		return err
	}
	if c.GCNodeTimeout, err = parseDuration("--ipam-gc-node-timeout", r.nodeTimeout); err != nil {
		return err
	}
	if c.GCInterval, err = parseDuration("--ipam-gc-interval", r.gcEvery); err != nil || c.GCInterval < time.Second || c.GCInterval > time.Minute {
		return fmt.Errorf("--ipam-gc-interval %q: give a duration from 1s to 1m", r.gcEvery)
	}
	return nil
}

func (c *Config) checkLegacyDir() error {
	if c.LegacyDir != "" && filepath.Clean(c.LegacyDir) == filepath.Clean(c.PluginDir) {
		return fmt.Errorf("--legacy-plugin-dir %s is the plugin dir: give the managed plugin's mount of the host's /run/docker/plugins, or drop the flag", c.LegacyDir)
	}
	return nil
}

func (c *Config) checkMetricsAddr() error {
	switch strings.ToLower(c.MetricsAddr) {
	case "", "off", "none": // the environment cannot say empty apart from unset
		c.MetricsAddr = ""
		return nil
	}
	if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || port == "" {
		return fmt.Errorf("--metrics-addr %q: give host:port, such as 127.0.0.1:9091 (or empty to turn metrics off)", c.MetricsAddr)
	}
	return nil
}

func parseDuration(flag, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s %q: give a duration such as 10m, 90s or 24h", flag, v)
	}
	return d, nil
}
