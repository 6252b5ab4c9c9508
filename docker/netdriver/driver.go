// Package netdriver answers Docker's NetworkDriver calls by translating each
// request into datastore records and dataplane calls. Handlers are
// idempotent: Docker retries and replays them.
package netdriver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/docker/sharing"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// IPAM records which endpoint holds the addresses Docker's IPAM driver gave
// out (ipam.Allocator).
type IPAM interface {
	Bind(ctx context.Context, handle string, ips []netip.Addr, endpointID string, ops ...datastore.Op) error
	Unbind(ctx context.Context, handle string, ips []netip.Addr, endpointID string, ops ...datastore.Op) error
	Adopt(ctx context.Context, ip netip.Addr, handle, endpointID string) (string, error)
	ReleaseByHandle(ctx context.Context, handle string) (int, error)
	ReleaseEndpoint(ctx context.Context, handle string, ips []netip.Addr, endpointID, why string) (int, error)
}

// Policy is told of each endpoint as it is created, and again as it joins:
// Join answers only once the endpoint's policy is enforced, so its traffic
// is governed from its first packet.
type Policy interface {
	// EndpointCreated is told (it must not block) of each endpoint as its
	// record is written, to start computing its policy.
	EndpointCreated(ep api.Endpoint)
	EndpointJoined(ctx context.Context, ep api.Endpoint) error
}

// Docker's option keys.
const (
	optGeneric    = "com.docker.network.generic"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
	optEnableIPv4 = "com.docker.network.enable_ipv4"
	optInternal   = "com.docker.network.internal"
	// optOpen (-o open=true) lets every endpoint reach the network's
	// containers; by default only the same network may.
	optOpen = "open"

	// IfacePrefix is the host-side veth prefix and Docker's DstPrefix.
	IfacePrefix = "cali"
	tempPrefix  = "tmp"
	idChars     = 11
)

// Driver is the calico network driver for one host.
type Driver struct {
	store   *datastore.Store
	dp      *dataplane.Dataplane
	ipam    IPAM
	host    string
	mtu     func() int
	log     *slog.Logger
	timeout time.Duration
	changed func() // told (without blocking) when networks change
	policy  Policy
	joined  func()
	stepObs StepObserver
	reap    *reaper // left endpoints' veths, deleted after Leave answers (reaper.go)

	sbx sandboxes // which endpoints share a container (join.go)
}

// Config wires a driver.
type Config struct {
	Store     *datastore.Store
	Dataplane *dataplane.Dataplane
	IPAM      IPAM
	Host      string
	MTU       func() int // veth MTU for the next Join; nil: the kernel default
	Log       *slog.Logger
	// NetworksChanged is called after CreateNetwork and DeleteNetwork; it
	// must not block (the network syncer's Kick).
	NetworksChanged func()
	// Policy, when set, enforces network policy for joining endpoints.
	Policy Policy
	// EndpointJoined is called (it must not block) after each Join: the
	// label resolver's Kick.
	EndpointJoined func()
	// Steps, when set, is told how long each step of CreateEndpoint,
	// Join, Leave and DeleteEndpoint took.
	Steps StepObserver
}

// New returns a driver.
func New(c Config) *Driver {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	changed := c.NetworksChanged
	if changed == nil {
		changed = func() {}
	}
	mtu := c.MTU
	if mtu == nil {
		mtu = func() int { return 0 }
	}
	joined := c.EndpointJoined
	if joined == nil {
		joined = func() {}
	}
	return &Driver{store: c.Store, dp: c.Dataplane, ipam: c.IPAM, host: c.Host, mtu: mtu, log: log, timeout: HandlerTimeout,
		changed: changed, policy: c.Policy, joined: joined, stepObs: c.Steps, reap: newReaper()}
}

// HandlerTimeout bounds every handler, so that Docker gets an answer (an
// error naming the datastore) within 10 s even while etcd is unreachable.
const HandlerTimeout = 6 * time.Second

func (d *Driver) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.timeout)
}

// HostIfaceName is the host side's name of an endpoint's veth.
func HostIfaceName(endpointID string) string { return IfacePrefix + short(endpointID) }
func tempIfaceName(endpointID string) string { return tempPrefix + short(endpointID) }

func short(id string) string {
	if len(id) > idChars {
		return id[:idChars]
	}
	return id
}

