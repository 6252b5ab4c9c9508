// Package bgp is the daemon's BGP speaker: an agent that mirrors the BGP
// resources, the nodes, the blocks and the endpoints, works out the peers
// this node should have and the routes it should announce (Desired, pure
// and tested without root), and applies them to an embedded GoBGP server
// (Speaker). It is off until a BGPConfiguration named default exists.
//
// It also installs what it learns for other nodes' blocks (Installable,
// pure; the agent applies it through an Installer), when the cluster's
// own sessions (the mesh or route reflectors) carry them: a plain route
// via a node on a directly connected subnet, behind the etcd route sync's
// route to the same block (package routing), which stays the one the
// kernel uses and the only one when BGP is off.
package bgp

import (
	"net/netip"
	"sort"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// Peer types, as calicoctl node status names them (Calico's words, and
// one of ours for the peerings a route reflector layout makes).
const (
	TypeMesh           = "node-to-node mesh"
	TypeGlobal         = "global"
	TypeNodeSpecific   = "node specific"
	TypeRouteReflector = "route reflector"
	TypeRRClient       = "route reflector client"
)

// Mesh peers' timers (Calico's BIRD defaults).
const (
	meshKeepalive = 30 * time.Second
	meshRestart   = 120 * time.Second
)

// State is what the speaker knows from the datastore.
type State struct {
	Config    *api.BGPConfig // nil: BGP is off
	ConfigErr string         // why the stored configuration is not used
	Peers     map[string]api.BGPPeer
	Nodes     map[string]api.Node
	Pools     map[string]api.IPPool   // by key
	Blocks    map[netip.Prefix]string // block -> affinity host
	Endpoints map[string]api.Endpoint // by key
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Peers: map[string]api.BGPPeer{}, Nodes: map[string]api.Node{}, Pools: map[string]api.IPPool{}, Blocks: map[netip.Prefix]string{}, Endpoints: map[string]api.Endpoint{}}
}

// PeerSpec is one BGP session this node should have.
type PeerSpec struct {
	Name      string // the other node's or the BGPPeer's name
	Type      string
	Addr      netip.Addr
	Port      uint16
	ASN       uint32
	RRClient  bool   // we reflect routes to it
	ClusterID string // our cluster ID when we reflect
	// Password names the MD5 password's file ("" none).
	PasswordFile        string
	KeepOriginalNextHop bool
	Keepalive           time.Duration
	RestartTime         time.Duration
}

// Announcement is a route this node originates.
type Announcement struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}

// Plan is the desired state of the speaker.
type Plan struct {
	Enabled    bool
	Off        string // why not enabled
	ASN        uint32
	RouterID   netip.Addr
	Listen     []netip.Addr
	ListenPort int
	LogLevel   string
	Peers      []PeerSpec
	Announce   []Announcement
}

// Desired works out the plan of host; dataDir holds the password files.
func (st *State) Desired(host, dataDir string) Plan {
	if st.Config == nil {
		if st.ConfigErr != "" {
			return Plan{Off: "BGPConfiguration default is not valid: " + st.ConfigErr}
		}
		return Plan{Off: "no BGPConfiguration named default (calicoctl apply one to turn BGP on)"}
	}
	me, ok := st.Nodes[host]
	if !ok {
		return Plan{Off: "this node has no Node record yet"}
	}
	if !me.IPv4Address.IsValid() {
		// A BGP router ID is an IPv4 address; Calico asks for one too.
		return Plan{Off: "this node has no IPv4 address (its BGP router ID): give it one (IP, or calicoctl apply a Node with spec.bgp.ipv4Address)"}
	}
	c := st.Config
	p := Plan{Enabled: true, ASN: st.asOf(me), RouterID: me.IPv4Address.Addr(), ListenPort: c.ListenPort, LogLevel: c.LogSeverityScreen}
	for _, a := range []netip.Prefix{me.IPv4Address, me.IPv6Address} {
		if a.IsValid() {
			p.Listen = append(p.Listen, a.Addr())
		}
	}
	p.Peers = st.peers(host, me, dataDir)
	p.Announce = st.announcements(host, me)
	return p
}

func (st *State) asOf(n api.Node) uint32 {
	if n.ASNumber != 0 {
		return uint32(n.ASNumber)
	}
	return uint32(st.Config.ASNumber)
}

