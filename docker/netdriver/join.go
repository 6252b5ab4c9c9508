package netdriver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	c, _ := d.Capabilities()
	return &network.CapabilitiesResponse{Scope: c.Scope, ConnectivityScope: c.ConnectivityScope}, nil
}

// Capabilities is what GetCapabilities answers on the wire.
func (d *Driver) Capabilities() (*api.Capabilities, error) {
	// "local": Docker 23 removed the cluster store that "global" needs;
	// networks are shared between hosts through etcd instead.
	return &api.Capabilities{Scope: network.LocalScope, ConnectivityScope: network.GlobalScope, GwAllocChecker: true}, nil
}

// GwAllocCheck tells Docker 28 never to reserve a gateway address: calico
// containers route via link-local gateways the host answers for.
func (d *Driver) GwAllocCheck(*api.GwAllocCheckRequest) (*api.GwAllocCheckResponse, error) {
	return &api.GwAllocCheckResponse{SkipIPv4: true, SkipIPv6: true}, nil
}

// sandboxes knows which of this host's endpoints share a container (a
// sandbox) and the gateway index each has there. Docker serializes the
// Joins and Leaves of one sandbox; the lock covers Joins of different ones.
type sandboxes struct {
	mu     sync.Mutex
	seeded bool
	slots  map[string]slot // endpoint ID -> its place
}

type slot struct {
	key   string // SandboxKey
	index int
}

// seed loads the places recorded before a restart, once.
func (s *sandboxes) seed(ctx context.Context, d *Driver) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seeded {
		return nil
	}
	items, err := datastore.List[api.Endpoint](ctx, d.store, api.HostEndpointsPrefix(d.host))
	if err != nil {
		return fmt.Errorf("read this host's endpoints: %w", err)
	}
	if s.slots == nil {
		s.slots = map[string]slot{}
	}
	for _, it := range items {
		if e := it.Value; e.SandboxKey != "" && e.GatewayIndex > 0 {
			if _, ok := s.slots[e.ID]; !ok {
				s.slots[e.ID] = slot{key: e.SandboxKey, index: e.GatewayIndex}
			}
		}
	}
	s.seeded = true
	return nil
}

// reserve gives the endpoint the lowest index free in its sandbox (the
// same one again on a repeated Join) and reports how many other calico
// endpoints the sandbox has.
func (s *sandboxes) reserve(key, ep string) (index, others int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slots == nil {
		s.slots = map[string]slot{}
	}
	used := map[int]bool{}
	for id, sl := range s.slots {
		if sl.key == key && id != ep {
			used[sl.index] = true
			others++
		}
	}
	if sl, ok := s.slots[ep]; ok && sl.key == key {
		return sl.index, others, nil
	}
	for i := 1; i <= dataplane.MaxGatewayIndex; i++ {
		if !used[i] {
			s.slots[ep] = slot{key: key, index: i}
			return i, others, nil
		}
	}
	return 0, others, fmt.Errorf("the container already has %d calico interfaces, the most it can have", dataplane.MaxGatewayIndex)
}

func (s *sandboxes) release(ep string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.slots, ep)
}

func (d *Driver) Join(req *network.JoinRequest) (_ *network.JoinResponse, err error) {
	ctx, cancel := d.ctx()
	defer cancel()
	st := d.steps("Join")
	ep, rev, err := d.endpointRev(ctx, req.EndpointID)
	if err != nil {
		return nil, err
	}
	st.done("read-endpoint")
	addrs := addrsOf(ep)
	has4, has6 := false, false
	for _, a := range addrs {
		has4 = has4 || a.Addr().Is4()
		has6 = has6 || a.Addr().Is6()
	}
	index := 1
	if req.SandboxKey != "" {
		if index, err = d.placeInSandbox(ctx, ep, rev, req.SandboxKey, st); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				d.sbx.release(ep.ID) // Docker deletes the endpoint after a failed Join
			}
		}()
	}
	gw4, gw6 := dataplane.Gateways(index)
	if err := d.setupEndpoint(ctx, ep, index, has6, gw6, st); err != nil {
		return nil, err
	}
	d.joined()
	resp := &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: tempIfaceName(req.EndpointID), DstPrefix: IfacePrefix}}
	if has4 {
		// A connected route to this interface's own gateway: Docker finds
		// the interface for the default route through it.
		resp.Gateway = gw4.String()
		resp.StaticRoutes = append(resp.StaticRoutes, &network.StaticRoute{Destination: netip.PrefixFrom(gw4, 32).String(), RouteType: 1})
	}
	if has6 {
		// Only with an IPv6 address: a gateway on a container without
		// IPv6 breaks it. Every interface's fe80::/64 matches a link-local
		// gateway, so a second interface pins its own with a /128.
		resp.GatewayIPv6 = gw6.String()
		if index > 1 {
			resp.StaticRoutes = append(resp.StaticRoutes, &network.StaticRoute{Destination: netip.PrefixFrom(gw6, 128).String(), RouteType: 1})
		}
	}
	d.log.Info("endpoint joined", append([]any{"endpoint", req.EndpointID, "hostIface", ep.HostIface, "sandbox", req.SandboxKey, "gatewayIndex", index}, st.log()...)...)
	return resp, nil
}

