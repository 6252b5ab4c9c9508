// Package ipamdriver answers Docker's IpamDriver calls (the calico-ipam
// driver) by turning pool IDs and requests into calls on the ipam allocator;
// the allocator itself (blocks, handles, garbage rules) stays in ipam.
package ipamdriver

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	dipam "github.com/docker/go-plugins-helpers/ipam"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// Docker-facing names and keys.
const (
	LocalAddressSpace  = "CalicoLocalAddressSpace"
	GlobalAddressSpace = "CalicoGlobalAddressSpace"
	PoolIDv4           = "CalicoPoolIPv4"
	PoolIDv6           = "CalicoPoolIPv6"
	subnetPoolPrefix   = "CalicoSubnet|"

	gatewayDataKey   = "com.docker.network.gateway"
	requestTypeKey   = "RequestAddressType"
	macAddressOptKey = "com.docker.network.endpoint.macaddress"
)

// HandlerTimeout bounds every IPAM call, so that Docker gets an answer (an
// error naming the datastore) within 10 s even while etcd is unreachable.
const HandlerTimeout = 6 * time.Second

// Driver answers Docker's IpamDriver calls. Pool IDs carry everything needed
// to serve later calls, so nothing about them needs storing and they survive
// restarts.
type Driver struct {
	alloc   *ipam.Allocator
	log     *slog.Logger
	timeout time.Duration
}

// New wraps an allocator.
func New(a *ipam.Allocator, log *slog.Logger) *Driver {
	return &Driver{alloc: a, log: log, timeout: HandlerTimeout}
}

func (d *Driver) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.timeout)
}

// GetCapabilities asks Docker for the endpoint's MAC on RequestAddress: it
// is the only per-endpoint identity Docker gives the IPAM driver, and becomes
// the allocation's handle.
func (d *Driver) GetCapabilities() (*dipam.CapabilitiesResponse, error) {
	return &dipam.CapabilitiesResponse{RequiresMACAddress: true}, nil
}

func (d *Driver) GetDefaultAddressSpaces() (*dipam.AddressSpacesResponse, error) {
	return &dipam.AddressSpacesResponse{LocalDefaultAddressSpace: LocalAddressSpace, GlobalDefaultAddressSpace: GlobalAddressSpace}, nil
}

// IsCalicoAddressSpace tells the network driver whether a network's IPAM data
// came from this driver.
func IsCalicoAddressSpace(s string) bool { return s == LocalAddressSpace || s == GlobalAddressSpace }

func anyPrefix(v6 bool) string {
	if v6 {
		return "::/0"
	}
	return "0.0.0.0/0"
}

