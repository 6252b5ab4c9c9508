package api

// The datastore's key layout, in one place: every key the project reads or
// writes is built and parsed here (README.md, "Datastore layout"). Nothing
// else puts a key together by hand.

import (
	"net/netip"
	"strings"
)

// Prefix is the root of every key this project writes. Everything below it
// is JSON.
const Prefix = "/calico/libnetwork/v1/"

// Key prefixes and single keys, below Prefix.
const (
	PoolsPrefix    = Prefix + "pools/"      // IPPool by name
	BlocksPrefix   = Prefix + "blocks/"     // Block by CIDR ('/' as '-')
	AffinityPrefix = Prefix + "affinities/" // <host>/<block>: empty, the host's claim on a block
	HandlesPrefix  = Prefix + "handles/"    // <host>/<handle>/<ip>: HandleRecord
	NetworksPrefix = Prefix + "networks/"   // Network by Docker network ID
	// EndpointsPrefix holds Endpoint records by <host>/<endpoint id>.
	EndpointsPrefix = Prefix + "endpoints/"
	NodesPrefix     = Prefix + "nodes/" // Node by name
	// ClaimsPrefix holds each live daemon's claim on its node name
	// (NodeClaim), bound to the daemon's etcd lease.
	ClaimsPrefix = Prefix + "nodeclaims/"
	// SharedNetworksPrefix holds one SharedNetwork per network name.
	SharedNetworksPrefix = Prefix + "sharednets/"
	// Policy resources (Profile, NetworkPolicy and
	// GlobalNetworkPolicy as JSON), by name.
	ProfilesPrefix              = Prefix + "profiles/"
	NetworkPoliciesPrefix       = Prefix + "networkpolicies/"
	GlobalNetworkPoliciesPrefix = Prefix + "globalnetworkpolicies/"

	// GCLeaderKey is held (lease-bound, the holder's node name as a JSON
	// string) by the one daemon that collects the garbage of nodes that
	// are gone.
	GCLeaderKey = Prefix + "gc-leader"
	// IPAMConfigKey holds the IPAMConfiguration (absent: DefaultIPAMConfig).
	IPAMConfigKey = Prefix + "config/ipam"
	// DefaultsDoneKey marks that the default pools were created once for
	// this datastore.
	DefaultsDoneKey = Prefix + "config/default-pools-created"
	// FelixConfigKey holds the FelixConfiguration named default: how
	// containers may reach their own host.
	FelixConfigKey = Prefix + "config/felix"
	// BGPConfigKey holds the BGPConfiguration named default; while it is
	// absent BGP is off.
	BGPConfigKey = Prefix + "config/bgp"
	// BGPPeersPrefix holds BGPPeer records by name.
	BGPPeersPrefix = Prefix + "bgppeers/"
	// PingKey is read (count only) to check that etcd answers.
	PingKey = Prefix + "ping"
)

// escapeCIDR turns a CIDR into a key segment ("10.0.0.0/26" -> "10.0.0.0-26").
func escapeCIDR(cidr string) string { return strings.ReplaceAll(cidr, "/", "-") }

// unescapeCIDR reverses escapeCIDR.
func unescapeCIDR(seg string) string {
	i := strings.LastIndex(seg, "-")
	if i < 0 {
		return seg
	}
	return seg[:i] + "/" + seg[i+1:]
}

func parseCIDRSegment(seg string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(unescapeCIDR(seg))
	return p, err == nil
}

// nameUnder returns what follows prefix in key, when key is below it and
// that is one non-empty segment.
func nameUnder(key, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	return rest, true
}

// NameUnder is what follows prefix in key: the name of a record listed
// under one of the prefixes above, whatever it holds.
func NameUnder(key, prefix string) string { return strings.TrimPrefix(key, prefix) }

// PoolKey is where the pool name is stored.
func PoolKey(name string) string { return PoolsPrefix + name }

// ParsePoolKey returns the pool name of a PoolKey.
func ParsePoolKey(key string) (string, bool) { return nameUnder(key, PoolsPrefix) }

// BlockKey is where the block cidr is stored.
func BlockKey(cidr netip.Prefix) string { return BlocksPrefix + escapeCIDR(cidr.String()) }

// ParseBlockKey returns the block CIDR of a BlockKey.
func ParseBlockKey(key string) (netip.Prefix, bool) {
	seg, ok := nameUnder(key, BlocksPrefix)
	if !ok {
		return netip.Prefix{}, false
	}
	return parseCIDRSegment(seg)
}

// AffinityKey is host's claim on the block cidr (written with the block).
func AffinityKey(host string, cidr netip.Prefix) string {
	return HostAffinitiesPrefix(host) + escapeCIDR(cidr.String())
}

// HostAffinitiesPrefix holds every block claim of host.
func HostAffinitiesPrefix(host string) string { return AffinityPrefix + host + "/" }

