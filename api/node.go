package api

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Node is one host running the daemon, stored at datastore.Prefix+"nodes/"+Name.
// The daemon writes it at start-up and refreshes LastSeen as a heartbeat;
// calicoctl reads it for `get nodes` and `node status`, and a user may
// create, change or delete it.
type Node struct {
	Name string `json:"name"`
	// IPv4Address and IPv6Address are the host's addresses with their prefix
	// length ("10.0.0.1/24"), as autodetected or given with IP / IP6.
	IPv4Address string `json:"ipv4Address,omitempty"`
	IPv6Address string `json:"ipv6Address,omitempty"`
	// LastSeen is when the daemon last refreshed the record.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	// Version is the daemon's version (api.Version of its build).
	Version string `json:"version,omitempty"`
	// Blocks are the blocks affine to the node, filled in for display by
	// calicoctl from the affinity records; never stored here.
	Blocks []string `json:"-"`
}

// ResourceKind implements Resource.
func (n *Node) ResourceKind() *Kind { return NodeKind }

// ResourceName implements Resource.
func (n *Node) ResourceName() string { return n.Name }

// Normalize canonicalises the addresses ("10.0.0.1" -> "10.0.0.1/32").
func (n *Node) Normalize() {
	n.Name = strings.TrimSpace(n.Name)
	n.IPv4Address = normalizeHostAddr(n.IPv4Address)
	n.IPv6Address = normalizeHostAddr(n.IPv6Address)
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
	for _, f := range []struct {
		field, val string
		v6         bool
	}{{"spec.ipv4Address", n.IPv4Address, false}, {"spec.ipv6Address", n.IPv6Address, true}} {
		if f.val == "" {
			continue
		}
		p, err := netip.ParsePrefix(f.val)
		if err != nil {
			ex := "10.0.0.1/24"
			if f.v6 {
				ex = "fd00::1/64"
			}
			return fmt.Errorf("%s %q is not an address with a prefix length (e.g. %s)", f.field, f.val, ex)
		}
		if p.Addr().Is6() != f.v6 || p.Addr().Is4In6() {
			fam := "IPv4"
			if f.v6 {
				fam = "IPv6"
			}
			return fmt.Errorf("%s %q is not an %s address", f.field, f.val, fam)
		}
	}
	return nil
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
			Metadata: ObjectMeta{Name: n.Name, ResourceVersion: rv},
			Spec:     NodeSpec{IPv4Address: n.IPv4Address, IPv6Address: n.IPv6Address},
		}
		if !n.LastSeen.IsZero() || n.Version != "" {
			d.Status = &NodeStatus{Version: n.Version}
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
	Metadata ObjectMeta  `json:"metadata"`
	Spec     NodeSpec    `json:"spec"`
	Status   *NodeStatus `json:"status,omitempty"`
}

// NodeSpec holds the host's addresses. BGP is Calico's spelling of the same
// addresses (spec.bgp.ipv4Address), accepted on input.
type NodeSpec struct {
	IPv4Address string       `json:"ipv4Address,omitempty"`
	IPv6Address string       `json:"ipv6Address,omitempty"`
	BGP         *NodeBGPSpec `json:"bgp,omitempty"`
}

// NodeBGPSpec is accepted for documents written for Calico.
type NodeBGPSpec struct {
	IPv4Address string `json:"ipv4Address,omitempty"`
	IPv6Address string `json:"ipv6Address,omitempty"`
}

// NodeStatus is what the daemon reports.
type NodeStatus struct {
	LastSeen string `json:"lastSeen,omitempty"`
	Version  string `json:"version,omitempty"`
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
		if d.Spec.BGP != nil {
			n.IPv4Address, n.IPv6Address = d.Spec.BGP.IPv4Address, d.Spec.BGP.IPv6Address
		}
		return Object{Resource: n}, nil
	}
	var d NodeDoc
	if err := StrictUnmarshal(raw, &d, "a Node"); err != nil {
		return Object{}, err
	}
	n := &Node{Name: d.Metadata.Name, IPv4Address: d.Spec.IPv4Address, IPv6Address: d.Spec.IPv6Address}
	if b := d.Spec.BGP; b != nil {
		for _, f := range []struct {
			name    string
			dst     *string
			fromBGP string
		}{{"ipv4Address", &n.IPv4Address, b.IPv4Address}, {"ipv6Address", &n.IPv6Address, b.IPv6Address}} {
			if f.fromBGP == "" {
				continue
			}
			if *f.dst != "" && normalizeHostAddr(*f.dst) != normalizeHostAddr(f.fromBGP) {
				return Object{}, fmt.Errorf("spec.%s %q and spec.bgp.%s %q differ: give the address once, as spec.%s", f.name, *f.dst, f.name, f.fromBGP, f.name)
			}
			*f.dst = f.fromBGP
		}
	}
	return Object{Resource: n, ResourceVersion: d.Metadata.ResourceVersion}, nil
}
