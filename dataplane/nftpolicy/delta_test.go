package nftpolicy

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// deltaModel: endpoints of two networks on this node and another, in
// roles r0..r3; each policy selects a role and lets the next role in; one
// policy polices r0's egress.
func deltaModel() *policy.Model {
	m := &policy.Model{Profiles: []api.Profile{
		policy.DefaultProfile("net0", "calico/network", "net0", false),
		policy.DefaultProfile("net1", "calico/network", "net1", true),
	}}
	for j := 0; j < 4; j++ {
		m.NetworkPolicies = append(m.NetworkPolicies, api.NetworkPolicy{Name: fmt.Sprintf("p%d", j), PolicySpec: api.PolicySpec{
			Order: f64(float64(j)), Selector: fmt.Sprintf("role == 'r%d'", j),
			Ingress: []api.Rule{{Action: api.Allow, Protocol: "TCP", Source: api.EntityRule{Selector: fmt.Sprintf("role == 'r%d'", (j+1)%4)}}},
		}})
	}
	m.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{{Name: "r0-out", PolicySpec: api.PolicySpec{
		Selector: "role == 'r0'", Types: []string{"Egress"},
		Egress: []api.Rule{{Action: api.Allow, Destination: api.EntityRule{Selector: "has(role)"}}},
	}}}
	for i := 0; i < 30; i++ {
		m.Endpoints = append(m.Endpoints, deltaEndpoint(i, i%4, false))
	}
	return m
}

// deltaEndpoint i in role r (r >= 4: no policy selects it), held or not;
// every third endpoint lives on another node.
func deltaEndpoint(i, role int, held bool) policy.Endpoint {
	n := node
	if i%3 == 2 {
		n = "node-b"
	}
	return policy.Endpoint{Name: fmt.Sprintf("ep%d", i), Node: n, Iface: fmt.Sprintf("calid%06d", i), Held: held,
		IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 66, 0, byte(i + 1)}), netip.MustParseAddr(fmt.Sprintf("fd00:66::%x", i+1))},
		Labels: map[string]string{"role": fmt.Sprintf("r%d", role)}, Profiles: []string{fmt.Sprintf("net%d", i%2)}}
}

// An endpoint-only change applied as a delta leaves the kernel's table
// exactly as a full apply of the same model does (chains, rules, every
// set's and map's elements), over a series of endpoints added, removed,
// relabelled and held; a change that needs a chain the table lacks is
// refused and the full apply takes over.
func TestApplyDeltaMatchesFullApply(t *testing.T) {
	testns.RequireRoot(t)
	nftAvailable(t)
	fullNS, deltaNS := testns.New(t), testns.New(t)
	full, err := New(Config{NetNS: int(fullNS.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := New(Config{NetNS: int(deltaNS.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	m := deltaModel()
	if _, err := inc.ApplyDelta(&policy.Delta{}); !errors.Is(err, ErrNoState) {
		t.Fatalf("ApplyDelta before any Apply: %v, want ErrNoState", err)
	}
	tr, ds, err := policy.NewTracker(m, node)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inc.Apply(ds); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(2))
	deltas, refused := 0, 0
	for step := 0; step < 60; step++ {
		changes := map[string]*policy.Endpoint{}
		for k := 1 + rng.Intn(3); k > 0; k-- {
			i := rng.Intn(34)
			name := fmt.Sprintf("ep%d", i)
			var ep policy.Endpoint
			switch rng.Intn(6) {
			case 0:
				changes[name] = nil
				continue
			case 1:
				ep = deltaEndpoint(i, i%4, true)
			case 2:
				ep = deltaEndpoint(i, rng.Intn(5), false)
			default:
				ep = deltaEndpoint(i, i%4, false)
			}
			changes[name] = &ep
		}
		for name, ep := range changes {
			i := slices.IndexFunc(m.Endpoints, func(e policy.Endpoint) bool { return e.Name == name })
			switch {
			case ep == nil && i >= 0:
				m.Endpoints = slices.Delete(m.Endpoints, i, i+1)
			case ep != nil && i >= 0:
				m.Endpoints[i] = *ep
			case ep != nil:
				m.Endpoints = append(m.Endpoints, *ep)
			}
		}
		want, err := policy.Compute(m, node)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := full.Apply(want); err != nil {
			t.Fatalf("step %d: full apply: %v", step, err)
		}
		d, err := tr.Update(changes)
		if err == nil {
			_, err = inc.ApplyDelta(d)
		}
		if err != nil {
			refused++
			if tr, ds, err = policy.NewTracker(m, node); err != nil {
				t.Fatal(err)
			}
			if _, err := inc.Apply(ds); err != nil {
				t.Fatalf("step %d: full apply after a refused delta: %v", step, err)
			}
		} else {
			deltas++
		}
		if a, b := snapshotOf(t, full), snapshotOf(t, inc); a != b {
			t.Fatalf("step %d (changes %v): the kernel's table after deltas differs from a full apply's\n--- full\n%s\n--- deltas\n%s", step, changes, a, b)
		}
	}
	t.Logf("%d deltas, %d full applies", deltas, refused)
	if deltas < 20 || refused == 0 {
		t.Errorf("%d deltas and %d full applies of 60 steps: want mostly deltas, some full", deltas, refused)
	}
	// A change whose chains the table lacks is refused, and changes nothing.
	before := snapshotOf(t, inc)
	odd := policy.LocalEndpoint{Iface: "calid999999", Name: "odd", Ingress: policy.EndpointChains{Profiles: []string{"pro-i-nowhere"}}}
	if _, err := inc.ApplyDelta(&policy.Delta{Endpoints: []policy.EndpointChange{{New: &odd}}}); err == nil {
		t.Error("a delta naming a chain the table lacks was applied")
	}
	if after := snapshotOf(t, inc); after != before {
		t.Errorf("a refused delta changed the table:\n%s\n---\n%s", before, after)
	}
}
