package policy

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// trackerModel: endpoints of three networks on nodes a and b, in roles
// r0..r4; each policy selects a role and lets the next role in.
func trackerModel() *Model {
	m := &Model{}
	for n := 0; n < 3; n++ {
		name := fmt.Sprintf("net%d", n)
		m.Profiles = append(m.Profiles, DefaultProfile(name, "calico/network", name, n == 2))
	}
	for j := 0; j < 5; j++ {
		m.NetworkPolicies = append(m.NetworkPolicies, np(fmt.Sprintf("p%d", j), ptr(float64(j)), fmt.Sprintf("role == 'r%d'", j),
			[]api.Rule{{Action: api.Allow, Source: api.EntityRule{Selector: fmt.Sprintf("role == 'r%d'", (j+1)%5)}}}, nil))
	}
	m.GlobalNetworkPolicies = []api.GlobalNetworkPolicy{gnp("egress-r0", nil, "role == 'r0'", nil,
		[]api.Rule{{Action: api.Allow, Destination: api.EntityRule{Selector: "has(role)", Nets: []string{"10.0.0.0/8", "172.16.0.0/12"}}}})}
	for i := 0; i < 40; i++ {
		m.Endpoints = append(m.Endpoints, trackerEndpoint(i, i%5, i%4 != 3))
	}
	return m
}

// trackerEndpoint i in role r, on node a when local (else b); endpoints
// 7 and 8 share an address, as two records of one address may for a while.
func trackerEndpoint(i, role int, local bool) Endpoint {
	node := "b"
	if local {
		node = "a"
	}
	a4 := netip.AddrFrom4([4]byte{10, 0, byte(i / 200), byte(i%200 + 1)})
	if i == 8 {
		a4 = netip.AddrFrom4([4]byte{10, 0, 0, 8})
	}
	return Endpoint{Name: fmt.Sprintf("ep%d", i), Node: node, Iface: fmt.Sprintf("cali%04d", i),
		IPs:    []netip.Addr{a4, netip.MustParseAddr(fmt.Sprintf("fd00::%x", i+1))},
		Labels: map[string]string{"role": fmt.Sprintf("r%d", role)}, Profiles: []string{fmt.Sprintf("net%d", i%3)}}
}

func setEndpoint(m *Model, ep *Endpoint, name string) {
	i := slices.IndexFunc(m.Endpoints, func(e Endpoint) bool { return e.Name == name })
	switch {
	case ep == nil && i >= 0:
		m.Endpoints = slices.Delete(m.Endpoints, i, i+1)
	case ep != nil && i >= 0:
		m.Endpoints[i] = *ep
	case ep != nil:
		m.Endpoints = append(m.Endpoints, *ep)
	}
}

// The tracker's state after any series of endpoint changes is what
// Compute gives for the model they lead to; changes that add or remove a
// chain are left to a full computation, and the common ones (an endpoint
// with labels already in use comes, goes, is relabelled or held) are not.
func TestTrackerMatchesCompute(t *testing.T) {
	m := trackerModel()
	tr, _, err := NewTracker(m, "a")
	if err != nil || tr == nil {
		t.Fatalf("NewTracker: %v, %v", tr, err)
	}
	rng := rand.New(rand.NewSource(1))
	incremental, full := 0, 0
	for step := 0; step < 400; step++ {
		changes := map[string]*Endpoint{}
		for k := 1 + rng.Intn(3); k > 0; k-- {
			i := rng.Intn(45)
			name := fmt.Sprintf("ep%d", i)
			switch rng.Intn(6) {
			case 0:
				changes[name] = nil
			case 1:
				ep := trackerEndpoint(i, i%5, i%4 != 3)
				ep.Held = true
				changes[name] = &ep
			case 2: // another role: may need a chain list no one has
				ep := trackerEndpoint(i, rng.Intn(6), i%4 != 3)
				changes[name] = &ep
			default:
				ep := trackerEndpoint(i, i%5, i%4 != 3)
				changes[name] = &ep
			}
		}
		for name, ep := range changes {
			setEndpoint(m, ep, name)
		}
		want, err := Compute(m, "a")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Update(changes); errors.Is(err, ErrFullPass) {
			full++
			if tr, _, err = NewTracker(m, "a"); err != nil {
				t.Fatal(err)
			}
		} else if err != nil {
			t.Fatalf("step %d: %v", step, err)
		} else {
			incremental++
		}
		if got := tr.DesiredState().String(); got != want.String() {
			t.Fatalf("step %d (changes %v): tracked state differs from Compute's\n--- tracked\n%s\n--- computed\n%s", step, changes, got, want.String())
		}
	}
	t.Logf("%d incremental updates, %d full", incremental, full)
	if incremental < 200 || full == 0 {
		t.Errorf("%d incremental updates and %d full of 400: want most incremental, some full", incremental, full)
	}
}