func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) error {
	if req.NetworkID == "" {
		return errors.New("CreateNetwork without a NetworkID")
	}
	for _, data := range append(append([]*network.IPAMData{}, req.IPv4Data...), req.IPv6Data...) {
		if data != nil && !ipamdriver.IsCalicoAddressSpace(data.AddressSpace) {
			return fmt.Errorf("the calico network driver needs the calico IPAM driver: add --ipam-driver calico-ipam (got address space %q)", data.AddressSpace)
		}
	}
	if b, _ := req.Options[optInternal].(bool); b {
		return errors.New("--internal is not supported by the calico driver: calico networks are routed; isolate them with policy instead")
	}
	opts := map[string]string{}
	if g, ok := req.Options[optGeneric].(map[string]interface{}); ok {
		var unknown []string
		for k, v := range g {
			switch {
			case k == optEnableIPv4 || k == optEnableIPv6 || strings.HasPrefix(k, "com.docker.network."):
				opts[k] = fmt.Sprint(v)
			case k == optOpen:
				val := strings.ToLower(fmt.Sprint(v))
				if val != "true" && val != "false" {
					return fmt.Errorf("-o %s=%v: use true (accept traffic from anywhere) or false (only from this network, the default)", optOpen, v)
				}
				opts[k] = val
			default:
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("unknown network option(s) %s: the calico driver accepts only -o %s=true|false; remove them", strings.Join(unknown, ", "), optOpen)
		}
	}
	nw := api.Network{ID: req.NetworkID, Options: opts, CreatedBy: d.host, CreatedAt: time.Now().UTC()}
	if b, _ := req.Options[optEnableIPv6].(bool); b {
		nw.EnableIPv6 = true
	}
	for _, data := range req.IPv4Data {
		nw.IPv4Pools = append(nw.IPv4Pools, data.Pool)
	}
	for _, data := range req.IPv6Data {
		nw.IPv6Pools = append(nw.IPv6Pools, data.Pool)
	}
	ctx, cancel := d.ctx()
	defer cancel()
	// Create only: a replay leaves the record (and what the network syncer
	// added to it) as it is.
	created, err := d.store.Create(ctx, api.NetworkKey(req.NetworkID), nw)
	if err != nil {
		return fmt.Errorf("save network %s: %w", short(req.NetworkID), err)
	}
	if !created {
		return nil
	}
	d.log.Info("network created", "network", req.NetworkID, "ipv4", nw.IPv4Pools, "ipv6", nw.IPv6Pools)
	d.changed()
	return nil
}

func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	ctx, cancel := d.ctx()
	defer cancel()
	var nw api.Network
	if _, err := d.store.Get(ctx, api.NetworkKey(req.NetworkID), &nw); err == nil && nw.Published && !nw.Withdrawn {
		// Removed here by the user (or by the syncer after another host's
		// removal): every host removes it.
		if err := sharing.Forget(ctx, d.store, nw.Name); err != nil {
			return fmt.Errorf("delete shared network %s: %w", nw.Name, err)
		}
	}
	if err := d.store.Delete(ctx, api.NetworkKey(req.NetworkID)); err != nil {
		return fmt.Errorf("delete network %s: %w", short(req.NetworkID), err)
	}
	d.log.Info("network deleted", "network", req.NetworkID, "name", nw.Name)
	d.changed()
	return nil
}

// AllocateNetwork and FreeNetwork are only called in swarm mode, where the
// manager allocates driver state; this driver keeps none there.
func (d *Driver) AllocateNetwork(req *network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return &network.AllocateNetworkResponse{Options: map[string]string{}}, nil
}

func (d *Driver) FreeNetwork(req *network.FreeNetworkRequest) error { return nil }

func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	if req.EndpointID == "" || req.NetworkID == "" {
		return nil, errors.New("CreateEndpoint needs a NetworkID and an EndpointID")
	}
	if req.Interface == nil || (req.Interface.Address == "" && req.Interface.AddressIPv6 == "") {
		return nil, errors.New("endpoint has no address: the network must use --ipam-driver calico-ipam")
	}
	v4, err := parseIfaceAddr(req.Interface.Address)
	if err != nil {
		return nil, err
	}
	v6, err := parseIfaceAddr(req.Interface.AddressIPv6)
	if err != nil {
		return nil, err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	st := d.steps("CreateEndpoint")
	cur, err := d.networkAndEndpoint(ctx, req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	st.done("read-network-endpoint")
	resp := &network.CreateEndpointResponse{}
	mac := req.Interface.MacAddress
	if mac == "" {
		mac = randomMAC()
		if cur != nil { // a replay: the MAC we gave it the first time
			mac = cur.MAC
		}
		resp.Interface = &network.EndpointInterface{MacAddress: mac}
	} else if _, err := net.ParseMAC(mac); err != nil {
		return nil, fmt.Errorf("bad MAC address %q: %w", mac, err)
	}
	ep := api.Endpoint{
		ID: req.EndpointID, NetworkID: req.NetworkID, Host: d.host,
		IPv4: v4, IPv6: v6,
		MAC: mac, HostIface: HostIfaceName(req.EndpointID), CreatedAt: time.Now().UTC(),
		Handle: ipam.HandleFor(mac),
	}
	if cur != nil && sameEndpoint(*cur, ep) {
		return resp, nil // a replay: the record (and labels learnt since) stay
	}
	// The record and the allocations' binding to it go in one transaction:
	// from here on, a release naming only the address cannot free it.
	if err := d.ipam.Bind(ctx, ep.Handle, ep.Addrs(), ep.ID, datastore.Put(api.EndpointKey(d.host, ep.ID), ep)); err != nil {
		return nil, fmt.Errorf("save endpoint %s: %w", short(req.EndpointID), err)
	}
	st.done("bind")
	if d.policy != nil {
		// The endpoint's policy is computed and enforced while Docker
		// makes the sandbox; Join waits for it only if it is not done.
		d.policy.EndpointCreated(ep)
		st.done("policy-kick")
	}
	d.log.Info("endpoint created", append([]any{"endpoint", req.EndpointID, "ipv4", ep.IPv4, "ipv6", ep.IPv6, "mac", mac}, st.log()...)...)
	return resp, nil
}

// networkAndEndpoint reads, in one request, the network (which must
// exist) and the endpoint's record if there is one (a replay).
func (d *Driver) networkAndEndpoint(ctx context.Context, networkID, endpointID string) (*api.Endpoint, error) {
	res, err := d.store.Read(ctx, datastore.Get(api.NetworkKey(networkID)), datastore.Get(api.EndpointKey(d.host, endpointID)))
	if err != nil {
		return nil, fmt.Errorf("read network %s and endpoint %s: %w", short(networkID), short(endpointID), err)
	}
	rec, ok := res.One(0)
	if !ok {
		return nil, fmt.Errorf("network %s is not known to calico (its record is missing from the datastore): remove the network and create it again", short(networkID))
	}
	var nw api.Network
	if err := rec.Decode(&nw); err != nil {
		return nil, err
	}
	rec, ok = res.One(1)
	if !ok {
		return nil, nil
	}
	var cur api.Endpoint
	if err := rec.Decode(&cur); err != nil {
		return nil, err
	}
	return &cur, nil
}

// sameEndpoint tells a replayed CreateEndpoint from a new one.
func sameEndpoint(a, b api.Endpoint) bool {
	return a.NetworkID == b.NetworkID && a.IPv4 == b.IPv4 && a.IPv6 == b.IPv6 && a.MAC == b.MAC && a.Handle == b.Handle
}

func hostAddrs(ps []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Addr())
	}
	return out
}