// peers: the cluster's own sessions (mesh or route reflectors) and then
// the BGPPeers that apply to this node; an explicit BGPPeer replaces a
// cluster session to the same address.
func (st *State) peers(host string, me api.Node, dataDir string) []PeerSpec {
	mine := map[netip.Addr]bool{me.IPv4Address.Addr(): true}
	if me.IPv6Address.IsValid() {
		mine[me.IPv6Address.Addr()] = true
	}
	byAddr := map[netip.Addr]PeerSpec{}
	for _, ps := range st.clusterPeers(host, me) {
		if !mine[ps.Addr] { // another node's record claiming this node's address
			byAddr[ps.Addr] = ps
		}
	}
	names := make([]string, 0, len(st.Peers))
	for name := range st.Peers {
		names = append(names, name)
	}
	sort.Strings(names) // two BGPPeers for one address: the first by name
	explicit := map[netip.Addr]bool{}
	for _, name := range names {
		bp := st.Peers[name]
		if !bp.Selects(host, me.Labels) {
			continue
		}
		ap, err := bp.AddrPort()
		if err != nil || mine[ap.Addr()] || explicit[ap.Addr()] {
			continue // a global peer that is this very node, or a second one
		}
		explicit[ap.Addr()] = true
		typ := TypeNodeSpecific
		if bp.Scope() == "global" {
			typ = TypeGlobal
		}
		ps := PeerSpec{Name: bp.Name, Type: typ, Addr: ap.Addr(), Port: ap.Port(), ASN: uint32(bp.ASNumber),
			KeepOriginalNextHop: bp.KeepOriginalNextHop, Keepalive: bp.Keepalive(), RestartTime: bp.RestartTime()}
		if bp.Password != nil {
			ps.PasswordFile = bp.Password.File(dataDir)
		}
		byAddr[ps.Addr] = ps
	}
	out := make([]PeerSpec, 0, len(byAddr))
	for _, ps := range byAddr {
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// clusterPeers: with the mesh on, every other node; with it off, a route
// reflector peers with every other node (its clients, and the other
// reflectors as plain peers) and every other node with the reflectors only.
func (st *State) clusterPeers(host string, me api.Node) []PeerSpec {
	mesh := st.Config.MeshEnabled()
	iReflect := me.RouteReflectorClusterID != ""
	var out []PeerSpec
	for name, n := range st.Nodes {
		if name == host {
			continue
		}
		theyReflect := n.RouteReflectorClusterID != ""
		typ := TypeMesh
		switch {
		case mesh:
		case iReflect && !theyReflect:
			typ = TypeRRClient
		case theyReflect:
			typ = TypeRouteReflector
		default:
			continue // neither reflects: no session without the mesh
		}
		for _, pair := range [][2]netip.Prefix{{me.IPv4Address, n.IPv4Address}, {me.IPv6Address, n.IPv6Address}} {
			if !pair[0].IsValid() || !pair[1].IsValid() {
				continue
			}
			ps := PeerSpec{Name: name, Type: typ, Addr: pair[1].Addr(), Port: uint16(st.Config.ListenPort), ASN: st.asOf(n),
				Keepalive: meshKeepalive, RestartTime: meshRestart}
			if typ == TypeRRClient {
				ps.RRClient, ps.ClusterID = true, me.RouteReflectorClusterID
			}
			out = append(out, ps)
		}
	}
	return out
}

// announcements: each of host's blocks, and a host route for each address
// of host's endpoints that lies in another host's block (a borrowed one),
// next hop the host's own address of the family.
func (st *State) announcements(host string, me api.Node) []Announcement {
	hop := func(p netip.Prefix) (netip.Addr, bool) {
		a := me.IPv4Address
		if p.Addr().Is6() {
			a = me.IPv6Address
		}
		return a.Addr(), a.IsValid()
	}
	seen := map[netip.Prefix]bool{}
	var out []Announcement
	add := func(p netip.Prefix) {
		if nh, ok := hop(p); ok && !seen[p] {
			seen[p] = true
			out = append(out, Announcement{Prefix: p, NextHop: nh})
		}
	}
	for b, owner := range st.Blocks {
		if owner == host {
			add(b)
		}
	}
	for _, ep := range st.Endpoints {
		if ep.Host != host {
			continue
		}
		for _, a := range ep.Addrs() {
			if owner, ok := st.blockOwner(a); ok && owner != host {
				add(netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.String() < out[j].Prefix.String() })
	return out
}

// blockOwner finds the block holding a (the most specific one).
func (st *State) blockOwner(a netip.Addr) (string, bool) {
	best, owner := -1, ""
	for b, o := range st.Blocks {
		if b.Contains(a) && b.Bits() > best {
			best, owner = b.Bits(), o
		}
	}
	return owner, best >= 0
}
