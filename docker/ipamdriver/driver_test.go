package ipamdriver

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	dipam "github.com/docker/go-plugins-helpers/ipam"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// newDriver serves pools p4 10.1.0.0/16, p6 fd00:1::/64 and the disabled
// off 10.9.0.0/16 from a real etcd.
func newDriver(t *testing.T) (*Driver, *datastore.Store) {
	t.Helper()
	s := testetcd.Start(t)
	for _, p := range []api.IPPool{{Name: "p4", CIDR: "10.1.0.0/16"}, {Name: "p6", CIDR: "fd00:1::/64"}, {Name: "off", CIDR: "10.9.0.0/16", Disabled: true}} {
		p.Normalize()
		if err := s.Put(context.Background(), api.PoolKey(p.Name), p); err != nil {
			t.Fatal(err)
		}
	}
	return New(ipam.New(s, "host-a", nil), slog.New(slog.DiscardHandler)), s
}

// What `docker network create --ipam-driver calico-ipam` gets for each
// --subnet / --ip-range / --ipam-opt: a pool, or an error saying what to do.
func TestRequestPool(t *testing.T) {
	d, _ := newDriver(t)
	for _, tc := range []struct {
		name   string
		req    dipam.RequestPoolRequest
		poolID string
		pool   string
		err    string
	}{
		{name: "any v4 pool", req: dipam.RequestPoolRequest{}, poolID: PoolIDv4, pool: "0.0.0.0/0"},
		{name: "any v6 pool", req: dipam.RequestPoolRequest{V6: true}, poolID: PoolIDv6, pool: "::/0"},
		{name: "subnet", req: dipam.RequestPoolRequest{Pool: "10.1.2.0/24"}, poolID: "CalicoSubnet|10.1.2.0/24", pool: "10.1.2.0/24"},
		{name: "subnet and range", req: dipam.RequestPoolRequest{Pool: "10.1.2.0/24", SubPool: "10.1.2.128/25"},
			poolID: "CalicoSubnet|10.1.2.0/24|10.1.2.128/25", pool: "10.1.2.0/24"},
		{name: "the whole pool", req: dipam.RequestPoolRequest{Pool: "fd00:1::/64", V6: true}, poolID: "CalicoSubnet|fd00:1::/64", pool: "fd00:1::/64"},
		{name: "docker's own options pass", req: dipam.RequestPoolRequest{Options: map[string]string{"com.docker.network.ipam.serial": "true"}}, poolID: PoolIDv4, pool: "0.0.0.0/0"},
		{name: "unknown option", req: dipam.RequestPoolRequest{Options: map[string]string{"foo": "bar"}}, err: `unknown --ipam-opt "foo"`},
		{name: "range without subnet", req: dipam.RequestPoolRequest{SubPool: "10.1.2.0/25"}, err: "--ip-range needs --subnet"},
		{name: "not a CIDR", req: dipam.RequestPoolRequest{Pool: "10.1.2.0"}, err: "is not a CIDR"},
		{name: "wrong family", req: dipam.RequestPoolRequest{Pool: "10.1.2.0/24", V6: true}, err: "wrong address family"},
		{name: "host bits", req: dipam.RequestPoolRequest{Pool: "10.1.2.1/24"}, err: "host bits set: use 10.1.2.0/24"},
		{name: "outside every pool", req: dipam.RequestPoolRequest{Pool: "192.168.0.0/24"}, err: "not inside any Calico IP pool"},
		{name: "wider than the pool", req: dipam.RequestPoolRequest{Pool: "10.0.0.0/8"}, err: "not inside any Calico IP pool"},
		{name: "disabled pool", req: dipam.RequestPoolRequest{Pool: "10.9.1.0/24"}, err: `IP pool "off", which is disabled`},
		{name: "range outside subnet", req: dipam.RequestPoolRequest{Pool: "10.1.2.0/24", SubPool: "10.1.3.0/25"}, err: "must be a CIDR inside --subnet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			resp, err := d.RequestPool(&req)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.PoolID != tc.poolID || resp.Pool != tc.pool || resp.Data["com.docker.network.gateway"] == "" {
				t.Fatalf("got %+v, want pool ID %q pool %q and a gateway entry", resp, tc.poolID, tc.pool)
			}
		})
	}
}

