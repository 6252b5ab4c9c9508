package ipam

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Default pool names and the IPv4 CIDR, as Calico uses them.
const (
	DefaultPoolV4Name = "default-ipv4-ippool"
	DefaultPoolV6Name = "default-ipv6-ippool"
	DefaultPoolV4CIDR = "192.168.0.0/16"
)

// EnsureDefaultPools creates the default IPv4 pool and a random IPv6 ULA /48
// the first time any daemon starts against this datastore. It runs once per
// datastore: a marker key is written in the same transaction, so hosts that
// start together create one set, and a user who deletes a default pool does
// not see it come back.
func EnsureDefaultPools(ctx context.Context, s *datastore.Store, avoid []netip.Prefix) ([]api.IPPool, error) {
	existing, err := ListPools(ctx, s)
	if err != nil {
		return nil, err
	}
	has4, has6 := false, false
	for _, p := range existing {
		if p.Prefix().Addr().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	var want []api.IPPool
	if !has4 {
		cidr, _, err := ChooseDefaultIPv4(avoid)
		if err != nil {
			return nil, err
		}
		want = append(want, api.IPPool{Name: DefaultPoolV4Name, CIDR: cidr, NATOutgoing: true})
	}
	if !has6 {
		cidr, err := randomULA(avoid)
		if err != nil {
			return nil, err
		}
		want = append(want, api.IPPool{Name: DefaultPoolV6Name, CIDR: cidr})
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(datastore.DefaultsDoneKey), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(datastore.DefaultsDoneKey, `"done"`)}
	for i := range want {
		want[i].Normalize()
		if err := want[i].Validate(); err != nil {
			return nil, fmt.Errorf("default pool: %w", err)
		}
		b, _ := json.Marshal(want[i])
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(PoolKey(want[i].Name)), "=", 0))
		ops = append(ops, clientv3.OpPut(PoolKey(want[i].Name), string(b)))
	}
	c, cancel := s.Ctx(ctx)
	defer cancel()
	resp, err := s.Client.Txn(c).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("create default pools: %w", err)
	}
	if !resp.Succeeded {
		return nil, nil // done before, or by another host
	}
	return want, nil
}

// randomULA picks an fdXX:XXXX:XXXX::/48 that overlaps none of avoid.
func randomULA(avoid []netip.Prefix) (string, error) {
	for i := 0; i < 100; i++ {
		var b [16]byte
		if _, err := rand.Read(b[1:6]); err != nil {
			return "", fmt.Errorf("random IPv6 pool: %w", err)
		}
		b[0] = 0xfd
		p := netip.PrefixFrom(netip.AddrFrom16(b), 48).Masked()
		clash := false
		for _, a := range avoid {
			if a.Overlaps(p) {
				clash = true
			}
		}
		if !clash {
			return p.String(), nil
		}
	}
	return "", fmt.Errorf("could not pick an IPv6 ULA pool clear of the host's routes")
}
