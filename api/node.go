package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Node is one host running the daemon, stored at datastore.Prefix+"nodes/"+Name.
// The daemon writes it when it starts with new settings and when it stops
// (LastSeen); whether its daemon is alive is its claim (NodeClaim, on an
// etcd lease the daemon keeps alive), not this record; calicoctl reads it for `get nodes` and `node status`, and a user may
// create, change or delete it.
type Node struct {
	Name string `json:"name"`
	// IPv4Address and IPv6Address are the host's addresses with their prefix
	// length ("10.0.0.1/24"), as autodetected or given with IP / IP6.
	IPv4Address netip.Prefix `json:"ipv4Address,omitzero"`
	IPv6Address netip.Prefix `json:"ipv6Address,omitzero"`
	// LastSeen is when the daemon last wrote the record (started with new
	// settings, or stopped); older daemons also refreshed it every 5 s.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	// Version is the daemon's version (api.Version of its build).
	Version string `json:"version,omitempty"`
	// Encapsulations are what the node's kernel can carry between hosts
	// (EncapsulationVXLAN, EncapsulationIPIP), as its daemon probed them at
	// start; see HasEncapsulation for records that predate the field.
	// An empty list (kept as [], never omitted) is a kernel with neither.
	Encapsulations []string `json:"encapsulations,omitzero"`
	// ASNumber is the node's own AS (spec.bgp.asNumber); 0: the
	// BGPConfiguration's.
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// RouteReflectorClusterID makes the node a route reflector for that
	// cluster (spec.bgp.routeReflectorClusterID).
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`
	// Labels are the node's metadata.labels (BGPPeer nodeSelector).
	Labels map[string]string `json:"labels,omitempty"`
	// Blocks are the blocks affine to the node, filled in for display by
	// calicoctl from the affinity records; never stored here.
	Blocks []string `json:"-"`
	// Live says its daemon holds its claim, filled in for display by
	// calicoctl from the claims; never stored here.
	Live bool `json:"-"`
	// addrErr is why a document's address could not be read (see
	// decodeNode); Validate reports it.
	addrErr error
}

// UnmarshalJSON also reads addresses stored without a prefix length.
func (n *Node) UnmarshalJSON(data []byte) error {
	type plain Node
	var raw struct {
		plain
		IPv4Address string `json:"ipv4Address"`
		IPv6Address string `json:"ipv6Address"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*n = Node(raw.plain)
	var err error
	if n.IPv4Address, err = ParseHostPrefix(raw.IPv4Address); err != nil {
		return fmt.Errorf("ipv4Address: %w", err)
	}
	if n.IPv6Address, err = ParseHostPrefix(raw.IPv6Address); err != nil {
		return fmt.Errorf("ipv6Address: %w", err)
	}
	return nil
}

// ResourceKind implements Resource.
func (n *Node) ResourceKind() *Kind { return NodeKind }

// ResourceName implements Resource.
func (n *Node) ResourceName() string { return n.Name }

// Normalize trims the name (the addresses are canonical once parsed: a
// bare address is its host prefix, "10.0.0.1" is 10.0.0.1/32).
func (n *Node) Normalize() {
	n.Name = strings.TrimSpace(n.Name)
}

func normalizeHostAddr(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.String()
	}
	return s
}

// Validate checks the name and that each address is of its family.
func (n *Node) Validate() error {
	if n.Name == "" {
		return errors.New("metadata.name: a node needs a name (its host name)")
	}
	if len(n.Name) > 253 || strings.ContainsAny(n.Name, "/ \t\n") {
		return fmt.Errorf("metadata.name %q: use a host name, without '/' or spaces", n.Name)
	}
	if n.addrErr != nil {
		return n.addrErr
	}
	if err := validateNodeBGP(n); err != nil {
		return err
	}
	for _, f := range []struct {
		field string
		val   netip.Prefix
		v6    bool
	}{{"spec.ipv4Address", n.IPv4Address, false}, {"spec.ipv6Address", n.IPv6Address, true}} {
		if !f.val.IsValid() {
			continue
		}
		if p := f.val; p.Addr().Is6() != f.v6 || p.Addr().Is4In6() {
			fam := "IPv4"
			if f.v6 {
				fam = "IPv6"
			}
			return fmt.Errorf("%s %q is not an %s address", f.field, p, fam)
		}
	}
	return nil
}

// parseNodeAddr reads a document's address field; what does not parse is
// kept, as an error, for Validate to report after the name.
func (n *Node) parseNodeAddr(field, val string, v6 bool) netip.Prefix {
	p, err := ParseHostPrefix(val)
	if err != nil && n.addrErr == nil {
		ex := "10.0.0.1/24"
		if v6 {
			ex = "fd00::1/64"
		}
		n.addrErr = fmt.Errorf("%s %q is not an address with a prefix length (e.g. %s)", field, strings.TrimSpace(val), ex)
	}
	return p
}

