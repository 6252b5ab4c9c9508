// Package multinet keeps the routes inside containers attached to several
// calico networks. Such a container has one cali interface per network and
// one default route (on the interface Docker picks); without more, traffic
// to a peer of another of its networks would leave through the default
// interface with that network's address, and the peer's network policy
// would turn it away. So for every address of a peer of each of its
// networks the container gets a route through that network's interface and
// gateway, marked with the endpoint route protocol: the packet leaves with
// the right source address and each network's policy applies to it. The
// peers come from etcd (every host's endpoints), so the routes follow
// containers coming and going anywhere. Containers on one calico network
// get nothing here.
package multinet

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/policysync"
)

// Kernel applies one sandbox's routes.
type Kernel interface {
	ApplySandboxRoutes(nsPath string, want []dataplane.SandboxRoute) (dataplane.SandboxResult, error)
}

var prefixes = []string{api.EndpointsPrefix, api.NetworksPrefix}

// retryFor bounds the quick retries for a sandbox whose interfaces Docker
// has not moved in yet; the periodic resync covers anything later.
const (
	retryEvery = 50 * time.Millisecond
	retryFor   = 30 * time.Second
)

// Syncer mirrors endpoints and networks and applies the routes of this
// host's multi-network containers.
type Syncer struct {
	store *datastore.Store
	k     Kernel
	host  string
	log   *slog.Logger

	mu        sync.Mutex
	endpoints map[string]api.Endpoint // by key
	networks  map[string]api.Network  // by Docker network ID
	full      bool                    // the next pass re-applies every sandbox
	kick      agent.Kicker
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer

	// Owned by the worker.
	applied map[string]string    // sandbox key -> what was applied last
	pending map[string]time.Time // sandbox key -> first failed pass
	warned  map[string]bool
}

// New returns a syncer for host.
func New(store *datastore.Store, k Kernel, host string, log *slog.Logger) *Syncer {
	return &Syncer{store: store, k: k, host: host, log: log, endpoints: map[string]api.Endpoint{}, networks: map[string]api.Network{},
		kick: agent.NewKicker(), applied: map[string]string{}, pending: map[string]time.Time{}, warned: map[string]bool{}}
}

// Run mirrors etcd and applies until ctx ends; both loops are joined
// before it returns.
// The mirror only records and kicks; the passes, which enter containers'
// namespaces, run in a worker of their own so the mirror keeps following.
func (s *Syncer) Run(ctx context.Context, resync time.Duration) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m := agent.Mirrored{Name: "multinet-mirror", Store: s.store, Prefixes: prefixes, Model: s, Log: s.log,
			Options: datastore.MirrorOptions{Debounce: 10 * time.Millisecond, Resync: resync}}
		m.Run(ctx)
	}()
	worker := agent.Periodic{Name: "multinet", WaitFirst: true, Soon: retryEvery, Kick: s.kick, Observer: s.Observer, Log: s.log,
		Pass: func(context.Context) (bool, error) {
			if s.pass() {
				return true, errors.New("some containers' routes are not updated yet; retrying")
			}
			return false, nil
		}}
	worker.Run(ctx)
	wg.Wait()
}

func (s *Syncer) kickNow() { s.kick.Kick() }

// Reset, Put, Delete, Apply and Failed make the Syncer an agent.Model.
func (s *Syncer) Reset(kvs []datastore.KV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints, s.networks = map[string]api.Endpoint{}, map[string]api.Network{}
	for _, kv := range kvs {
		s.put(kv.Key, kv.Value)
	}
}

func (s *Syncer) Put(key string, val []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(key, val)
}

func (s *Syncer) put(key string, val []byte) {
	if strings.HasPrefix(key, api.EndpointsPrefix) {
		var e api.Endpoint
		if json.Unmarshal(val, &e) == nil {
			s.endpoints[key] = e
		}
	} else if id, ok := api.ParseNetworkKey(key); ok {
		var n api.Network
		if json.Unmarshal(val, &n) == nil {
			s.networks[id] = n
		}
	}
}

func (s *Syncer) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.endpoints, key)
	if id, ok := api.ParseNetworkKey(key); ok {
		delete(s.networks, id)
	}
}

func (s *Syncer) Apply(full bool) error {
	if full {
		s.mu.Lock()
		s.full = true
		s.mu.Unlock()
	}
	s.kickNow()
	return nil
}

func (s *Syncer) Failed(err error) {
	s.log.Warn("multi-network routes: cannot read etcd; keeping the current routes", "err", err)
}

