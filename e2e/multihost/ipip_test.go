//go:build e2e

package multihost

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/node"
)

// The walkthrough's pool asks for IPIP across subnets; this step proves it
// works on every kernel (this machine's has no ipip).
const (
	ipipPool   = "mh-ipip"
	ipipCIDR   = "10.230.0.0/16"
	ipipNet    = "net-ipip"
	ipipSubnet = "10.230.0.0/24"
)

// ipipCrossSubnet is the step "IPIP pool across subnets": a pool with
// ipipMode CrossSubnet (vxlanMode Never), a network on it and containers on
// hosts 1, 2 and 3.
//
//   - Every node records which encapsulations its kernel has.
//   - 1<->2 (one subnet) travels unencapsulated.
//   - 1<->3 (across the router): where the kernels have ipip, IP protocol 4
//     on the wire; where either lacks it (this machine), VXLAN (UDP 4789)
//     and no IPIP, the daemon logs the fallback once per pool and peer, and
//     `calicoctl node status` notes it.
//   - Removing the containers, the network and the pool leaves the other
//     steps' state as it was.
func (s *scenario) ipipCrossSubnet(t *testing.T) {
	tb, h1, h2, h3 := s.tb, s.h1, s.h2, s.h3
	ipip := s.nodesRecordEncapsulations(t)
	tb.CreatePool(t, api.IPPool{Name: ipipPool, CIDR: ipipCIDR, BlockSize: 26, IPIPMode: api.EncapCrossSubnet, VXLANMode: api.EncapNever})
	h1.Docker(t, "network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam", "--subnet", ipipSubnet, ipipNet)
	defer s.removeIPIPPool(t)
	for _, h := range []*Host{h2, h3} {
		if err := Eventually(30*time.Second, 200*time.Millisecond, func() error {
			if ok, err := h.HasNetwork(ipipNet, "calico"); err != nil || !ok {
				return fmt.Errorf("%s has no %s yet (%v)", h.Name, ipipNet, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c := h1.Run(t, "ipip1", ipipNet), h2.Run(t, "ipip2", ipipNet), h3.Run(t, "ipip3", ipipNet)
	t.Logf("containers %s, %s, %s; kernels with ipip: %v", a, b, c, ipip)
	a.MustReach(t, b.IP, 30*time.Second)
	a.MustReach(t, c.IP, 30*time.Second)

	plain, udp, ipipPkts := s.captureBetween(t, h2, a, b)
	if len(plain) < 10 || len(udp)+len(ipipPkts) != 0 {
		t.Errorf("1<->2 (one subnet) on %s's wire: %d plain ICMP, %d VXLAN, %d IPIP packets; want 10 plain and nothing encapsulated", h2.Name, len(plain), len(udp), len(ipipPkts))
	}
	plain, udp, ipipPkts = s.captureBetween(t, h3, a, c)
	t.Logf("1<->3 on %s's wire: %d plain, %d VXLAN (e.g. %s), %d IPIP (e.g. %s)", h3.Name, len(plain), len(udp), first(udp), len(ipipPkts), first(ipipPkts))
	switch {
	case len(plain) != 0:
		t.Errorf("1<->3 crossed the router unencapsulated: %v", plain)
	case ipip && (len(ipipPkts) < 10 || len(udp) != 0):
		t.Errorf("both kernels have ipip: want 10 IPIP packets and no VXLAN, saw %d and %d", len(ipipPkts), len(udp))
	case !ipip && (len(udp) < 10 || len(ipipPkts) != 0):
		t.Errorf("a kernel lacks ipip: want the IPIP pool carried by VXLAN (10 packets) and no IPIP, saw %d and %d", len(udp), len(ipipPkts))
	}
	if !ipip {
		s.fallbackReported(t, h1, h3)
	}
}

// nodesRecordEncapsulations checks every Node record lists vxlan, and
// ipip exactly when the kernel has it (the hosts share this kernel); it
// returns whether the kernel has ipip.
func (s *scenario) nodesRecordEncapsulations(t *testing.T) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := node.List(ctx, s.tb.Store)
	if err != nil {
		t.Fatal(err)
	}
	kernelIPIP := kernelHasIPIP()
	for _, n := range nodes {
		t.Logf("node %s records encapsulations %v", n.Name, n.Encapsulations)
		if !slices.Contains(n.Encapsulations, api.EncapsulationVXLAN) || slices.Contains(n.Encapsulations, api.EncapsulationIPIP) != kernelIPIP {
			t.Errorf("node %s records %v; this kernel has vxlan, ipip %v", n.Name, n.Encapsulations, kernelIPIP)
		}
	}
	if !kernelIPIP {
		t.Log("LOUD: this kernel has no ipip module: the IPIP carrier itself is not exercised here, only the fallback to VXLAN (dataplane/carrier/ipip's own test runs where ipip exists)")
	}
	return kernelIPIP
}

// kernelHasIPIP reports whether the kernel has ipip (its fallback device
// tunl0 exists in every namespace once the module is in).
func kernelHasIPIP() bool {
	b, err := os.ReadFile("/proc/net/dev")
	if err == nil && strings.Contains(string(b), "tunl0") {
		return true
	}
	mods, _ := os.ReadFile("/proc/modules")
	return strings.Contains(string(mods), "ipip ")
}

// captureBetween pings from x to y and returns what host h's uplink saw:
// plain ICMP between them, VXLAN and IPIP packets.
func (s *scenario) captureBetween(t *testing.T, h *Host, x, y *Container) (plain, udp, ipip []string) {
	pc, err := StartCapture(h.NSPath(), HostIfName, fmt.Sprintf("icmp and host %s and host %s", x.IP, y.IP))
	if err != nil {
		t.Fatal(err)
	}
	uc, err := StartCapture(h.NSPath(), HostIfName, "udp port 4789")
	if err != nil {
		t.Fatal(err)
	}
	ic, err := StartCapture(h.NSPath(), HostIfName, "ip proto 4")
	if err != nil {
		t.Fatal(err)
	}
	pingErr := x.PingErr(y.IP, 5)
	plain, udp, ipip = pc.Stop(), uc.Stop(), ic.Stop()
	if pingErr != nil {
		t.Fatalf("%s -> %s: %v", x, y, pingErr)
	}
	return plain, udp, ipip
}

// fallbackReported checks the daemon's one log line and the note in
// `calicoctl node status`.
func (s *scenario) fallbackReported(t *testing.T, h1, h3 *Host) {
	note := fmt.Sprintf("pool %s asks for IPIP to node %s, but neither this node's kernel nor %s's has ipip: carried by VXLAN instead", ipipPool, h3.Name, h3.Name)
	if n := strings.Count(h1.DaemonLog(), note); n != 1 {
		t.Errorf("%s's daemon logged the fallback to %s %d times, want once:\n%s", h1.Name, h3.Name, n, strings.Join(grepLines(h1.DaemonLog(), "fallback"), "\n"))
	}
	out, err := s.tb.Calicoctl(h1, "node", "status", "--plugin-dir", h1.PluginDir)
	if err != nil {
		t.Fatalf("calicoctl node status: %v\n%s", err, out)
	}
	if !strings.Contains(out, "note: "+note) {
		t.Errorf("calicoctl node status on %s does not note the fallback %q:\n%s", h1.Name, note, out)
	}
	t.Logf("calicoctl node status on %s:\n%s", h1.Name, lastLines(out, 40))
}

// removeIPIPPool removes the step's containers, network and pool.
func (s *scenario) removeIPIPPool(t *testing.T) {
	for i, h := range s.tb.Hosts {
		_, _ = h.DockerErr(time.Minute, "rm", "-f", fmt.Sprintf("ipip%d", i+1))
	}
	if _, err := s.h1.DockerErr(time.Minute, "network", "rm", ipipNet); err != nil {
		t.Errorf("remove %s: %v", ipipNet, err)
	}
	for _, h := range s.tb.Hosts {
		if err := Eventually(30*time.Second, 200*time.Millisecond, func() error {
			if ok, err := h.HasNetwork(ipipNet, "calico"); err != nil || ok {
				return fmt.Errorf("%s still has %s (%v)", h.Name, ipipNet, err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if err := Eventually(30*time.Second, 500*time.Millisecond, func() error {
		out, err := s.tb.Calicoctl(s.h1, "delete", "ippool", ipipPool)
		if err != nil {
			return fmt.Errorf("calicoctl delete ippool %s: %v: %s", ipipPool, err, out)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
