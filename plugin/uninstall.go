package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/mssclamp"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
)

// UninstallResult says what Uninstall removed.
type UninstallResult struct {
	Removed []string
}

// Uninstall removes what the daemon keeps in the host's kernel after it
// stops, by design (so running containers keep their networking): the
// FORWARD accept chain in every iptables back end, the NAT chain, the
// nftables policy and MSS clamp tables, the inter-host routes (protocol
// 78), the routes learned over BGP (protocol 79) and the VXLAN device.
// Rules and tables of anyone else are not touched. It refuses
// while a daemon serves pluginDir, or while containers still have calico
// interfaces here (they would be cut off): remove them first.
func Uninstall(pluginDir string) (UninstallResult, error) {
	var res UninstallResult
	for _, sock := range []string{api.NetworkSocket, api.IPAMSocket} {
		p := filepath.Join(pluginDir, sock)
		if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
			c.Close()
			return res, fmt.Errorf("a calico-libnetwork daemon is serving %s: stop it first (systemctl stop calico-libnetwork, or docker plugin disable)", p)
		}
	}
	dp := dataplane.New(nil, "")
	links, err := dataplane.AllEndpointLinks()
	if err != nil {
		return res, err
	}
	if len(links) > 0 {
		sort.Strings(links)
		return res, fmt.Errorf("containers still use calico networking here (%s): remove those containers (and the calico networks) first", strings.Join(links, ", "))
	}
	var errs []error
	if err := dp.RemoveForwarding(); err != nil {
		errs = append(errs, err)
	} else {
		res.Removed = append(res.Removed, "iptables chain "+dataplane.ForwardChain)
	}
	dp.RemoveNAT()
	res.Removed = append(res.Removed, "iptables chain "+dataplane.NATChain)
	if enf, err := nftpolicy.New(nftpolicy.Config{}); err != nil {
		errs = append(errs, err)
	} else if err := enf.Remove(); err != nil {
		errs = append(errs, err)
	} else {
		res.Removed = append(res.Removed, "nftables table inet "+nftpolicy.DefaultTable)
	}
	if err := mssclamp.New(nftpolicy.DefaultIfacePrefix).Remove(); err != nil {
		errs = append(errs, err)
	} else {
		res.Removed = append(res.Removed, "nftables table inet "+mssclamp.Table)
	}
	br := dp.NewBlockRoutes(dp.NewVXLANCarrier(netip.Addr{}, 0))
	if r, err := br.Apply(nil); err != nil {
		errs = append(errs, err)
	} else {
		res.Removed = append(res.Removed, fmt.Sprintf("%d inter-host routes", r.Removed))
	}
	if r, err := dataplane.ApplyBGPRoutes(nil); err != nil {
		errs = append(errs, err)
	} else {
		res.Removed = append(res.Removed, fmt.Sprintf("%d routes learned over BGP", r.Removed))
	}
	if err := br.Carrier(carrier.ModeVXLAN).Remove(); err != nil {
		errs = append(errs, err)
	} else {
		res.Removed = append(res.Removed, "device "+vxlan.Device)
	}
	return res, errors.Join(errs...)
}
