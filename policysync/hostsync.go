package policysync

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// HostEnforcer is the kernel side of host protection.
type HostEnforcer interface {
	Apply(r nftpolicy.HostRules, verify bool) (bool, error)
}

// HostSync keeps this host's protection table in line with the registered
// nodes (VXLAN is accepted from their addresses only) and the
// FelixConfiguration (what containers may open to their host). It runs
// whether network policy is on or off.
type HostSync struct {
	store  *datastore.Store
	enf    HostEnforcer
	static nftpolicy.HostRules // the datastore's ports and endpoints, VXLAN's port and VNI
	log    *slog.Logger

	mu       sync.Mutex
	nodes    map[string]netip.Addr // by key
	felix    api.FelixConfig       // the last good one
	felixBad string                // the problem last logged, so it is logged once
	badNodes map[string]string
	ready    chan struct{}
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
}

// NewHostSync returns a syncer; static holds what comes from the daemon's
// own configuration (ClosedPorts, ClosedEndpoints, VXLANPort, VXLANVNI).
func NewHostSync(store *datastore.Store, enf HostEnforcer, static nftpolicy.HostRules, log *slog.Logger) *HostSync {
	return &HostSync{store: store, enf: enf, static: static, log: log, nodes: map[string]netip.Addr{},
		felix: api.DefaultFelixConfig(), badNodes: map[string]string{}, ready: make(chan struct{})}
}

// Ready is closed once the first snapshot is enforced (or failed to be).
func (h *HostSync) Ready() <-chan struct{} { return h.ready }

// Run mirrors etcd until ctx ends. While etcd is unreachable the kernel
// keeps the last applied table.
func (h *HostSync) Run(ctx context.Context, resync time.Duration) {
	a := agent.Mirrored{Name: "hostprotect", Store: h.store, Prefixes: []string{api.NodesPrefix, api.FelixConfigKey}, Model: h, Observer: h.Observer, Log: h.log,
		Options: datastore.MirrorOptions{Debounce: 10 * time.Millisecond, Resync: resync, Ready: func() { close(h.ready) }}}
	a.Run(ctx)
}

// Reset, Put, Delete, Apply and Failed make the HostSync an agent.Model.
func (h *HostSync) Reset(kvs []datastore.KV) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodes = map[string]netip.Addr{}
	felixSeen := false
	for _, kv := range kvs {
		if kv.Key == api.FelixConfigKey {
			felixSeen = true
		}
		h.putLocked(kv.Key, kv.Value)
	}
	if !felixSeen {
		h.felix, h.felixBad = api.DefaultFelixConfig(), ""
	}
}

func (h *HostSync) Put(key string, val []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.putLocked(key, val)
}

func (h *HostSync) putLocked(key string, val []byte) {
	if key == api.FelixConfigKey {
		c, err := api.DecodeStoredFelixConfig(val)
		if err != nil {
			if msg := err.Error(); msg != h.felixBad {
				h.log.Warn("FelixConfiguration default is invalid: keeping the last good one in force",
					"resource", "FelixConfiguration default", "err", msg, "inForce", string(h.felix.DefaultEndpointToHostAction))
				h.felixBad = msg
			}
			return
		}
		h.felix, h.felixBad = c, ""
		return
	}
	name := nodeName(key)
	var n api.Node
	if err := json.Unmarshal(val, &n); err != nil {
		h.noteBadNode(name, fmt.Sprintf("undecodable: %v", err))
		delete(h.nodes, key)
		return
	}
	p := n.IPv4Address
	if !p.IsValid() || !p.Addr().Is4() {
		if p.IsValid() {
			h.noteBadNode(name, fmt.Sprintf("ipv4Address %q is not an IPv4 address", n.IPv4Address))
		}
		delete(h.nodes, key)
		return
	}
	delete(h.badNodes, name)
	h.nodes[key] = p.Addr()
}

// nodeName names a node record in messages: by its key's name.
func nodeName(key string) string {
	if n, ok := api.ParseNodeKey(key); ok {
		return n
	}
	return key
}

func (h *HostSync) noteBadNode(name, why string) {
	if h.badNodes[name] != why {
		h.log.Warn("node record ignored: VXLAN from it is not accepted", "node", name, "reason", why)
		h.badNodes[name] = why
	}
}

func (h *HostSync) Delete(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if key == api.FelixConfigKey {
		h.felix, h.felixBad = api.DefaultFelixConfig(), ""
		return
	}
	delete(h.nodes, key)
	delete(h.badNodes, nodeName(key))
}

// Rules is what the table should hold now.
func (h *HostSync) Rules() nftpolicy.HostRules {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.static
	r.DropToHost = h.felix.DefaultEndpointToHostAction == api.ActionDrop
	for _, p := range h.felix.EndpointToHostAllowedPorts {
		r.AllowedPorts = append(r.AllowedPorts, nftpolicy.HostPort{Proto: ipProto(p.Protocol), Port: uint16(p.Port)})
	}
	for _, a := range h.nodes {
		r.Nodes = append(r.Nodes, a)
	}
	return r
}

func ipProto(name string) uint8 {
	switch strings.ToUpper(name) {
	case "UDP":
		return unix.IPPROTO_UDP
	case "SCTP":
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

// Apply applies; a full apply also checks the kernel's table.
func (h *HostSync) Apply(full bool) error {
	r := h.Rules()
	changed, err := h.enf.Apply(r, full)
	if err != nil {
		h.log.Warn("host protection not applied; the table in the kernel stays as it was", "err", err)
		return err
	}
	if changed {
		h.log.Info("host protection applied", "rules", r.String())
	}
	return nil
}

func (h *HostSync) Failed(err error) {
	h.log.Warn("host protection: cannot read etcd; keeping the current table", "err", err)
}