// An address for each pool ID, the same one again for the same endpoint
// (Docker replays), a requested one, and the errors for what cannot be
// given; a released address is free again.
func TestRequestAndReleaseAddress(t *testing.T) {
	d, _ := newDriver(t)
	mac := map[string]string{macAddressOptKey: "ee:00:00:00:00:01"}
	addr := func(poolID, want string, opts map[string]string) (string, error) {
		t.Helper()
		resp, err := d.RequestAddress(&dipam.RequestAddressRequest{PoolID: poolID, Address: want, Options: opts})
		if err != nil {
			return "", err
		}
		return resp.Address, nil
	}
	a, err := addr("CalicoSubnet|10.1.2.0/24|10.1.2.128/25", "", mac)
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix(a)
	if p.Bits() != 32 || !netip.MustParsePrefix("10.1.2.128/25").Contains(p.Addr()) {
		t.Fatalf("address %s, want a /32 inside the --ip-range", a)
	}
	if again, err := addr("CalicoSubnet|10.1.2.0/24|10.1.2.128/25", "", mac); err != nil || again != a {
		t.Fatalf("replayed request: %s, %v, want %s", again, err, a)
	}
	if a6, err := addr(PoolIDv6, "", map[string]string{macAddressOptKey: "ee:00:00:00:00:02"}); err != nil ||
		!netip.MustParsePrefix("fd00:1::/64").Contains(netip.MustParsePrefix(a6).Addr()) || netip.MustParsePrefix(a6).Bits() != 128 {
		t.Fatalf("v6 address %s, %v", a6, err)
	}
	if got, err := addr("CalicoSubnet|10.1.2.0/24", "10.1.2.7", map[string]string{macAddressOptKey: "ee:00:00:00:00:03"}); err != nil || got != "10.1.2.7/32" {
		t.Fatalf("requested 10.1.2.7: %s, %v", got, err)
	}
	for _, tc := range []struct {
		name, poolID, want string
		opts               map[string]string
		err                string
	}{
		{"gateway", PoolIDv4, "", map[string]string{requestTypeKey: gatewayDataKey}, "--gateway is not supported"},
		{"unknown pool ID", "default", "", nil, "unknown pool ID"},
		{"bad pool ID", "CalicoSubnet|10.1.2.1/24", "", nil, "bad pool ID"},
		{"not an address", PoolIDv4, "10.1.2", nil, "is not an IP address"},
		{"wrong family", PoolIDv6, "10.1.2.8", nil, "wrong address family"},
		{"outside the subnet", "CalicoSubnet|10.1.2.0/24", "10.1.3.8", nil, "outside the network's subnet 10.1.2.0/24"},
		{"taken", "CalicoSubnet|10.1.2.0/24", "10.1.2.7", map[string]string{macAddressOptKey: "ee:00:00:00:00:04"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := addr(tc.poolID, tc.want, tc.opts)
			if err == nil {
				t.Fatalf("got %s, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want one containing %q", err, tc.err)
			}
		})
	}

	for _, form := range []string{a, p.Addr().String()} { // Docker sends either
		if err := d.ReleaseAddress(&dipam.ReleaseAddressRequest{PoolID: PoolIDv4, Address: form}); err != nil {
			t.Fatalf("release %s: %v", form, err)
		}
	}
	if err := d.ReleaseAddress(&dipam.ReleaseAddressRequest{Address: "nope"}); err == nil || !strings.Contains(err.Error(), "not an IP address") {
		t.Fatalf("release of nonsense: %v", err)
	}
	if got, err := addr("CalicoSubnet|10.1.2.0/24", p.Addr().String(), map[string]string{macAddressOptKey: "ee:00:00:00:00:05"}); err != nil || got != a {
		t.Fatalf("released %s could not be taken again: %s, %v", a, got, err)
	}
}

func TestCapabilities(t *testing.T) {
	d, _ := newDriver(t)
	c, err := d.GetCapabilities()
	if err != nil || !c.RequiresMACAddress {
		t.Fatalf("%+v, %v: the MAC is the allocation's handle, so it must be asked for", c, err)
	}
	as, err := d.GetDefaultAddressSpaces()
	if err != nil || !IsCalicoAddressSpace(as.LocalDefaultAddressSpace) || !IsCalicoAddressSpace(as.GlobalDefaultAddressSpace) || IsCalicoAddressSpace("LocalDefault") {
		t.Fatalf("%+v, %v", as, err)
	}
}