// placeInSandbox gives the endpoint its gateway index in its container and
// records both in its record (read at revision rev).
func (d *Driver) placeInSandbox(ctx context.Context, ep *api.Endpoint, rev int64, key string, st *steps) (int, error) {
	if err := d.sbx.seed(ctx, d); err != nil {
		return 0, err
	}
	index, _, err := d.sbx.reserve(key, ep.ID)
	if err != nil {
		return 0, err
	}
	if err := d.recordSandbox(ctx, ep, rev, key, index); err != nil {
		d.sbx.release(ep.ID)
		return 0, err
	}
	st.done("record-sandbox")
	return index, nil
}

// setupEndpoint makes the endpoint's veth and waits until its policy is
// enforced; on failure nothing of it is left.
func (d *Driver) setupEndpoint(ctx context.Context, ep *api.Endpoint, index int, has6 bool, gw6 netip.Addr, st *steps) error {
	addrs := addrsOf(ep)
	if has6 {
		if err := d.dp.EnableForwarding(true); err != nil {
			return err
		}
		st.done("forwarding6")
	}
	if waited, err := d.reap.waitGone(ctx, ep.HostIface); err != nil {
		return fmt.Errorf("an earlier veth %s is still being removed: %w", ep.HostIface, err)
	} else if waited {
		st.done("wait-left-veth")
	}
	dpe := dataplane.Endpoint{ID: ep.ID, HostIface: ep.HostIface, TempIface: tempIfaceName(ep.ID), Addrs: addrs, MTU: d.mtu(), Trace: st.note}
	if err := d.dp.SetupEndpoint(dpe); err != nil {
		return err
	}
	st.done("veth")
	if has6 && index > 1 {
		if err := dataplane.AddGatewayAddress(ep.HostIface, gw6); err != nil {
			_ = d.dp.TeardownEndpoint(ep.HostIface, addrs)
			return err
		}
		st.done("gateway6")
	}
	if d.policy != nil {
		if err := d.policy.EndpointJoined(ctx, *ep); err != nil {
			// Without its policy the endpoint passes nothing: undo and say so.
			_ = d.dp.TeardownEndpoint(ep.HostIface, addrs)
			return fmt.Errorf("apply network policy for the endpoint: %w", err)
		}
		st.done("policy")
	}
	return nil
}

// recordSandbox notes the endpoint's container and gateway index in its
// record, for the routes between the networks of one container and for
// the index after a restart. The record was read at rev: one
// compare-and-swap on that revision, and the read-modify-write loop only
// if it changed since.
func (d *Driver) recordSandbox(ctx context.Context, ep *api.Endpoint, rev int64, key string, index int) error {
	if ep.SandboxKey == key && ep.GatewayIndex == index {
		return nil
	}
	k := api.EndpointKey(d.host, ep.ID)
	next := *ep
	next.SandboxKey, next.GatewayIndex = key, index
	if rev > 0 {
		res, err := d.store.CAS(ctx, []datastore.Cond{datastore.Unchanged(k, rev)}, []datastore.Op{datastore.Put(k, next)})
		if err == nil && res.Succeeded {
			return nil
		}
		if err != nil && !errors.Is(err, datastore.ErrUncertain) {
			return fmt.Errorf("record the sandbox of endpoint %s: %w", short(ep.ID), err)
		}
	}
	err := datastore.Update(ctx, d.store, k, func(cur *api.Endpoint) (*api.Endpoint, error) {
		if cur == nil {
			return nil, fmt.Errorf("endpoint %s is not known on host %s", short(ep.ID), d.host)
		}
		if cur.SandboxKey == key && cur.GatewayIndex == index {
			return nil, datastore.ErrNoChange
		}
		cur.SandboxKey, cur.GatewayIndex = key, index
		return cur, nil
	})
	if err != nil {
		return fmt.Errorf("record the sandbox of endpoint %s: %w", short(ep.ID), err)
	}
	return nil
}

// Leave removes the endpoint's veth (the reaper deletes it after Leave has
// answered); its host routes go with it, so no datastore read is needed
// and Leave works while etcd is unreachable.
// Everything of the endpoint goes here (and again, if left, in
// DeleteEndpoint), never only in RevokeExternalConnectivity: after a live
// restore Docker does not send that.
func (d *Driver) Leave(req *network.LeaveRequest) error {
	st := d.steps("Leave")
	if err := d.removeVeth(HostIfaceName(req.EndpointID)); err != nil {
		return err
	}
	st.done("veth-delete")
	d.sbx.release(req.EndpointID)
	d.log.Info("endpoint left", append([]any{"endpoint", req.EndpointID}, st.log()...)...)
	return nil
}
