package dataplane

import (
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/ownedroute"
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
	links, err := d.OurLinks()
	if err != nil {
		return ReconcileResult{}, err
	}
	var routes []*netlink.Route
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
			routes = append(routes, hostRoute(l.Attrs().Index, a))
		}
	}
	have, err := OurRoutes()
	if err != nil {
		return ReconcileResult{}, err
	}
	// Only routes on wanted endpoints' veths are ours to change: the others
	// belong to a veth of no wanted endpoint, or to another node (several
	// daemons in one namespace, in tests).
	var mine []netlink.Route
	for _, r := range have {
		if r.Dst != nil && owned[r.LinkIndex] {
			mine = append(mine, r)
		}
	}
	r, err := ownedroute.Reconciler{Protocol: RouteProtocol}.Apply(routes, mine)
	return ReconcileResult{RoutesAdded: r.Added, RoutesRemoved: r.Removed}, err
}
