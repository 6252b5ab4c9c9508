// Package nl holds the netlink helpers several dataplane packages need:
// converting prefixes for the kernel, telling "already gone" apart from
// real failures, finding the interface that holds an address.
package nl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPNet converts p to the form netlink takes.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// IsNotFound reports whether err says the object is not there (a delete of
// something already gone is not a failure).
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}

// LinkHolding returns the index and MTU of the interface that has addr: the
// uplink an encapsulating device sends through.
func LinkHolding(addr netip.Addr) (index, mtu int, err error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range links {
		as, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				return l.Attrs().Index, l.Attrs().MTU, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no interface holds this node's address %s: check --ip", addr)
}