// pass applies what changed (everything after a full sync); it reports
// whether a sandbox should be tried again soon.
func (s *Syncer) pass() bool {
	s.mu.Lock()
	want := Desired(s.endpoints, s.networks, s.host)
	full := s.full
	s.full = false
	s.mu.Unlock()
	again := false
	keys := make([]string, 0, len(want)+len(s.applied))
	for k := range want {
		keys = append(keys, k)
	}
	for k := range s.applied {
		if _, ok := want[k]; !ok {
			keys = append(keys, k) // no longer several networks: remove ours
		}
	}
	for _, key := range keys {
		routes := want[key]
		fp := fingerprint(routes)
		if last, ok := s.applied[key]; ok && last == fp && !full {
			continue
		}
		res, err := s.k.ApplySandboxRoutes(key, routes)
		switch {
		case err == nil:
			delete(s.pending, key)
			if _, wanted := want[key]; wanted {
				s.applied[key] = fp
			} else {
				delete(s.applied, key)
			}
			if res.Added+res.Removed > 0 {
				s.log.Info("container routes to its networks' peers updated", "sandbox", key, "added", res.Added, "removed", res.Removed, "routes", len(routes))
			}
		case errors.Is(err, fs.ErrNotExist):
			// The container is gone (its records follow), unless its veths
			// are still here: then this daemon cannot see the namespace (a
			// managed plugin has no /var/run/docker/netns), and says so.
			delete(s.applied, key)
			delete(s.pending, key)
			if len(routes) > 0 && dataplane.LinkExists(routes[0].HostIface) && !s.warned[key] {
				s.warned[key] = true
				s.log.Warn("cannot open a running container's network namespace: its traffic to the peers of its other calico networks leaves through its default interface (run the daemon on the host, not as a managed plugin, for containers on several networks)", "sandbox", key, "err", err)
			}
		default:
			first, ok := s.pending[key]
			if !ok {
				first = time.Now()
				s.pending[key] = first
			}
			delete(s.applied, key)
			if time.Since(first) < retryFor {
				again = true
			} else if errors.Is(err, dataplane.ErrInterfaceNotInSandbox) {
				s.log.Debug("container interface still not in its sandbox", "sandbox", key, "err", err)
			} else {
				s.log.Warn("cannot update a container's routes to its networks' peers", "sandbox", key, "err", err)
			}
		}
	}
	return again
}

func fingerprint(rs []dataplane.SandboxRoute) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

// Desired computes, for each sandbox of host holding two or more calico
// endpoints, a route to every address of every peer of each of its
// networks (on any host) through that network's interface. Networks are
// matched by the name policy knows them by, so a network shared between
// hosts is one network.
func Desired(endpoints map[string]api.Endpoint, networks map[string]api.Network, host string) map[string][]dataplane.SandboxRoute {
	groups := map[string][]api.Endpoint{}
	byNet := map[string][]api.Endpoint{}
	for _, e := range endpoints {
		if e.ID == "" {
			continue
		}
		name := policysync.NetworkName(networks[e.NetworkID], e.NetworkID)
		byNet[name] = append(byNet[name], e)
		if e.Host == host && e.SandboxKey != "" && e.HostIface != "" {
			groups[e.SandboxKey] = append(groups[e.SandboxKey], e)
		}
	}
	out := map[string][]dataplane.SandboxRoute{}
	for key, members := range groups {
		if len(members) < 2 {
			continue
		}
		mine := map[string]bool{}
		for _, m := range members {
			mine[m.ID] = true
		}
		var routes []dataplane.SandboxRoute
		for _, m := range members {
			gw4, gw6 := dataplane.Gateways(m.GatewayIndex)
			own4, own6 := m.IPv4.Addr(), m.IPv6.Addr()
			for _, p := range byNet[policysync.NetworkName(networks[m.NetworkID], m.NetworkID)] {
				if mine[p.ID] {
					continue
				}
				if a := p.IPv4.Addr(); a.IsValid() && own4.IsValid() {
					routes = append(routes, dataplane.SandboxRoute{Dst: netip.PrefixFrom(a, 32), HostIface: m.HostIface, Gateway: gw4})
				}
				if a := p.IPv6.Addr(); a.IsValid() && own6.IsValid() {
					routes = append(routes, dataplane.SandboxRoute{Dst: netip.PrefixFrom(a, 128), HostIface: m.HostIface, Gateway: gw6})
				}
			}
		}
		out[key] = routes
	}
	return out
}
