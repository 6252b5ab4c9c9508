package api

import "time"

// Network is a Docker network created with the calico driver, persisted
// because Docker never replays CreateNetwork after it restarts.
type Network struct {
	ID         string            `json:"id"`
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
}
