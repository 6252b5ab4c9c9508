package api

import "time"

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
