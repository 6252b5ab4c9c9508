package api

import (
	"net/netip"
	"time"
)

// GCReport is the garbage collector's last pass on a host, as the daemon
// reports it on /Calico.Status (calicoctl node status).
type GCReport struct {
	At        time.Time `json:"at"`
	Leader    bool      `json:"leader"`    // it also collects gone nodes' records
	Pending   int       `json:"pending"`   // garbage not yet due, or another host's to collect
	Collected []string  `json:"collected"` // what was released, and why
	// EngineChecked says the Docker engine answered, so endpoints it no
	// longer knows were looked for.
	EngineChecked bool `json:"engineChecked"`
	// Missing are this host's endpoints the engine did not list, removed
	// once missing from two passes and older than the grace period.
	Missing []GCMissing `json:"missing,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// GCMissing is an endpoint the engine no longer lists.
type GCMissing struct {
	Endpoint string    `json:"endpoint"`
	Since    time.Time `json:"since"`
}

// DaemonStatus is the daemon's answer to /Calico.Status on its network
// driver socket, which `calicoctl node status` shows.
type DaemonStatus struct {
	Node     string           `json:"node"`
	Routing  RoutingStatus    `json:"routing"`
	Peers    []Peer           `json:"peers"`
	Carriers []CarrierSupport `json:"carriers"`
	// GC is the garbage collector's last pass on this host.
	GC GCReport `json:"gc"`
	// Agents are the loops that turn the datastore into kernel state, each
	// with its last pass.
	Agents []AgentStatus `json:"agents,omitempty"`
	// Readiness is what /readyz answers (nil from older daemons).
	Readiness *Readiness `json:"readiness,omitempty"`
	// BGP is the speaker's state (nil: a daemon without one).
	BGP *BGPStatus `json:"bgp,omitempty"`
	// DataPath says whether the eBPF redirect path is on (nil: a daemon
	// without one).
	DataPath *DataPathStatus `json:"dataPath,omitempty"`
}

// DataPathStatus is the eBPF redirect path's state on a host.
type DataPathStatus struct {
	Redirect bool `json:"redirect"`
	// Reason says why it is off.
	Reason    string `json:"reason,omitempty"`
	Endpoints int    `json:"endpoints"` // veths it is on
	Uplinks   int    `json:"uplinks"`   // uplinks and tunnels it is on
	// Packets redirected into containers (of them, taken out of VXLAN by
	// the path), out of other interfaces (of them, put into VXLAN by the
	// path), and left to the kernel's path, since the daemon started.
	ToEndpoint   uint64 `json:"toEndpoint"`
	Decapsulated uint64 `json:"decapsulated"`
	Out          uint64 `json:"out"`
	Encapsulated uint64 `json:"encapsulated"`
	Passed       uint64 `json:"passed"`
}

// AgentStatus is one agent's passes (package agent).
type AgentStatus struct {
	Name        string    `json:"name"`
	LastPass    time.Time `json:"lastPass"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	TookMillis  int64     `json:"tookMillis"`
	Passes      uint64    `json:"passes"`
	Failures    uint64    `json:"failures"`
	LastError   string    `json:"lastError,omitempty"`
}

// RoutingStatus is the route syncer's last apply of the routes to other
// hosts' blocks.
type RoutingStatus struct {
	LastApply time.Time `json:"lastApply"`
	Routes    int       `json:"routes"`
	Skipped   []string  `json:"skipped,omitempty"`
	// Notes say where a pool's encapsulation is carried by another one
	// (IPIP by VXLAN where a kernel lacks ipip).
	Notes     []string `json:"notes,omitempty"`
	LastError string   `json:"lastError,omitempty"`
	Synced    bool     `json:"synced"`
}

// Peer is another node as this one sees it.
type Peer struct {
	Name       string       `json:"name"`
	IPv4       netip.Prefix `json:"ipv4,omitzero"` // the node's address with its prefix length
	IPv6       netip.Prefix `json:"ipv6,omitzero"`
	SameSubnet bool         `json:"sameSubnet"`
	// LastSeen is when the node's record was last written (its daemon
	// starting with new settings, or stopping); older daemons refreshed it
	// every 5 s.
	LastSeen time.Time `json:"lastSeen"`
	// Live says the node's daemon holds its claim (renewed every 5 s on an
	// etcd lease of 20 s): how liveness is judged.
	Live        bool      `json:"live,omitempty"`
	DaemonSince time.Time `json:"daemonSince,omitzero"` // when the live daemon claimed the name
}

// CarrierSupport says whether this kernel can carry a route mode.
type CarrierSupport struct {
	Mode      string `json:"mode"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// VersionInfo is the daemon's answer to /Calico.Version.
type VersionInfo struct {
	GitCommit string
	Version   string
}

// Readiness is the daemon's answer to /readyz, also shown by calicoctl
// node status: ready when every check passes.
type Readiness struct {
	Ready  bool         `json:"ready"`
	Checks []ReadyCheck `json:"checks"`
}

// ReadyCheck is one part of Readiness.
type ReadyCheck struct {
	Name   string `json:"name"` // datastore, sockets, dataplane
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"` // what is wrong, or what was checked
}
