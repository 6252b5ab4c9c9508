package api

import "time"

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
	ID        string    `json:"id"`
	NetworkID string    `json:"networkID"`
	Host      string    `json:"host"`
	IPv4      string    `json:"ipv4,omitempty"`
	IPv6      string    `json:"ipv6,omitempty"`
	MAC       string    `json:"mac"`
	HostIface string    `json:"hostIface"`
	CreatedAt time.Time `json:"createdAt"`
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