// NodeKind is the Node resource.
var NodeKind = &Kind{
	Name:    "Node",
	Aliases: []string{"nodes", "no", "nos"},
	Legacy:  "node",
	decode:  decodeNode,
	encode: func(r Resource, rv string) any {
		n := r.(*Node)
		d := &NodeDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "Node"},
			Metadata: NodeMeta{ObjectMeta: ObjectMeta{Name: n.Name, ResourceVersion: rv}, Labels: n.Labels},
			Spec:     NodeSpec{IPv4Address: PrefixText(n.IPv4Address), IPv6Address: PrefixText(n.IPv6Address)},
		}
		if n.ASNumber != 0 || n.RouteReflectorClusterID != "" {
			d.Spec.BGP = &NodeBGPSpec{ASNumber: n.ASNumber, RouteReflectorClusterID: n.RouteReflectorClusterID}
		}
		if !n.LastSeen.IsZero() || n.Version != "" {
			d.Status = &NodeStatus{Version: n.Version, Encapsulations: n.Encapsulations}
			if !n.LastSeen.IsZero() {
				d.Status.LastSeen = n.LastSeen.UTC().Format(time.RFC3339)
			}
		}
		return d
	},
}

// NodeDoc is the v3 document of a Node. Status is written by the daemon: it
// is printed, accepted on input (so printed documents can be applied back)
// and ignored there.
type NodeDoc struct {
	TypeMeta `json:",inline"`
	Metadata NodeMeta    `json:"metadata"`
	Spec     NodeSpec    `json:"spec"`
	Status   *NodeStatus `json:"status,omitempty"`
}

// NodeMeta is a Node's metadata: the common fields and its labels.
type NodeMeta struct {
	ObjectMeta `json:",inline"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// NodeSpec holds the host's addresses. BGP is Calico's spelling of the same
// addresses (spec.bgp.ipv4Address), accepted on input.
type NodeSpec struct {
	IPv4Address string       `json:"ipv4Address,omitempty"`
	IPv6Address string       `json:"ipv6Address,omitempty"`
	BGP         *NodeBGPSpec `json:"bgp,omitempty"`
}

// NodeBGPSpec is the node's BGP settings: its AS and route reflector
// cluster ID, and Calico's spelling of its addresses (accepted on input,
// printed as spec.ipv4Address).
type NodeBGPSpec struct {
	IPv4Address             string   `json:"ipv4Address,omitempty"`
	IPv6Address             string   `json:"ipv6Address,omitempty"`
	ASNumber                ASNumber `json:"asNumber,omitempty"`
	RouteReflectorClusterID string   `json:"routeReflectorClusterID,omitempty"`
}

// NodeStatus is what the daemon reports.
type NodeStatus struct {
	LastSeen string `json:"lastSeen,omitempty"`
	Version  string `json:"version,omitempty"`
	// Encapsulations are what the node's kernel can carry (vxlan, ipip).
	Encapsulations []string `json:"encapsulations,omitempty"`
}

// legacyNodeDoc is the v1 form: the addresses only under spec.bgp.
type legacyNodeDoc struct {
	TypeMeta `json:",inline"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		BGP *NodeBGPSpec `json:"bgp,omitempty"`
	} `json:"spec"`
}

func decodeNode(raw []byte, legacy bool) (Object, error) {
	if legacy {
		var d legacyNodeDoc
		if err := StrictUnmarshal(raw, &d, "a legacy (v1) node"); err != nil {
			return Object{}, err
		}
		n := &Node{Name: d.Metadata.Name}
		if b := d.Spec.BGP; b != nil {
			n.ASNumber, n.RouteReflectorClusterID = b.ASNumber, strings.TrimSpace(b.RouteReflectorClusterID)
			n.IPv4Address = n.parseNodeAddr("spec.ipv4Address", b.IPv4Address, false)
			n.IPv6Address = n.parseNodeAddr("spec.ipv6Address", b.IPv6Address, true)
		}
		return Object{Resource: n}, nil
	}
	var d NodeDoc
	if err := StrictUnmarshal(raw, &d, "a Node"); err != nil {
		return Object{}, err
	}
	v4, v6 := d.Spec.IPv4Address, d.Spec.IPv6Address
	if b := d.Spec.BGP; b != nil {
		for _, f := range []struct {
			name    string
			dst     *string
			fromBGP string
		}{{"ipv4Address", &v4, b.IPv4Address}, {"ipv6Address", &v6, b.IPv6Address}} {
			if f.fromBGP == "" {
				continue
			}
			if *f.dst != "" && normalizeHostAddr(*f.dst) != normalizeHostAddr(f.fromBGP) {
				return Object{}, fmt.Errorf("spec.%s %q and spec.bgp.%s %q differ: give the address once, as spec.%s", f.name, *f.dst, f.name, f.fromBGP, f.name)
			}
			*f.dst = f.fromBGP
		}
	}
	n := &Node{Name: d.Metadata.Name, Labels: d.Metadata.Labels}
	if b := d.Spec.BGP; b != nil {
		n.ASNumber, n.RouteReflectorClusterID = b.ASNumber, strings.TrimSpace(b.RouteReflectorClusterID)
	}
	n.IPv4Address = n.parseNodeAddr("spec.ipv4Address", v4, false)
	n.IPv6Address = n.parseNodeAddr("spec.ipv6Address", v6, true)
	return Object{Resource: n, ResourceVersion: d.Metadata.ResourceVersion}, nil
}
