// Package plugin wires the daemon: configuration, start-up, the two plugin
// sockets, background loops and shutdown. It holds no business logic.
package plugin

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	DriverName     string
	IPAMDriverName string
	// Docker managed plugin mode (see managed.go).
	SingleSocket bool   // serve both drivers on PluginDir/calico.sock
	LegacyDir    string // also serve calico.sock and calico-ipam.sock here
	// Garbage collection (gc package).
	GCGrace       time.Duration // how old an orphan must be before it is released
	GCNodeTimeout time.Duration // a node not seen for this long is gone (0: only deleted nodes)
	GCInterval    time.Duration // how often the collector passes
}

// ParseFlags reads flags, falling back to the environment for each, and
// validates them. Errors are one line that names the flag.
func ParseFlags(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	hostname, _ := os.Hostname()
	fs := flag.NewFlagSet("calico-libnetwork", flag.ContinueOnError)
	// Usage only on --help; a bad flag is one line (returned below).
	var usage strings.Builder
	fs.SetOutput(&usage)
	var c Config
	var endpoints, mtu, level string
	fs.StringVar(&c.DataDir, "data-dir", env("CALICO_DATA_DIR", "/var/lib/calico"), "state directory; holds the embedded etcd when no endpoints are given")
	fs.StringVar(&c.NodeName, "nodename", env("NODENAME", hostname), "this host's name in the datastore (env NODENAME)")
	fs.StringVar(&endpoints, "etcd-endpoints", env("ETCD_ENDPOINTS", ""), "comma-separated etcd URLs; empty runs an embedded etcd (env ETCD_ENDPOINTS)")
	fs.StringVar(&c.EtcdCACertFile, "etcd-ca-cert-file", env("ETCD_CA_CERT_FILE", ""), "CA for etcd TLS (env ETCD_CA_CERT_FILE)")
	fs.StringVar(&c.EtcdCertFile, "etcd-cert-file", env("ETCD_CERT_FILE", ""), "client certificate for etcd (env ETCD_CERT_FILE)")
	fs.StringVar(&c.EtcdKeyFile, "etcd-key-file", env("ETCD_KEY_FILE", ""), "client key for etcd (env ETCD_KEY_FILE)")
	fs.StringVar(&c.IP, "ip", env("IP", ""), "this node's IPv4 address[/len], or autodetect, can-reach=ADDR, interface=REGEX (env IP)")
	fs.StringVar(&c.IP6, "ip6", env("IP6", ""), "this node's IPv6 address[/len], autodetect, or none (env IP6); default: autodetect, none if there is no IPv6 default route")
	fs.StringVar(&c.AutodetectIP, "ip-autodetection-method", env("IP_AUTODETECTION_METHOD", ""), "how to find the IPv4 address when --ip is empty: can-reach=ADDR or interface=REGEX (env IP_AUTODETECTION_METHOD)")
	fs.StringVar(&c.PluginDir, "plugin-dir", env("CALICO_PLUGIN_DIR", "/run/docker/plugins"), "where Docker looks for plugin sockets")
	fs.StringVar(&mtu, "veth-mtu", env("CALICO_LIBNETWORK_VETH_MTU", ""), "MTU of container veths; default: the host interface's (env CALICO_LIBNETWORK_VETH_MTU)")
	fs.StringVar(&level, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	var pol string
	fs.StringVar(&pol, "policy", env("CALICO_POLICY", "on"), "network policy enforcement with nftables: on or off (env CALICO_POLICY); off leaves every container reachable")
	fs.StringVar(&c.DockerHost, "docker-host", env("DOCKER_HOST", "unix:///var/run/docker.sock"), "Docker engine socket, used to share networks by name between hosts (env DOCKER_HOST)")
	fs.StringVar(&c.DriverName, "network-driver-name", env("CALICO_NETWORK_DRIVER_NAME", "calico"), "the network driver's names as Docker reports them, comma-separated; the first is used to create networks shared from other hosts")
	fs.StringVar(&c.IPAMDriverName, "ipam-driver-name", env("CALICO_IPAM_DRIVER_NAME", "calico-ipam"), "the IPAM driver's name as Docker reports it")
	fs.BoolVar(&c.SingleSocket, "single-socket", false, "serve the network and IPAM drivers both on one socket, calico.sock (a Docker managed plugin)")
	fs.StringVar(&c.LegacyDir, "legacy-plugin-dir", "", "also serve calico.sock and calico-ipam.sock in this directory: a managed plugin's view of the host's /run/docker/plugins, so that --driver calico and --ipam-driver calico-ipam resolve")
	var grace, nodeTimeout, gcEvery string
	fs.StringVar(&grace, "ipam-gc-grace", env("CALICO_IPAM_GC_GRACE", "10m"), "how old an orphaned address or endpoint record must be before the garbage collector releases it, as a Go duration (env CALICO_IPAM_GC_GRACE)")
	fs.StringVar(&nodeTimeout, "ipam-gc-node-timeout", env("CALICO_IPAM_GC_NODE_TIMEOUT", "24h"), "a node whose daemon has not been seen for this long is gone: its blocks and addresses are released; 0 releases only deleted nodes' (env CALICO_IPAM_GC_NODE_TIMEOUT)")
	fs.StringVar(&gcEvery, "ipam-gc-interval", env("CALICO_IPAM_GC_INTERVAL", "1m"), "how often the garbage collector passes, at most 1m (env CALICO_IPAM_GC_INTERVAL)")
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
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			if !strings.Contains(e, "://") {
				return nil, fmt.Errorf("--etcd-endpoints %q: give URLs such as http://10.0.0.1:2379", e)
			}
			c.EtcdEndpoints = append(c.EtcdEndpoints, e)
		}
	}
	switch strings.ToLower(pol) {
	case "on", "true", "1":
		c.Policy = true
	case "off", "false", "0":
	default:
		return nil, fmt.Errorf("--policy %q: use on or off", pol)
	}
	if mtu != "" {
		n, err := strconv.Atoi(mtu)
		if err != nil || n < 576 || n > 65535 {
			return nil, fmt.Errorf("--veth-mtu %q: give a number between 576 and 65535", mtu)
		}
		c.VethMTU = n
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	for _, v := range []struct{ flag, val string }{{"--ip", c.IP}, {"--ip6", c.IP6}, {"--ip-autodetection-method", c.AutodetectIP}} {
		if v.val == "" || v.val == "autodetect" || (v.flag == "--ip6" && v.val == "none") ||
			strings.HasPrefix(v.val, "can-reach=") || strings.HasPrefix(v.val, "interface=") {
			continue
		}
		if _, err := netip.ParseAddr(strings.Split(v.val, "/")[0]); err != nil || v.flag == "--ip-autodetection-method" {
			return nil, fmt.Errorf("%s %q: give an IP address, autodetect, can-reach=ADDR or interface=REGEX", v.flag, v.val)
		}
	}
	if c.NodeName == "" {
		return nil, fmt.Errorf("--nodename is empty and the hostname is unknown: set --nodename or NODENAME")
	}
	if strings.ContainsAny(c.NodeName, "/ ") {
		return nil, fmt.Errorf("--nodename %q: use a name without '/' or spaces", c.NodeName)
	}
	if c.DataDir == "" {
		return nil, fmt.Errorf("--data-dir is empty: give a directory for the daemon's state")
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		return nil, fmt.Errorf("--etcd-cert-file and --etcd-key-file go together: give both or neither")
	}
	for _, f := range []string{c.EtcdCACertFile, c.EtcdCertFile, c.EtcdKeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("etcd TLS file %s: %w", f, err)
		}
	}
	if err := datastore.CheckEndpointSchemes(c.EtcdEndpoints, c.EtcdCACertFile, c.EtcdCertFile, c.EtcdKeyFile); err != nil {
		return nil, err
	}
	switch strings.ToLower(getenv("NO_DEFAULT_POOLS")) {
	case "", "false", "0", "no":
	case "true", "1", "yes":
		c.NoDefaultPools = true
	default:
		return nil, fmt.Errorf("NO_DEFAULT_POOLS=%q: use true or false", getenv("NO_DEFAULT_POOLS"))
	}
	var err error
	if c.GCGrace, err = parseDuration("--ipam-gc-grace", grace); err != nil {
		return nil, err
	}
	if c.GCNodeTimeout, err = parseDuration("--ipam-gc-node-timeout", nodeTimeout); err != nil {
		return nil, err
	}
	if c.GCInterval, err = parseDuration("--ipam-gc-interval", gcEvery); err != nil || c.GCInterval < time.Second || c.GCInterval > time.Minute {
		return nil, fmt.Errorf("--ipam-gc-interval %q: give a duration from 1s to 1m", gcEvery)
	}
	if c.LegacyDir != "" && filepath.Clean(c.LegacyDir) == filepath.Clean(c.PluginDir) {
		return nil, fmt.Errorf("--legacy-plugin-dir %s is the plugin dir: give the managed plugin's mount of the host's /run/docker/plugins, or drop the flag", c.LegacyDir)
	}
	return &c, nil
}

func parseDuration(flag, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s %q: give a duration such as 10m, 90s or 24h", flag, v)
	}
	return d, nil
}
