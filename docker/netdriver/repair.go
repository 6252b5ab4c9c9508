package netdriver

// Endpoint repair: the kernel, not the datastore, is the evidence of what
// runs. A veth with our mark whose record is missing (the datastore lost it,
// or the host moved to another etcd) is adopted: its record is rebuilt from
// the kernel and its addresses claimed again, and the Docker engine fills in
// the rest once it answers. A veth is removed only when the engine confirms
// its endpoint is gone (see Collect).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// RepairResult says what Reconcile changed.
type RepairResult struct {
	dataplane.ReconcileResult
	Adopted int // endpoints rebuilt from the kernel
	// Unadoptable are running endpoints whose addresses could not be
	// claimed (held by another owner, or in no pool): reported each pass.
	Unadoptable int
}

// Reconcile brings this host's routes in line with the endpoint records and
// adopts veths whose records are missing. It takes no lock: a veth appears
// only after its record is written (CreateEndpoint before Join), so a veth
// the first read missed is read again before it is judged.
func (d *Driver) Reconcile(ctx context.Context) (RepairResult, error) {
	var res RepairResult
	// A record that does not decode leaves only its own veth alone (the
	// kernel pass below touches wanted endpoints' routes only, and the veth
	// is neither adopted nor judged): every other endpoint is repaired.
	items, bad, err := datastore.ListReadable[api.Endpoint](ctx, d.store, api.HostEndpointsPrefix(d.host))
	if err != nil {
		return res, err
	}
	var errs []error
	unreadable := map[string]bool{}
	for _, b := range bad {
		if _, id, ok := api.ParseEndpointKey(b.Key); ok {
			unreadable[id] = true
		}
		errs = append(errs, fmt.Errorf("endpoint record %s does not decode, its veth is left as it is: %w", b.Key, b))
	}
	want := make(map[string]dataplane.Endpoint, len(items))
	for _, it := range items {
		ep := it.Value
		want[ep.ID] = dataplane.Endpoint{ID: ep.ID, HostIface: ep.HostIface, Addrs: addrsOf(&ep)}
	}
	kernel, err := d.dp.Inventory()
	if err != nil {
		return res, err
	}
	for id, ke := range kernel {
		if _, ok := want[id]; ok || unreadable[id] {
			continue
		}
		if d.reap.isPending(ke.HostIface) {
			continue // left: being deleted, not a running endpoint without its record
		}
		ep, err := d.endpoint(ctx, id)
		switch {
		case err == nil:
			want[id] = dataplane.Endpoint{ID: id, HostIface: ep.HostIface, Addrs: addrsOf(ep)}
		case errors.Is(err, datastore.ErrNotFound):
			ok, aerr := d.adopt(ctx, ke)
			if aerr != nil {
				res.Unadoptable++
				errs = append(errs, aerr)
				continue
			}
			if ok {
				res.Adopted++
				want[id] = dataplane.Endpoint{ID: id, HostIface: ke.HostIface, Addrs: ke.Addrs}
			}
		default:
			errs = append(errs, err)
		}
	}
	rr, err := d.dp.Reconcile(want)
	res.ReconcileResult = rr
	return res, errors.Join(append(errs, err)...)
}

// adopt rebuilds the record of a running endpoint from the kernel and claims
// its addresses again, bound to it. An address another owner holds is not
// taken (that would give it to two containers): the endpoint is reported and
// left running, and the claim is tried again at the next pass.
func (d *Driver) adopt(ctx context.Context, ke dataplane.KernelEndpoint) (bool, error) {
	if len(ke.Addrs) == 0 {
		return false, fmt.Errorf("veth %s (endpoint %s) has no record and no host route to learn its address from: it is left alone", ke.HostIface, short(ke.ID))
	}
	ep := api.Endpoint{ID: ke.ID, Host: d.host, HostIface: ke.HostIface, Handle: ipam.AdoptedHandle(ke.ID),
		Adopted: true, CreatedAt: time.Now().UTC()}
	for _, a := range ke.Addrs {
		if a.Addr().Is4() {
			ep.IPv4 = a
		} else {
			ep.IPv6 = a
		}
	}
	adopted := ep.Handle
	for i, a := range ke.Addrs {
		h, err := d.ipam.Adopt(ctx, a.Addr(), adopted, ep.ID)
		if err != nil {
			// Undo only what this adoption claimed, never an existing holder.
			if _, rerr := d.ipam.ReleaseByHandle(ctx, adopted); rerr != nil {
				d.log.Warn("undoing a partial adoption failed", "endpoint", ep.ID, "err", rerr)
			}
			return false, fmt.Errorf("running endpoint %s (veth %s) lost its record and its address %s cannot be claimed again: %w; "+
				"it keeps working, but restart the container to give it an address IPAM holds", short(ep.ID), ke.HostIface, a.Addr(), err)
		}
		if i == 0 {
			ep.Handle = h // the allocation that already named the endpoint, when there was one
		}
	}
	created, err := d.store.Create(ctx, api.EndpointKey(d.host, ep.ID), ep)
	if err != nil {
		return false, fmt.Errorf("record adopted endpoint %s: %w", short(ep.ID), err)
	}
	if !created { // its real record appeared meanwhile
		_, _ = d.ipam.ReleaseByHandle(ctx, adopted)
		return false, nil
	}
	d.log.Warn("adopted a running endpoint whose record was lost: rebuilt it from the kernel and claimed its addresses again",
		"endpoint", ep.ID, "veth", ke.HostIface, "ipv4", ep.IPv4, "ipv6", ep.IPv6)
	return true, nil
}

