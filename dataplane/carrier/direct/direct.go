// Package direct carries packets to another host unencapsulated: the remote
// host's address is the next hop, so the hosts must share a subnet.
package direct

import (
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
)

// Overhead: nothing is wrapped around the packet.
const Overhead = 0

// Carrier is the direct carrier. It makes no device.
type Carrier struct{}

var _ carrier.Carrier = Carrier{}

func (Carrier) Mode() carrier.Mode               { return carrier.ModeDirect }
func (Carrier) Available() (bool, string)        { return true, "" }
func (Carrier) Prepare(peers []netip.Addr) error { return nil }
func (Carrier) Remove() error                    { return nil }
func (Carrier) Overhead() int                    { return Overhead }

// Route points r at the remote host as gateway; the device (LinkIndex 0) is
// the one the kernel reaches that host through, resolved by the caller.
func (Carrier) Route(r carrier.BlockRoute) (*netlink.Route, error) {
	return &netlink.Route{Dst: nl.IPNet(r.Dst), Gw: r.Via.AsSlice()}, nil
}