func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	ctx, cancel := d.ctx()
	defer cancel()
	st := d.steps("DeleteEndpoint")
	ep, err := d.endpoint(ctx, req.EndpointID)
	st.done("read-endpoint")
	// Leave normally removed the veth (or handed it to the reaper); after a
	// crash it may still be here. It goes even when the datastore cannot be
	// read: the container is gone.
	if terr := d.removeVeth(HostIfaceName(req.EndpointID)); terr != nil {
		return terr
	}
	st.done("veth-delete")
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return err
	}
	if ep == nil {
		return nil // deleted before: a replay
	}
	if err := d.ipam.Unbind(ctx, ep.Handle, hostAddrs(addrsOf(ep)), ep.ID, datastore.Delete(api.EndpointKey(d.host, ep.ID))); err != nil {
		return fmt.Errorf("delete endpoint %s: %w", short(req.EndpointID), err)
	}
	st.done("unbind")
	d.log.Info("endpoint deleted", append([]any{"endpoint", req.EndpointID}, st.log()...)...)
	return nil
}

func (d *Driver) endpoint(ctx context.Context, id string) (*api.Endpoint, error) {
	ep, _, err := d.endpointRev(ctx, id)
	return ep, err
}

// endpointRev reads this host's endpoint id and the revision it was read at.
func (d *Driver) endpointRev(ctx context.Context, id string) (*api.Endpoint, int64, error) {
	var ep api.Endpoint
	rev, err := d.store.Get(ctx, api.EndpointKey(d.host, id), &ep)
	if err != nil {
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, 0, fmt.Errorf("endpoint %s is not known on host %s: %w", short(id), d.host, err)
		}
		return nil, 0, err
	}
	return &ep, rev, nil
}

func addrsOf(ep *api.Endpoint) []netip.Prefix {
	if ep == nil {
		return nil
	}
	return ep.Prefixes()
}

// parseIfaceAddr reads an address Docker's IPAM gave an interface.
func parseIfaceAddr(s string) (netip.Prefix, error) {
	p, err := api.ParseHostPrefix(s)
	if err != nil {
		return p, fmt.Errorf("bad address %q: %w", s, err)
	}
	return p, nil
}

func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	ep, err := d.endpoint(ctx, req.EndpointID)
	if err != nil {
		return nil, err
	}
	return &network.InfoResponse{Value: map[string]string{"hostIface": ep.HostIface, "host": ep.Host}}, nil
}

func (d *Driver) DiscoverNew(*network.DiscoveryNotification) error    { return nil }
func (d *Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }

// ProgramExternalConnectivity carries port mappings (-p); routed
// containers are reached at their own address, so there is nothing to map.
func (d *Driver) ProgramExternalConnectivity(req *network.ProgramExternalConnectivityRequest) error {
	if pm, ok := req.Options["com.docker.network.portmap"].([]interface{}); ok && len(pm) > 0 {
		d.log.Warn("port publishing (-p) is ignored on calico networks: reach the container at its own address", "endpoint", req.EndpointID)
	}
	return nil
}

func (d *Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}

func randomMAC() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = (b[0] | 0x02) & 0xfe // locally administered, unicast
	return net.HardwareAddr(b).String()
}