// What an update hands the data plane: the new endpoint's entries and the
// addresses its selector sets gain; a shared address stays while another
// endpoint holds it; a role no local endpoint has needs a full pass.
func TestTrackerDelta(t *testing.T) {
	m := trackerModel()
	tr, _, err := NewTracker(m, "a")
	if err != nil {
		t.Fatal(err)
	}
	ep := trackerEndpoint(100, 1, true)
	d, err := tr.Update(map[string]*Endpoint{"ep100": &ep})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Endpoints) != 1 || d.Endpoints[0].Old != nil || d.Endpoints[0].New.Iface != "cali0100" {
		t.Errorf("endpoint changes %+v, want cali0100 added", d.Endpoints)
	}
	// r1 is in p1's selector set (4 and 6) and in p0's source sets, and
	// in has(role)'s.
	added := 0
	for _, s := range d.Sets {
		added += len(s.Add)
		if len(s.Del) > 0 {
			t.Errorf("set %s loses %v", s.Name, s.Del)
		}
	}
	if added == 0 {
		t.Errorf("no set gained an address: %+v", d.Sets)
	}
	// Endpoint 8 (role r3) shares 10.0.0.8 with endpoint 7 (role r2, net1):
	// removing 8 removes the address only from the sets 7 is not in.
	d, err = tr.Update(map[string]*Endpoint{"ep8": nil})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range d.Sets {
		if slices.Contains(s.Del, netip.MustParseAddr("10.0.0.8")) && tr.sets[s.Name].sel.Matches(map[string]string{"role": "r2", "calico/network": "net1"}) {
			t.Errorf("set %s (%s) lost 10.0.0.8, which endpoint 7 still holds", s.Name, tr.sets[s.Name].Comment)
		}
	}
	odd := trackerEndpoint(101, 9, true) // role r9: no chain list for it yet
	if _, err := tr.Update(map[string]*Endpoint{"ep101": &odd}); !errors.Is(err, ErrFullPass) {
		t.Errorf("an endpoint with new chains: err %v, want ErrFullPass", err)
	}
	clash := trackerEndpoint(102, 1, true)
	clash.Iface = "cali0000"
	if _, err := tr.Update(map[string]*Endpoint{"ep102": &clash}); !errors.Is(err, ErrFullPass) {
		t.Errorf("an endpoint on another's interface: err %v, want ErrFullPass", err)
	}
}

// benchTrackerModel is trackerModel grown to n endpoints, all known roles.
func benchTrackerModel(n int) *Model {
	m := trackerModel()
	m.Endpoints = nil
	for i := 0; i < n; i++ {
		m.Endpoints = append(m.Endpoints, trackerEndpoint(i, i%5, i%4 != 3))
	}
	return m
}

// What a full pass costs with the tracker's bookkeeping, against Compute
// alone, and what an update for one endpoint costs (go test -bench
// Tracker ./policy/).
func BenchmarkTracker(b *testing.B) {
	for _, n := range []int{250, 1000, 2000} {
		m := benchTrackerModel(n)
		b.Run(fmt.Sprintf("Compute/%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Compute(m, "a"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("NewTracker/%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := NewTracker(m, "a"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Update/%d", n), func(b *testing.B) {
			tr, _, err := NewTracker(m, "a")
			if err != nil {
				b.Fatal(err)
			}
			ep := trackerEndpoint(n+1, 1, true)
			for b.Loop() {
				if _, err := tr.Update(map[string]*Endpoint{ep.Name: &ep}); err != nil {
					b.Fatal(err)
				}
				if _, err := tr.Update(map[string]*Endpoint{ep.Name: nil}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
