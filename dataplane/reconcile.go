package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// ReconcileResult says what Reconcile changed.
type ReconcileResult struct {
	RoutesAdded, RoutesRemoved int
}

// KernelEndpoint is one of this node's veths as the kernel holds it.
type KernelEndpoint struct {
	ID        string
	HostIface string
	Addrs     []netip.Prefix // from our host routes on it
}

// Inventory lists this node's veths (by endpoint ID) with the host routes
// on each: what is running, whatever the datastore says.
func (d *Dataplane) Inventory() (map[string]KernelEndpoint, error) {
	links, err := d.OurLinks()
	if err != nil {
		return nil, err
	}
	routes, err := OurRoutes()
	if err != nil {
		return nil, err
	}
	byIndex := map[int][]netip.Prefix{}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ones, _ := r.Dst.Mask.Size()
			byIndex[r.LinkIndex] = append(byIndex[r.LinkIndex], netip.PrefixFrom(a.Unmap(), ones))
		}
	}
	out := make(map[string]KernelEndpoint, len(links))
	for name, id := range links {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			continue
		}
		out[id] = KernelEndpoint{ID: id, HostIface: name, Addrs: byIndex[l.Attrs().Index]}
	}
	return out, nil
}

// Reconcile makes the host routes match want (endpoints by ID): every
// wanted endpoint whose veth exists gets its host routes, and our routes on
// this node's veths that no wanted endpoint needs are removed. It never
// removes a veth: one whose record is missing may still carry a running
// container (the datastore can lose records); RemoveEndpoint does that once
// the Docker engine confirms the endpoint is gone. Objects without our marks
// are never touched.
func (d *Dataplane) Reconcile(want map[string]Endpoint) (ReconcileResult, error) {
	var res ReconcileResult
	var errs []error
	links, err := d.OurLinks()
	if err != nil {
		return res, err
	}
	type rkey struct {
		link int
		dst  string
	}
	wantRoutes := map[rkey]*netlink.Route{}
	owned := map[int]bool{}
	for name, id := range links {
		ep, ok := want[id]
		if !ok || ep.HostIface != name {
			continue
		}
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			continue
		}
		owned[l.Attrs().Index] = true
		for _, a := range ep.Addrs {
			r := hostRoute(l.Attrs().Index, a)
			wantRoutes[rkey{l.Attrs().Index, r.Dst.String()}] = r
		}
	}
	have, err := OurRoutes()
	if err != nil {
		return res, err
	}
	seen := map[rkey]bool{}
	for _, r := range have {
		if r.Dst == nil {
			continue
		}
		k := rkey{r.LinkIndex, r.Dst.String()}
		if _, ok := wantRoutes[k]; ok {
			seen[k] = true
			continue
		}
		if !owned[r.LinkIndex] {
			continue // a veth of no wanted endpoint, or another node's (several daemons in one namespace, in tests)
		}
		if err := netlink.RouteDel(&r); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove stale route %s: %w", r.Dst, err))
		} else {
			res.RoutesRemoved++
		}
	}
	for k, r := range wantRoutes {
		if seen[k] {
			continue
		}
		if err := netlink.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("restore route %s: %w", r.Dst, err))
		} else {
			res.RoutesAdded++
		}
	}
	return res, errors.Join(errs...)
}
