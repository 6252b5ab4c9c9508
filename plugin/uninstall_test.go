package plugin

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// TestUninstall: `calico-libnetwork uninstall` refuses while the daemon
// serves its sockets or a container still has a calico veth, and then
// removes exactly our chains and table, leaving the FORWARD policy and
// everyone else's rules.
func TestUninstall(t *testing.T) {
	host := testns.New(t)
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		out, err := testns.Run(host, args[0], args[1:]...)
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return out
	}
	run("iptables", "-P", "FORWARD", "DROP")
	run("iptables", "-A", "FORWARD", "-i", "lo", "-j", "ACCEPT")
	dp := dataplane.New(nil, "u")
	var err error
	testns.Do(t, host, func() {
		err = dp.EnsureForwarding()
		if err == nil {
			err = dp.SetNATOutgoing(nil, nil)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	run("nft", "add table inet calico-libnetwork")
	run("nft", "add table inet calico-libnetwork-mss")
	run("nft", "add table inet someoneelse")

	l, err := net.Listen("unix", filepath.Join(dir, api.NetworkSocket))
	if err != nil {
		t.Fatal(err)
	}
	testns.Do(t, host, func() { _, err = Uninstall(dir) })
	if err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("uninstall with the daemon serving: %v", err)
	}
	l.Close()

	testns.Do(t, host, func() {
		la := netlink.NewLinkAttrs()
		la.Name = "caliuninst01"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "tmpuninst01"}); err != nil {
			t.Fatal(err)
		}
		lk, _ := netlink.LinkByName("caliuninst01")
		_ = netlink.LinkSetAlias(lk, dataplane.AliasPrefix+"u/ep1")
		_, err = Uninstall(dir)
	})
	if err == nil || !strings.Contains(err.Error(), "caliuninst01") {
		t.Errorf("uninstall with a calico veth left: %v", err)
	}
	var res UninstallResult
	testns.Do(t, host, func() {
		lk, _ := netlink.LinkByName("caliuninst01")
		_ = netlink.LinkDel(lk)
		res, err = Uninstall(dir)
	})
	if err != nil {
		t.Fatalf("uninstall: %v (removed %v)", err, res.Removed)
	}
	fw := run("iptables", "-S")
	if strings.Contains(fw, "CALICO-LIBNETWORK") {
		t.Errorf("our chains left:\n%s", fw)
	}
	if !strings.Contains(fw, "-P FORWARD DROP") || !strings.Contains(fw, "-A FORWARD -i lo -j ACCEPT") {
		t.Errorf("uninstall changed what is not ours:\n%s", fw)
	}
	if nat := run("iptables", "-t", "nat", "-S"); strings.Contains(nat, "CALICO-LIBNETWORK") {
		t.Errorf("NAT chain left:\n%s", nat)
	}
	tables := run("nft", "list", "tables")
	if strings.Contains(tables, "inet calico-libnetwork") || !strings.Contains(tables, "inet someoneelse") {
		t.Errorf("nft tables after uninstall:\n%s", tables)
	}
}
