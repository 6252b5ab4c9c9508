package ipam

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"

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
//
// inUse are addresses this host's containers already hold (found in the
// kernel after the datastore lost its records): a default pool is chosen to
// contain them, so that they can be claimed again.
func EnsureDefaultPools(ctx context.Context, s *datastore.Store, avoid []netip.Prefix, inUse []netip.Addr) ([]api.IPPool, error) {
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
		if held := candidateHolding(inUse, avoid); held != "" {
			cidr, err = held, nil
		}
		if err != nil {
			return nil, err
		}
		want = append(want, api.IPPool{Name: DefaultPoolV4Name, CIDR: cidr, NATOutgoing: true})
	}
	if !has6 {
		cidr, err := ulaHolding(inUse)
		if cidr == "" && err == nil {
			cidr, err = randomULA(avoid)
		}
		if err != nil {
			return nil, err
		}
		want = append(want, api.IPPool{Name: DefaultPoolV6Name, CIDR: cidr})
	}
	cmps := []datastore.Cond{datastore.Absent(api.DefaultsDoneKey)}
	ops := []datastore.Op{datastore.PutRaw(api.DefaultsDoneKey, `"done"`)}
	for i := range want {
		want[i].Normalize()
		if err := want[i].Validate(); err != nil {
			return nil, fmt.Errorf("default pool: %w", err)
		}
		cmps = append(cmps, datastore.Absent(api.PoolKey(want[i].Name)))
		ops = append(ops, datastore.Put(api.PoolKey(want[i].Name), want[i]))
	}
	resp, err := s.CAS(ctx, cmps, ops)
	if errors.Is(err, datastore.ErrUncertain) {
		var done string
		if _, gerr := s.Get(ctx, api.DefaultsDoneKey, &done); gerr == nil {
			return want, nil // applied (or another host's set: either way, pools exist)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create default pools: %w", err)
	}
	if !resp.Succeeded {
		return nil, nil // done before, or by another host
	}
	return want, nil
}

// candidateHolding returns the default IPv4 candidate that holds one of
// inUse and overlaps nothing of avoid, or "".
func candidateHolding(inUse []netip.Addr, avoid []netip.Prefix) string {
	for _, c := range DefaultPoolV4Candidates {
		p := netip.MustParsePrefix(c)
		holds, clash := false, false
		for _, a := range inUse {
			holds = holds || p.Contains(a)
		}
		for _, a := range avoid {
			clash = clash || a.Overlaps(p)
		}
		if holds && !clash {
			return c
		}
	}
	return ""
}

// ulaHolding returns the ULA /48 holding the first IPv6 ULA address of
// inUse, or "".
func ulaHolding(inUse []netip.Addr) (string, error) {
	ula := netip.MustParsePrefix("fd00::/8")
	for _, a := range inUse {
		if a.Is6() && ula.Contains(a) {
			return netip.PrefixFrom(a, 48).Masked().String(), nil
		}
	}
	return "", nil
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
