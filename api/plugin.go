package api

// The Docker plugin sockets: their names, and the parts of Docker's plugin
// protocol newer than github.com/docker/go-plugins-helpers' types.

// Socket names inside the plugin dir: Docker finds the drivers by these.
const (
	NetworkSocket = "calico.sock"
	IPAMSocket    = "calico-ipam.sock"
)

// Capabilities is the network driver's GetCapabilities answer with the
// field Docker 28 added (the helpers' type predates it).
type Capabilities struct {
	Scope             string
	ConnectivityScope string
	// GwAllocChecker: Docker 28 asks GwAllocCheck before IPAM, so no
	// gateway address is reserved for calico networks.
	GwAllocChecker bool
}

// GwAllocCheckRequest and GwAllocCheckResponse are Docker 28's
// NetworkDriver.GwAllocCheck.
type GwAllocCheckRequest struct {
	Options map[string]interface{}
}

type GwAllocCheckResponse struct {
	SkipIPv4 bool
	SkipIPv6 bool
}
