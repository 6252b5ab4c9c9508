package dataplane

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func ipCmds(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command("ip", strings.Fields(c)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", c, err, out)
		}
	}
}

func TestBlockRoutesApply(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "h1")
	testns.Do(t, host, func() {
		ipCmds(t, "link add uplink type veth peer name uplinkp", "addr add 10.0.1.1/24 dev uplink",
			"link set uplink up", "link set uplinkp up", "link set lo up")
		local := netip.MustParseAddr("10.0.1.1")
		br := dp.NewBlockRoutes(dp.NewVXLANCarrier(local, 0))
		want := []carrier.BlockRoute{
			{Dst: netip.MustParsePrefix("192.168.0.0/26"), Blackhole: true},
			{Dst: netip.MustParsePrefix("192.168.0.64/26"), Via: netip.MustParseAddr("10.0.1.2"), Mode: carrier.ModeDirect},
			{Dst: netip.MustParsePrefix("192.168.0.128/26"), Via: netip.MustParseAddr("10.0.2.3"), Mode: carrier.ModeVXLAN},
		}
		res, err := br.Apply(want)
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if res.Added != 3 || res.Removed != 0 {
			t.Errorf("result %+v, want 3 added", res)
		}
		got, _ := BlockRoutesInKernel()
		wantK := []string{"192.168.0.128/26 via 10.0.2.3 dev vxlan.calico", "192.168.0.64/26 via 10.0.1.2 dev uplink", "blackhole 192.168.0.0/26"}
		if fmt.Sprint(got) != fmt.Sprint(wantK) {
			t.Errorf("kernel routes:\n got  %v\n want %v", got, wantK)
		}
		// VXLAN device: derived MAC, MTU = parent - 50, static entries for the peer.
		l, err := netlinksafe.LinkByName(vxlan.Device)
		if err != nil {
			t.Fatalf("no %s: %v", vxlan.Device, err)
		}
		vx := l.(*netlink.Vxlan)
		if vx.VxlanId != vxlan.VNI || vx.Port != vxlan.Port || vx.MTU != 1500-vxlan.Overhead || vx.HardwareAddr.String() != vxlan.VTEPMAC(local).String() {
			t.Errorf("vxlan: vni=%d port=%d mtu=%d mac=%s", vx.VxlanId, vx.Port, vx.MTU, vx.HardwareAddr)
		}
		neighs, _ := netlink.NeighList(l.Attrs().Index, unix.AF_INET)
		if len(neighs) != 1 || neighs[0].IP.String() != "10.0.2.3" || neighs[0].HardwareAddr.String() != vxlan.VTEPMAC(netip.MustParseAddr("10.0.2.3")).String() {
			t.Errorf("neighbours = %v", neighs)
		}
		fdb, _ := netlink.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		found := false
		for _, f := range fdb {
			if f.IP.String() == "10.0.2.3" && f.HardwareAddr.String() == vxlan.VTEPMAC(netip.MustParseAddr("10.0.2.3")).String() {
				found = true
			}
		}
		if !found {
			t.Errorf("no FDB entry for the peer: %v", fdb)
		}

		// Resync with nothing changed: no churn.
		if res, err := br.Apply(want); err != nil || res.Added != 0 || res.Removed != 0 {
			t.Errorf("second Apply = %+v, %v; want no changes", res, err)
		}
		// Someone deletes a route by hand: it comes back; a foreign route stays.
		ipCmds(t, "route del 192.168.0.64/26", "route add 172.31.0.0/24 via 10.0.1.9 proto static")
		if res, err := br.Apply(want); err != nil || res.Added != 1 {
			t.Errorf("repair Apply = %+v, %v; want 1 added", res, err)
		}
		// The remote host leaves: its route and the VXLAN device go.
		res, err = br.Apply(want[:2])
		if err != nil || res.Removed != 1 {
			t.Errorf("Apply without the VXLAN host = %+v, %v", res, err)
		}
		if LinkExists(vxlan.Device) {
			t.Error("VXLAN device left although no route uses it")
		}
		if _, err := br.Apply(nil); err != nil {
			t.Fatal(err)
		}
		if got, _ := BlockRoutesInKernel(); len(got) != 0 {
			t.Errorf("routes left after empty Apply: %v", got)
		}
		out, _ := exec.Command("ip", "route", "show", "172.31.0.0/24").CombinedOutput()
		if !strings.Contains(string(out), "172.31.0.0/24") {
			t.Error("foreign route was removed")
		}
	})
}

func TestIPIPReportsMissingKernelSupport(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "h1")
	testns.Do(t, host, func() {
		ipCmds(t, "link add uplink type veth peer name uplinkp", "addr add 10.0.1.1/24 dev uplink", "link set uplink up")
		br := dp.NewBlockRoutes()
		ok, why := br.Carrier(carrier.ModeIPIP).Available()
		res, err := br.Apply([]carrier.BlockRoute{{Dst: netip.MustParsePrefix("192.168.0.64/26"), Via: netip.MustParseAddr("10.0.2.3"), Mode: carrier.ModeIPIP}})
		if ok {
			t.Skip("SKIPPED: this kernel has ipip; the missing-support path cannot be shown here")
		}
		if err != nil && !strings.Contains(err.Error(), "IPIP") {
			t.Fatal(err)
		}
		if !strings.Contains(why, "ipip") || len(res.Skipped) == 0 {
			t.Errorf("missing ipip not reported: why=%q skipped=%v", why, res.Skipped)
		}
	})
}

func TestNATOutgoingRules(t *testing.T) {
	host := testns.New(t)
	dp := New(nil, "h1")
	testns.Do(t, host, func() {
		nat := []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}
		all := []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.20.0.0/16")}
		if err := dp.SetNATOutgoing(nat, all); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("iptables", "-t", "nat", "-S", NATChain).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		s := string(out)
		for _, want := range []string{"-s 10.10.0.0/16 -d 10.10.0.0/16", "-s 10.10.0.0/16 -d 10.20.0.0/16", "-s 10.10.0.0/16 -m comment --comment \"calico-libnetwork: nat outgoing\" -j MASQUERADE"} {
			if !strings.Contains(s, want) {
				t.Errorf("NAT chain lacks %q:\n%s", want, s)
			}
		}
		if strings.Contains(s, "-s 10.20.0.0/16") {
			t.Errorf("a pool without natOutgoing is masqueraded:\n%s", s)
		}
		post, _ := exec.Command("iptables", "-t", "nat", "-S", "POSTROUTING").CombinedOutput()
		if strings.Count(string(post), NATChain) != 1 {
			t.Errorf("POSTROUTING jump missing or doubled:\n%s", post)
		}
		// Idempotent; then the pool loses natOutgoing: rules follow.
		if err := dp.SetNATOutgoing(nat, all); err != nil {
			t.Fatal(err)
		}
		if err := dp.SetNATOutgoing(nil, all); err != nil {
			t.Fatal(err)
		}
		out, _ = exec.Command("iptables", "-t", "nat", "-S", NATChain).CombinedOutput()
		if strings.Contains(string(out), "MASQUERADE") {
			t.Errorf("MASQUERADE left after natOutgoing was turned off:\n%s", out)
		}
		dp.RemoveNAT()
	})
}
