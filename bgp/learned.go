package bgp

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// Learned is the speaker's best route for a prefix.
type Learned struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}

// Route is a learned route this node installs: Dst via the node Node's
// address Via, on a directly connected subnet.
type Route struct {
	Dst  netip.Prefix
	Via  netip.Addr
	Node string
}

func (r Route) String() string { return fmt.Sprintf("%s via %s (%s)", r.Dst, r.Via, r.Node) }

// UsesLearned says whether host installs learned routes, and why not: BGP
// on and the cluster's own sessions carrying the nodes' blocks (the mesh,
// or route reflectors with it off). External peers alone are not trusted
// with the cluster's routes.
func (st *State) UsesLearned(host string) (bool, string) {
	if st.Config == nil {
		return false, "BGP is off"
	}
	if me, ok := st.Nodes[host]; !ok || !me.IPv4Address.IsValid() {
		return false, "this node does not run BGP"
	}
	if st.Config.MeshEnabled() {
		return true, ""
	}
	for _, n := range st.Nodes {
		if n.RouteReflectorClusterID != "" {
			return true, ""
		}
	}
	return false, "the node-to-node mesh is off and no node is a route reflector"
}

// Installable picks, from the speaker's best routes, those host puts in
// its kernel (sorted by destination); see installable for which.
func (st *State) Installable(host string, learned []Learned) []Route {
	if ok, _ := st.UsesLearned(host); !ok {
		return nil
	}
	me := st.Nodes[host]
	var out []Route
	for _, l := range learned {
		if r, why := st.installable(host, me, l); why == "" {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Dst.String() < out[j].Dst.String() })
	return out
}

// installable says whether l is a route to another node's block (or an
// address it borrowed) that host can use as it is, and why not: inside one
// of the pools, clear of host's own blocks and endpoints, next hop another
// node's address on host's subnet, in a pool carried without
// encapsulation between the two (VXLAN and IPIP stay the route sync's),
// and, when etcd knows the block, held by that node.
func (st *State) installable(host string, me api.Node, l Learned) (Route, string) {
	pfx := l.Prefix.Masked()
	pool, ok := st.poolHolding(pfx)
	if !ok {
		return Route{}, "not in a pool"
	}
	for b, owner := range st.Blocks {
		if owner == host && pfx.Overlaps(b) && pfx.Bits() <= b.Bits() {
			return Route{}, "this node's own block " + b.String()
		}
	}
	if pfx.IsSingleIP() && st.endpointHere(host, pfx.Addr()) {
		return Route{}, "an address of this node's endpoint"
	}
	node, ok := st.nodeAt(host, l.NextHop)
	if !ok {
		return Route{}, fmt.Sprintf("next hop %s is no other node's address", l.NextHop)
	}
	mine := me.IPv4Address
	if pfx.Addr().Is6() {
		mine = me.IPv6Address
	}
	if !mine.IsValid() || !mine.Masked().Contains(l.NextHop) {
		return Route{}, fmt.Sprintf("next hop %s is not on this node's subnet", l.NextHop)
	}
	if pool.VXLANMode == api.EncapAlways || pool.IPIPMode == api.EncapAlways {
		return Route{}, fmt.Sprintf("pool %s is encapsulated (the route sync carries it)", pool.Name)
	}
	if owner, ok := st.Blocks[pfx]; ok && owner != node {
		return Route{}, fmt.Sprintf("etcd says %s is %s's block, not %s's", pfx, owner, node)
	}
	return Route{Dst: pfx, Via: l.NextHop, Node: node}, ""
}

// poolHolding is the pool p lies in.
func (st *State) poolHolding(p netip.Prefix) (api.IPPool, bool) {
	for _, pool := range st.Pools {
		c, err := netip.ParsePrefix(pool.CIDR)
		if err == nil && c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return pool, true
		}
	}
	return api.IPPool{}, false
}

// nodeAt is the node other than host whose address of a's family is a.
func (st *State) nodeAt(host string, a netip.Addr) (string, bool) {
	for name, n := range st.Nodes {
		if name == host {
			continue
		}
		if (n.IPv4Address.IsValid() && n.IPv4Address.Addr() == a) || (n.IPv6Address.IsValid() && n.IPv6Address.Addr() == a) {
			return name, true
		}
	}
	return "", false
}

// endpointHere says whether a is an address of one of host's endpoints.
func (st *State) endpointHere(host string, a netip.Addr) bool {
	for _, ep := range st.Endpoints {
		if ep.Host != host {
			continue
		}
		for _, x := range ep.Addrs() {
			if x == a {
				return true
			}
		}
	}
	return false
}