// EngineEndpoint is an endpoint as this host's Docker engine knows it.
type EngineEndpoint struct {
	ID, ContainerID, MAC string
}

// EngineNetwork is a calico network as this host's Docker engine knows it.
type EngineNetwork struct {
	ID, Name   string
	EnableIPv6 bool
	Subnets    []string // IPAM config subnets ("" when the network uses the default pools)
	Options    map[string]string
	Endpoints  []EngineEndpoint
}

// FillIn completes this host's adopted endpoint records among own (network,
// container, MAC) and rebuilds lost network records from what the engine
// reports. It is called outside handlers only (the engine may be waiting on
// one).
func (d *Driver) FillIn(ctx context.Context, nets []EngineNetwork, own []api.Endpoint) (int, error) {
	incomplete := map[string]bool{}
	for _, ep := range own {
		if ep.Adopted && ep.NetworkID == "" {
			incomplete[ep.ID] = true
		}
	}
	n := 0
	var errs []error
	for _, en := range nets {
		if err := d.ensureNetwork(ctx, en); err != nil {
			errs = append(errs, err)
		}
		for _, ee := range en.Endpoints {
			if !incomplete[ee.ID] {
				continue
			}
			changed := false
			err := datastore.Update(ctx, d.store, api.EndpointKey(d.host, ee.ID), func(cur *api.Endpoint) (*api.Endpoint, error) {
				if cur == nil || !cur.Adopted || (cur.NetworkID == en.ID && cur.ContainerID == ee.ContainerID) {
					return nil, datastore.ErrNoChange
				}
				cur.NetworkID, cur.ContainerID = en.ID, ee.ContainerID
				if cur.MAC == "" {
					cur.MAC = ee.MAC
				}
				changed = true
				return cur, nil
			})
			if err != nil {
				errs = append(errs, err)
			} else if changed {
				n++
				d.log.Info("adopted endpoint completed from the Docker engine", "endpoint", ee.ID, "network", en.Name, "container", ee.ContainerID)
			}
		}
	}
	return n, errors.Join(errs...)
}

func (d *Driver) ensureNetwork(ctx context.Context, en EngineNetwork) error {
	nw := api.Network{ID: en.ID, Name: en.Name, EnableIPv6: en.EnableIPv6, Options: map[string]string{}, CreatedBy: d.host, CreatedAt: time.Now().UTC()}
	if v := en.Options[optOpen]; v != "" {
		nw.Options[optOpen] = v
	}
	for _, s := range en.Subnets {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is6() {
			nw.IPv6Pools = append(nw.IPv6Pools, s)
		} else if err == nil {
			nw.IPv4Pools = append(nw.IPv4Pools, s)
		}
	}
	created, err := d.store.Create(ctx, api.NetworkKey(en.ID), nw)
	if err != nil {
		return fmt.Errorf("rebuild network record %s: %w", en.Name, err)
	}
	if created {
		d.log.Warn("rebuilt a lost network record from the Docker engine", "network", en.Name, "id", en.ID)
		d.changed()
	}
	return nil
}

// Collect removes an endpoint the Docker engine no longer knows: its veth,
// its record and its addresses (only while they are still its own).
func (d *Driver) Collect(ctx context.Context, ep api.Endpoint, why string) error {
	addrs := addrsOf(&ep)
	if err := d.dp.TeardownEndpoint(ep.HostIface, addrs); err != nil {
		return err
	}
	if err := d.ipam.Unbind(ctx, ep.Handle, hostAddrs(addrs), ep.ID, datastore.Delete(api.EndpointKey(d.host, ep.ID))); err != nil {
		return fmt.Errorf("remove endpoint %s: %w", short(ep.ID), err)
	}
	n, err := d.ipam.ReleaseEndpoint(ctx, ep.Handle, hostAddrs(addrs), ep.ID, why)
	if err != nil {
		return err
	}
	d.log.Info("garbage collected an endpoint the Docker engine no longer knows", "endpoint", ep.ID, "veth", ep.HostIface,
		"ipv4", ep.IPv4, "ipv6", ep.IPv6, "addressesReleased", n, "why", why)
	return nil
}
