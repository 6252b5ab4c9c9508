// Package ipip is the IP-in-IP carrier. It reports whether the kernel has
// IPIP; where it does not (as on this project's CI kernels) routes that need
// it are not installed and the reason is reported, never silently dropped.
package ipip

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
)

// Overhead is the outer IPv4 header.
const Overhead = 20

var errNotImplemented = errors.New("IPIP is not implemented yet: use vxlanMode")

// Carrier is the IPIP carrier.
type Carrier struct{}

var _ carrier.Carrier = Carrier{}

func (Carrier) Mode() carrier.Mode { return carrier.ModeIPIP }
func (Carrier) Overhead() int      { return Overhead }

func (Carrier) Available() (bool, string) {
	if carrier.KernelHasLinkKind("ipip") {
		return true, ""
	}
	return false, "the kernel has no ipip support (module ipip missing): IPIP pools cannot reach other hosts; use vxlanMode instead"
}

func (Carrier) Prepare(peers []netip.Addr) error { return errNotImplemented }
func (Carrier) Remove() error                    { return nil }
func (Carrier) Route(r carrier.BlockRoute) (*netlink.Route, error) {
	return nil, errNotImplemented
}
