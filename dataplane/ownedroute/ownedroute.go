// Package ownedroute keeps the kernel's routes that carry one protocol mark
// equal to a wanted set. The diff is a pure function (Diff), tested without
// root; Reconciler is the thin netlink side that lists and applies it.
// Routes without the mark are never listed, so never removed.
package ownedroute

import (
	"errors"
	"fmt"
	"sort"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/internal/nl"
)

// Key is what makes two routes the same route: destination, next hop,
// device and whether it is a blackhole. A kernel route and a wanted one with
// equal keys need no change.
type Key struct {
	Dst       string
	Gw        string
	Link      int
	Blackhole bool
}

// KeyOf returns r's key.
func KeyOf(r *netlink.Route) Key {
	k := Key{Link: r.LinkIndex, Blackhole: r.Type == unix.RTN_BLACKHOLE}
	if k.Blackhole {
		// The kernel lists an IPv6 blackhole on lo; it has no device of
		// its own, so the device is no part of it (else it flaps each pass).
		k.Link = 0
	}
	if r.Dst != nil {
		k.Dst = r.Dst.String()
	}
	if r.Gw != nil {
		k.Gw = r.Gw.String()
	}
	return k
}

// Plan is what turns the kernel's routes into the wanted ones.
type Plan struct {
	Add []*netlink.Route // wanted, not in the kernel; sorted by destination
	Del []netlink.Route  // in the kernel, not wanted; in the kernel's order
}

// Diff compares the wanted routes with the kernel's (have). Wanted routes
// with equal keys count once (the last wins).
func Diff(want []*netlink.Route, have []netlink.Route) Plan {
	wanted := make(map[Key]*netlink.Route, len(want))
	for _, r := range want {
		wanted[KeyOf(r)] = r
	}
	var p Plan
	present := map[Key]bool{}
	for _, r := range have {
		k := KeyOf(&r)
		if _, ok := wanted[k]; ok {
			present[k] = true
			continue
		}
		p.Del = append(p.Del, r)
	}
	for k, r := range wanted {
		if !present[k] {
			p.Add = append(p.Add, r)
		}
	}
	sort.Slice(p.Add, func(i, j int) bool { return KeyOf(p.Add[i]).Dst < KeyOf(p.Add[j]).Dst })
	return p
}

// Kernel is the netlink side: the host namespace (Host) or a handle bound
// to another namespace (netlinksafe.Handle).
type Kernel interface {
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RouteReplace(*netlink.Route) error
	RouteDel(*netlink.Route) error
}

// Host is the Kernel of the calling thread's namespace.
type Host struct{}

func (Host) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return netlinksafe.RouteListFiltered(family, filter, mask)
}
func (Host) RouteReplace(r *netlink.Route) error { return netlink.RouteReplace(r) }
func (Host) RouteDel(r *netlink.Route) error     { return netlink.RouteDel(r) }

// Reconciler owns the routes carrying Protocol (in Table, if not 0).
type Reconciler struct {
	Protocol netlink.RouteProtocol
	Table    int    // 0: every table
	Kernel   Kernel // nil: Host
}

// Result counts what Apply changed.
type Result struct {
	Added, Removed int
}

func (c Reconciler) kernel() Kernel {
	if c.Kernel == nil {
		return Host{}
	}
	return c.Kernel
}

// List returns the kernel's routes carrying the mark, IPv4 then IPv6.
func (c Reconciler) List() ([]netlink.Route, error) {
	filter, mask := &netlink.Route{Protocol: c.Protocol}, uint64(netlink.RT_FILTER_PROTOCOL)
	if c.Table != 0 {
		filter.Table, mask = c.Table, mask|netlink.RT_FILTER_TABLE
	}
	var out []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := c.kernel().RouteListFiltered(fam, filter, mask)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// Apply makes have (routes List returned, possibly narrowed by the caller)
// equal to want: removes what is not wanted, then adds what is missing,
// marked with Protocol. It does all it can and returns every failure.
func (c Reconciler) Apply(want []*netlink.Route, have []netlink.Route) (Result, error) {
	var res Result
	var errs []error
	for _, r := range want {
		r.Protocol = c.Protocol
	}
	p := Diff(want, have)
	k := c.kernel()
	for i := range p.Del {
		if err := k.RouteDel(&p.Del[i]); err != nil && !nl.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", p.Del[i].Dst, err))
			continue
		}
		res.Removed++
	}
	for _, r := range p.Add {
		if err := k.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", r.Dst, err))
			continue
		}
		res.Added++
	}
	return res, errors.Join(errs...)
}