// ParseAffinityKey splits an AffinityKey into its host and block.
func ParseAffinityKey(key string) (host string, cidr netip.Prefix, ok bool) {
	rest, found := strings.CutPrefix(key, AffinityPrefix)
	i := strings.LastIndex(rest, "/")
	if !found || i < 0 {
		return "", netip.Prefix{}, false
	}
	cidr, ok = parseCIDRSegment(rest[i+1:])
	return rest[:i], cidr, ok
}

// HandleKey is where host's allocation of ip to handle is recorded.
func HandleKey(host, handle string, ip netip.Addr) string {
	return HandlePrefix(host, handle) + ip.String()
}

// HandlePrefix holds every allocation of host's handle.
func HandlePrefix(host, handle string) string { return HostHandlesPrefix(host) + handle + "/" }

// HostHandlesPrefix holds every allocation host made.
func HostHandlesPrefix(host string) string { return HandlesPrefix + host + "/" }

// HandleRef is one handle record's key: host's handle holds IP. Host is ""
// for keys written before hosts were part of the key.
type HandleRef struct {
	Host   string
	Handle string
	IP     netip.Addr
}

// Key is the record's key.
func (h HandleRef) Key() string {
	if h.Host == "" {
		return HandlesPrefix + h.Handle + "/" + h.IP.String()
	}
	return HandleKey(h.Host, h.Handle, h.IP)
}

// ParseHandleKey splits a handle key: handles/<host>/<handle>/<ip>, or the
// older handles/<handle>/<ip>.
func ParseHandleKey(key string) (HandleRef, bool) {
	rest, ok := strings.CutPrefix(key, HandlesPrefix)
	if !ok {
		return HandleRef{}, false
	}
	parts := strings.Split(rest, "/")
	var ref HandleRef
	switch len(parts) {
	case 2:
		ref.Handle = parts[0]
	case 3:
		ref.Host, ref.Handle = parts[0], parts[1]
	default:
		return HandleRef{}, false
	}
	ip, err := netip.ParseAddr(parts[len(parts)-1])
	if err != nil || ref.Handle == "" {
		return HandleRef{}, false
	}
	ref.IP = ip
	return ref, true
}

// NetworkKey is where the Docker network id's record is stored.
func NetworkKey(id string) string { return NetworksPrefix + id }

// ParseNetworkKey returns the Docker network ID of a NetworkKey.
func ParseNetworkKey(key string) (string, bool) { return nameUnder(key, NetworksPrefix) }

// EndpointKey is where host's endpoint id is stored.
func EndpointKey(host, id string) string { return HostEndpointsPrefix(host) + id }

// HostEndpointsPrefix holds every endpoint of host.
func HostEndpointsPrefix(host string) string { return EndpointsPrefix + host + "/" }

// ParseEndpointKey splits an EndpointKey into its host and endpoint ID.
func ParseEndpointKey(key string) (host, id string, ok bool) {
	rest, found := strings.CutPrefix(key, EndpointsPrefix)
	host, id, ok = strings.Cut(rest, "/")
	if !found || !ok || host == "" || id == "" || strings.Contains(id, "/") {
		return "", "", false
	}
	return host, id, true
}

// NodeKey is where the Node name is stored.
func NodeKey(name string) string { return NodesPrefix + name }

// ParseNodeKey returns the node name of a NodeKey.
func ParseNodeKey(key string) (string, bool) { return nameUnder(key, NodesPrefix) }

// NodeClaimKey is where the live daemon's claim on node name is held.
func NodeClaimKey(name string) string { return ClaimsPrefix + name }

// ParseNodeClaimKey returns the node name of a NodeClaimKey.
func ParseNodeClaimKey(key string) (string, bool) { return nameUnder(key, ClaimsPrefix) }

// SharedNetworkKey is where the shared network name is stored.
func SharedNetworkKey(name string) string { return SharedNetworksPrefix + name }

// ProfileKey, NetworkPolicyKey and GlobalNetworkPolicyKey are where the
// policy resources of that name are stored.
func ProfileKey(name string) string             { return ProfilesPrefix + name }
func NetworkPolicyKey(name string) string       { return NetworkPoliciesPrefix + name }
func GlobalNetworkPolicyKey(name string) string { return GlobalNetworkPoliciesPrefix + name }

// ParseProfileKey, ParseNetworkPolicyKey and ParseGlobalNetworkPolicyKey
// return the resource name of such a key.
func ParseProfileKey(key string) (string, bool) { return nameUnder(key, ProfilesPrefix) }
func ParseNetworkPolicyKey(key string) (string, bool) {
	return nameUnder(key, NetworkPoliciesPrefix)
}
func ParseGlobalNetworkPolicyKey(key string) (string, bool) {
	return nameUnder(key, GlobalNetworkPoliciesPrefix)
}

// BGPPeerKey is where the BGPPeer named name is stored.
func BGPPeerKey(name string) string { return BGPPeersPrefix + name }

// ParseBGPPeerKey returns the name of the BGPPeer stored at key.
func ParseBGPPeerKey(key string) (string, bool) { return nameUnder(key, BGPPeersPrefix) }
