package api

import (
	"encoding/json"
	"strings"
	"time"
)

// HandleState is where an allocation stands in Docker's endpoint life. It
// tells a release that names only an address (Docker's ReleaseAddress)
// whether the address may still be freed.
type HandleState string

const (
	// StateAllocated: RequestAddress answered, no endpoint holds it yet. A
	// replayed RequestAddress gets it again; Docker's release frees it
	// (CreateEndpoint failed and Docker rolls back).
	StateAllocated HandleState = "allocated"
	// StateBound: CreateEndpoint recorded the endpoint that holds it. A
	// release naming only the address is refused: it is late or repeated.
	StateBound HandleState = "bound"
	// StateReleased: DeleteEndpoint removed the endpoint; Docker's
	// ReleaseAddress, which follows, frees it.
	StateReleased HandleState = "released"
)

// HandleRecord is the value stored at HandleKey: one allocation of a handle,
// written in the same transaction as the block that holds it.
type HandleRecord struct {
	Seq      uint64      `json:"seq"`
	State    HandleState `json:"state"`
	Endpoint string      `json:"endpoint,omitempty"`
	Since    time.Time   `json:"since"` // when State last changed
}

// DecodeHandleRecord reads a handle record; records written before states
// existed are empty and come back with State "" (treated as bound to
// whichever endpoint record holds the address).
func DecodeHandleRecord(v []byte) (HandleRecord, error) {
	var r HandleRecord
	if t := strings.TrimSpace(string(v)); t == "" || t[0] != '{' {
		return r, nil // written before records had values
	}
	err := json.Unmarshal(v, &r)
	return r, err
}
