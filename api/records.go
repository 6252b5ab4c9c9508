package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Network is a Docker network created with the calico driver, persisted
// because Docker never replays CreateNetwork after it restarts.
type Network struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`      // learnt from the Docker API after creation
	Published bool   `json:"published,omitempty"` // its SharedNetwork record was written or joined
	// Withdrawn: the network's shared record is gone (removed on another
	// host) and this host's copy is being removed; its removal must not
	// remove the shared record, which may by then be a new network's.
	Withdrawn  bool              `json:"withdrawn,omitempty"`
	IPv4Pools  []string          `json:"ipv4Pools,omitempty"`
	IPv6Pools  []string          `json:"ipv6Pools,omitempty"`
	EnableIPv6 bool              `json:"enableIPv6"`
	Options    map[string]string `json:"options,omitempty"`
	CreatedBy  string            `json:"createdBy"`
	CreatedAt  time.Time         `json:"createdAt"`
}

// Endpoint is one container's attachment to a network on one host.
type Endpoint struct {
	ID        string `json:"id"`
	NetworkID string `json:"networkID"`
	Host      string `json:"host"`
	// IPv4 and IPv6 are the container's addresses, as host prefixes
	// ("10.0.0.1/32"); the zero Prefix when it has none of that family.
	IPv4      netip.Prefix `json:"ipv4,omitzero"`
	IPv6      netip.Prefix `json:"ipv6,omitzero"`
	MAC       string       `json:"mac"`
	HostIface string       `json:"hostIface"`
	CreatedAt time.Time    `json:"createdAt"`
	// Handle is the IPAM handle its addresses are allocated to (the
	// allocation records name this endpoint as their holder).
	Handle string `json:"handle,omitempty"`
	// Adopted: rebuilt from the kernel after the datastore lost the
	// endpoint's record; NetworkID and MAC are filled in from the Docker
	// engine once it answers.
	Adopted bool `json:"adopted,omitempty"`
	// Labels are the container's org.projectcalico.label.* labels, prefix
	// stripped, learnt from the Docker API after the container starts;
	// LabelsKnown says that lookup is done.
	Labels      map[string]string `json:"labels,omitempty"`
	ContainerID string            `json:"containerID,omitempty"`
	LabelsKnown bool              `json:"labelsKnown,omitempty"`
	// SandboxKey is the container's network namespace (from Join) and
	// GatewayIndex the endpoint's place among its calico interfaces there
	// (1: 169.254.1.1; see dataplane.Gateways).
	SandboxKey   string `json:"sandboxKey,omitempty"`
	GatewayIndex int    `json:"gatewayIndex,omitempty"`
}

// UnmarshalJSON also reads addresses stored without a prefix length.
func (e *Endpoint) UnmarshalJSON(data []byte) error {
	type plain Endpoint
	var raw struct {
		plain
		IPv4 string `json:"ipv4"`
		IPv6 string `json:"ipv6"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*e = Endpoint(raw.plain)
	var err error
	if e.IPv4, err = ParseHostPrefix(raw.IPv4); err != nil {
		return fmt.Errorf("ipv4: %w", err)
	}
	if e.IPv6, err = ParseHostPrefix(raw.IPv6); err != nil {
		return fmt.Errorf("ipv6: %w", err)
	}
	return nil
}

// Prefixes are the endpoint's addresses with their prefix lengths, IPv4
// first.
func (e *Endpoint) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{e.IPv4, e.IPv6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// Addrs are the endpoint's addresses, IPv4 first.
func (e *Endpoint) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range e.Prefixes() {
		out = append(out, p.Addr())
	}
	return out
}

// ParseHostPrefix reads an address with its prefix length ("10.0.0.1/24"),
// or a bare address as its host prefix ("10.0.0.1" is 10.0.0.1/32); ""
// is the zero Prefix.
func ParseHostPrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", s)
	}
	return p, nil
}

// PrefixText is p as stored and printed: "" for the zero Prefix.
func PrefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// SharedNetwork is a calico network as every host sees it, by name: created
// on one host, the daemons on the others create it in their Docker too.
type SharedNetwork struct {
	Name        string            `json:"name"`
	IPv4        []Subnet          `json:"ipv4,omitempty"`
	IPv6        []Subnet          `json:"ipv6,omitempty"`
	EnableIPv6  bool              `json:"enableIPv6"`
	Options     map[string]string `json:"options,omitempty"`
	IPAMOptions map[string]string `json:"ipamOptions,omitempty"`
	CreatedBy   string            `json:"createdBy"`
	CreatedAt   time.Time         `json:"createdAt"`
}

// Subnet is one --subnet (and optional --ip-range) of a network.
type Subnet struct {
	Subnet  string `json:"subnet"`
	IPRange string `json:"ipRange,omitempty"`
}

// NodeClaim is a live daemon's claim on its node name, stored at
// NodeClaimKey on the daemon's etcd lease: another host's daemon is refused
// the name while it is held.
type NodeClaim struct {
	HostID string    `json:"hostID"`
	PID    int       `json:"pid"`
	Since  time.Time `json:"since"`
}
