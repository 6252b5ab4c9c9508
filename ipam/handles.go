package ipam

import (
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
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

// decodeHandle reads a handle record; records written before states existed
// are empty and come back with State "" (treated as bound to whichever
// endpoint record holds the address).
func decodeHandle(v []byte) (HandleRecord, error) {
	var r HandleRecord
	if t := strings.TrimSpace(string(v)); t == "" || t[0] != '{' {
		return r, nil // written before records had values
	}
	err := json.Unmarshal(v, &r)
	return r, err
}

// HandleFor names a Docker allocation after the endpoint's MAC, which Docker
// sends with RequestAddress (RequiresMACAddress) and again with
// CreateEndpoint; the handle key also carries the host, so two hosts never
// share a handle even with the same MAC.
func HandleFor(mac string) string {
	m := strings.ToLower(strings.NewReplacer(":", "", "-", "", ".", "").Replace(strings.TrimSpace(mac)))
	if m == "" {
		return "docker.anon"
	}
	return "docker." + SanitizeHandle(m)
}

// AdoptedHandle is the handle of an endpoint rebuilt from the kernel after
// its records were lost.
func AdoptedHandle(endpointID string) string {
	return "adopted." + SanitizeHandle(abbrevID(endpointID))
}

// SanitizeHandle makes a handle ID safe as a key segment.
func SanitizeHandle(h string) string { return strings.NewReplacer("/", "_", " ", "_").Replace(h) }

// HandleKey is where host's allocation of ip to handle is recorded.
func HandleKey(host, handle string, ip netip.Addr) string {
	return HandlePrefix(host, handle) + ip.String()
}

// HandlePrefix holds every allocation of host's handle.
func HandlePrefix(host, handle string) string {
	return datastore.HandlesPrefix + host + "/" + handle + "/"
}

// HostHandlesPrefix holds every allocation host made.
func HostHandlesPrefix(host string) string { return datastore.HandlesPrefix + host + "/" }

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
		return datastore.HandlesPrefix + h.Handle + "/" + h.IP.String()
	}
	return HandleKey(h.Host, h.Handle, h.IP)
}

// ParseHandleKey splits a handle key: handles/<host>/<handle>/<ip>, or the
// older handles/<handle>/<ip>.
func ParseHandleKey(key string) (HandleRef, bool) {
	rest, ok := strings.CutPrefix(key, datastore.HandlesPrefix)
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