func (d *Driver) RequestPool(req *dipam.RequestPoolRequest) (*dipam.RequestPoolResponse, error) {
	for k := range req.Options {
		if !strings.HasPrefix(k, "com.docker.") {
			return nil, fmt.Errorf("unknown --ipam-opt %q: calico-ipam takes no IPAM options; choose pools with --subnet and --ip-range", k)
		}
	}
	ctx, cancel := d.ctx()
	defer cancel()
	pools, err := d.alloc.Pools(ctx)
	if err != nil {
		return nil, err
	}
	family := 4
	if req.V6 {
		family = 6
	}
	data := map[string]string{gatewayDataKey: anyPrefix(req.V6)}
	if req.Pool == "" {
		if req.SubPool != "" {
			return nil, fmt.Errorf("--ip-range needs --subnet: give the pool's CIDR or a subnet inside it with --subnet")
		}
		n := 0
		for _, p := range pools {
			if (p.Prefix().Addr().Is4()) == (family == 4) && !p.Disabled {
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("no enabled IPv%d pool is configured: create one with calicoctl (configured pools: %s)", family, describe(pools))
		}
		id := PoolIDv4
		if req.V6 {
			id = PoolIDv6
		}
		return &dipam.RequestPoolResponse{PoolID: id, Pool: anyPrefix(req.V6), Data: data}, nil
	}
	subnet, err := netip.ParsePrefix(req.Pool)
	if err != nil {
		return nil, fmt.Errorf("--subnet %q is not a CIDR: %w", req.Pool, err)
	}
	if subnet.Addr().Is6() != req.V6 {
		return nil, fmt.Errorf("--subnet %s is of the wrong address family for this request", subnet)
	}
	if subnet.Masked() != subnet {
		return nil, fmt.Errorf("--subnet %s has host bits set: use %s", subnet, subnet.Masked())
	}
	var owner string
	for _, p := range pools {
		if pp := p.Prefix(); pp.Bits() <= subnet.Bits() && pp.Contains(subnet.Addr()) {
			owner = p.Name
			if p.Disabled {
				return nil, fmt.Errorf("--subnet %s is in IP pool %q, which is disabled: enable it with calicoctl or use another pool", subnet, p.Name)
			}
		}
	}
	if owner == "" {
		return nil, fmt.Errorf("--subnet %s is not inside any Calico IP pool: use a configured pool's CIDR or a subnet inside one (pools: %s), or create a pool with calicoctl", subnet, describe(pools))
	}
	id := subnetPoolPrefix + subnet.String()
	if req.SubPool != "" {
		r, err := netip.ParsePrefix(req.SubPool)
		if err != nil || r.Bits() < subnet.Bits() || !subnet.Contains(r.Addr()) {
			return nil, fmt.Errorf("--ip-range %q must be a CIDR inside --subnet %s", req.SubPool, subnet)
		}
		id += "|" + r.Masked().String()
	}
	return &dipam.RequestPoolResponse{PoolID: id, Pool: subnet.String(), Data: data}, nil
}

func describe(pools []api.IPPool) string {
	if len(pools) == 0 {
		return "none"
	}
	var s []string
	for _, p := range pools {
		st := ""
		if p.Disabled {
			st = " disabled"
		}
		s = append(s, p.Name+" "+p.CIDR+st)
	}
	return strings.Join(s, ", ")
}

// selection turns a pool ID back into a selection.
func selection(poolID string) (ipam.Selection, netip.Prefix, error) {
	switch poolID {
	case PoolIDv4:
		return ipam.Selection{Family: 4}, netip.Prefix{}, nil
	case PoolIDv6:
		return ipam.Selection{Family: 6}, netip.Prefix{}, nil
	}
	if !strings.HasPrefix(poolID, subnetPoolPrefix) {
		return ipam.Selection{}, netip.Prefix{}, fmt.Errorf("unknown pool ID %q: recreate the network with --ipam-driver calico-ipam", poolID)
	}
	// What RequestPool wrote: a masked subnet and, optionally, a masked
	// range inside it. Anything else was not written by us.
	parts := strings.Split(strings.TrimPrefix(poolID, subnetPoolPrefix), "|")
	subnet, err := netip.ParsePrefix(parts[0])
	if err != nil || len(parts) > 2 || subnet.Masked() != subnet {
		return ipam.Selection{}, netip.Prefix{}, fmt.Errorf("bad pool ID %q", poolID)
	}
	sel := ipam.Selection{Family: 4, Within: subnet}
	if subnet.Addr().Is6() {
		sel.Family = 6
	}
	if len(parts) > 1 {
		r, err := netip.ParsePrefix(parts[1])
		if err != nil || r.Masked() != r || r.Addr().Is6() != subnet.Addr().Is6() || r.Bits() < subnet.Bits() || !subnet.Contains(r.Addr()) {
			return ipam.Selection{}, netip.Prefix{}, fmt.Errorf("bad pool ID %q", poolID)
		}
		sel.Within = r
	}
	return sel, subnet, nil
}

func (d *Driver) RequestAddress(req *dipam.RequestAddressRequest) (*dipam.RequestAddressResponse, error) {
	if req.Options[requestTypeKey] == gatewayDataKey {
		return nil, fmt.Errorf("--gateway is not supported: calico networks have no gateway address, containers route via 169.254.1.1; remove --gateway")
	}
	sel, subnet, err := selection(req.PoolID)
	if err != nil {
		return nil, err
	}
	handle := ipam.HandleFor(req.Options[macAddressOptKey])
	ctx, cancel := d.ctx()
	defer cancel()
	bits := 32
	if sel.Family == 6 {
		bits = 128
	}
	if req.Address != "" {
		ip, err := netip.ParseAddr(req.Address)
		if err != nil {
			return nil, fmt.Errorf("requested address %q is not an IP address", req.Address)
		}
		if (sel.Family == 4) != ip.Is4() {
			return nil, fmt.Errorf("requested address %s is of the wrong address family", ip)
		}
		if subnet.IsValid() && !subnet.Contains(ip) {
			return nil, fmt.Errorf("requested address %s is outside the network's subnet %s", ip, subnet)
		}
		if err := d.alloc.Assign(ctx, ip, handle); err != nil {
			return nil, err
		}
		d.log.Info("assigned requested address", "ip", ip, "handle", handle)
		return &dipam.RequestAddressResponse{Address: netip.PrefixFrom(ip, bits).String()}, nil
	}
	ip, err := d.alloc.AllocateOnce(ctx, handle, sel)
	if err != nil {
		return nil, err
	}
	d.log.Info("allocated address", "ip", ip, "handle", handle, "pool", req.PoolID)
	return &dipam.RequestAddressResponse{Address: netip.PrefixFrom(ip, bits).String()}, nil
}

func (d *Driver) ReleaseAddress(req *dipam.ReleaseAddressRequest) error {
	ip, err := netip.ParseAddr(req.Address)
	if err != nil {
		if p, perr := netip.ParsePrefix(req.Address); perr == nil {
			ip = p.Addr()
		} else {
			return fmt.Errorf("release: %q is not an IP address", req.Address)
		}
	}
	ctx, cancel := d.ctx()
	defer cancel()
	ok, err := d.alloc.Release(ctx, ip)
	if err != nil {
		return err
	}
	d.log.Info("released address", "ip", ip, "wasAllocated", ok)
	return nil
}

// ReleasePool has nothing to free: pool IDs are stateless.
func (d *Driver) ReleasePool(req *dipam.ReleasePoolRequest) error { return nil }
