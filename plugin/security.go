package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
	"github.com/calico-libnetwork/calico-libnetwork/policysync"
)

// etcdPorts are closed to containers on every host even when no etcd of
// ours listens there: the ports an etcd on the host would use.
var etcdPorts = []uint16{2379, 2380}

// newHostProtection is the agent that enforces the host protection table
// (nftables table inet calico-libnetwork-host) from the datastore, whether
// policy is on or off.
func newHostProtection(ctx context.Context, cfg *Config, store *datastore.Store, log *slog.Logger) *policysync.HostSync {
	static := nftpolicy.HostRules{VXLANPort: vxlan.Port, VXLANVNI: vxlan.VNI, IPIP: carrier.KernelHasLinkKind("ipip")}
	ports, eps := datastoreEndpoints(ctx, cfg.EtcdEndpoints, log)
	for _, p := range ports {
		static.ClosedPorts = append(static.ClosedPorts, nftpolicy.HostPort{Proto: unix.IPPROTO_TCP, Port: p})
	}
	static.ClosedEndpoints = eps
	hp := nftpolicy.NewHostProtection(nftpolicy.HostConfig{Log: log})
	return policysync.NewHostSync(store, hp, static, log)
}

// datastoreEndpoints are the etcd client ports containers may not reach on
// this host, and the etcd members' addresses they may not reach anywhere.
func datastoreEndpoints(ctx context.Context, endpoints []string, log *slog.Logger) ([]uint16, []netip.AddrPort) {
	ports := append([]uint16(nil), etcdPorts...)
	var out []netip.AddrPort
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			continue
		}
		port := uint16(2379)
		if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil && p > 0 {
			port = uint16(p)
		}
		ports = append(ports, port)
		host := u.Hostname()
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), port))
			continue
		}
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(c, "ip", host)
		cancel()
		if err != nil {
			log.Warn("cannot resolve an etcd endpoint: containers are kept from its port on this host only", "endpoint", e, "err", err)
			continue
		}
		for _, a := range addrs {
			out = append(out, netip.AddrPortFrom(a.Unmap(), port))
		}
	}
	return ports, out
}

// removePolicyTable is --policy=off: our policy table goes (and nothing
// else), and the log says so.
func removePolicyTable(log *slog.Logger) error {
	enf, err := nftpolicy.New(nftpolicy.Config{Log: log})
	if err != nil {
		return err
	}
	present, err := enf.Present()
	if err != nil {
		return fmt.Errorf("--policy=off: read nftables: %w", err)
	}
	if present {
		if err := enf.Remove(); err != nil {
			return fmt.Errorf("--policy=off: remove nftables table inet %s: %w", enf.Table(), err)
		}
		log.Warn("network policy is off (--policy=off): removed nftables table inet "+enf.Table()+" left by an earlier run with policy on",
			"kept", "inet "+nftpolicy.DefaultHostTable+" (host protection, anti-spoofing)")
	}
	log.Warn("network policy is off (--policy=off): containers on different networks can reach each other; host protection and anti-spoofing stay on (nftables table inet " + nftpolicy.DefaultHostTable + ")")
	return nil
}

// logDefaultPool says which default pool was created and, for IPv4, which
// candidates were passed over because the host uses them.
func logDefaultPool(log *slog.Logger, p api.IPPool, avoid []netip.Prefix) {
	if !p.Prefix().Addr().Is4() {
		log.Info("created default IP pool", "pool", p.Name, "cidr", p.CIDR)
		return
	}
	_, skipped, _ := ipam.ChooseDefaultIPv4(avoid)
	if len(skipped) == 0 {
		log.Info("created default IP pool", "pool", p.Name, "cidr", p.CIDR, "reason", "clear of every address and route of this host")
		return
	}
	log.Info("created default IP pool", "pool", p.Name, "cidr", p.CIDR,
		"reason", "the earlier candidates overlap this host's addresses or routes: "+strings.Join(skipped, "; "))
}
