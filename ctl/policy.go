package ctl

// Profiles, NetworkPolicies and GlobalNetworkPolicies: each stored as the
// JSON of its policy struct at its prefix + name, written with casPut and
// deleted with casDelete. The daemon's per-network default profiles are
// not stored, so get lists only the profiles someone applied.

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// recordStore is a kindStore for a kind kept as one JSON record of T per
// name under prefix.
type recordStore[T any] struct {
	kind     *api.Kind
	prefix   string              // where the records are listed
	keyOf    func(string) string // a record's key
	notFound string              // added to "X "n" does not exist"
	// decode reads a record as the daemons do (strictly, validated).
	decode func(name string, raw []byte) (T, error)
	// wrap makes the resource of a record; the name is the key's.
	wrap   func(t T, name string) api.Resource
	unwrap func(r api.Resource) T
	hdr    func(wide bool) []string
	cells  func(r api.Resource, wide bool) []string
}

func (st recordStore[T]) key(name string) string { return st.keyOf(name) }

func (st recordStore[T]) get(ctx context.Context, s *datastore.Store, name string) (api.Object, error) {
	var it datastore.RawItem
	err := datastore.ErrNotFound
	if validName(name) {
		it, err = datastore.GetRaw(ctx, s, st.key(name))
	}
	if errors.Is(err, datastore.ErrNotFound) {
		return api.Object{}, api.Mark(datastore.ErrNotFound, "%s %q does not exist%s", st.kind.Name, name, st.notFound)
	}
	if err != nil {
		return api.Object{}, err
	}
	return st.object(name, it), nil
}

// object reads a stored record as the daemons do; one they would not
// enforce is marked invalid, with what could be read of it.
func (st recordStore[T]) object(name string, it datastore.RawItem) api.Object {
	t, err := st.decode(name, it.Value)
	o := api.Object{ResourceVersion: rvString(it.ModRevision)}
	if err != nil {
		var loose T
		_ = json.Unmarshal(it.Value, &loose)
		t, o.Invalid = loose, err.Error()
	}
	o.Resource = st.wrap(t, name)
	return o
}

// validName: a name from the command line that could not be a record's
// (one that reaches into another key) is simply not found.
func validName(name string) bool { return name != "" && !strings.Contains(name, "/") }

func (st recordStore[T]) list(ctx context.Context, s *datastore.Store) ([]api.Object, error) {
	items, err := datastore.ListRaw(ctx, s, st.prefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.Object, 0, len(items))
	for _, it := range items {
		out = append(out, st.object(api.NameUnder(it.Key, st.prefix), it))
	}
	return out, nil
}

func (st recordStore[T]) put(ctx context.Context, s *datastore.Store, o api.Object, mode ipam.PutMode) (bool, error) {
	v := st.unwrap(o.Resource)
	name := o.Resource.ResourceName()
	rv, err := parseRV(o)
	if err != nil {
		return false, err
	}
	if mode == ipam.PutCreate {
		rv = 0
	}
	return casPut(ctx, s, st.key(name), st.kind.Name, name, mode, rv, func(*T) T { return v })
}

func (st recordStore[T]) del(ctx context.Context, s *datastore.Store, o api.Object, _ bool) (string, error) {
	name := o.Resource.ResourceName()
	if !validName(name) {
		return "", api.Mark(datastore.ErrNotFound, "%s %q does not exist", st.kind.Name, name)
	}
	rv, err := parseRV(o)
	if err != nil {
		return "", err
	}
	return "", casDelete(ctx, s, st.key(name), st.kind.Name, name, rv)
}

func (st recordStore[T]) header(wide bool) []string { return st.hdr(wide) }

func (st recordStore[T]) row(o api.Object, wide bool, _ time.Time) []string {
	return st.cells(o.Resource, wide)
}

// nameOnly is an object of the kind that carries just name (delete KIND NAME).
func (st recordStore[T]) nameOnly(name string) api.Object {
	var t T
	return api.Object{Resource: st.wrap(t, name)}
}

var profileStore = recordStore[api.Profile]{
	kind:     api.ProfileKind,
	prefix:   api.ProfilesPrefix,
	keyOf:    api.ProfileKey,
	notFound: " (calicoctl get profiles lists the stored ones; a network without a stored profile of its name has the default one)",
	decode:   api.DecodeStoredProfile,
	wrap: func(p api.Profile, name string) api.Resource {
		p.Name = name
		return &p
	},
	unwrap: func(r api.Resource) api.Profile { return *r.(*api.Profile) },
	hdr: func(wide bool) []string {
		if wide {
			return []string{"NAME", "LABELS"}
		}
		return []string{"NAME"}
	},
	cells: func(r api.Resource, wide bool) []string {
		p := r.(*api.Profile)
		if wide {
			return []string{p.Name, api.LabelList(p.LabelsToApply)}
		}
		return []string{p.Name}
	},
}

var networkPolicyStore = recordStore[api.NetworkPolicy]{
	kind:     api.NetworkPolicyKind,
	prefix:   api.NetworkPoliciesPrefix,
	keyOf:    api.NetworkPolicyKey,
	notFound: " (calicoctl get networkpolicies lists them)",
	decode:   api.DecodeStoredNetworkPolicy,
	wrap: func(p api.NetworkPolicy, name string) api.Resource {
		p.Name = name
		return &p
	},
	unwrap: func(r api.Resource) api.NetworkPolicy { return *r.(*api.NetworkPolicy) },
	hdr:    policyHeader,
	cells: func(r api.Resource, wide bool) []string {
		p := r.(*api.NetworkPolicy)
		return policyRow(p.Name, &p.PolicySpec, wide)
	},
}

var globalNetworkPolicyStore = recordStore[api.GlobalNetworkPolicy]{
	kind:     api.GlobalNetworkPolicyKind,
	prefix:   api.GlobalNetworkPoliciesPrefix,
	keyOf:    api.GlobalNetworkPolicyKey,
	notFound: " (calicoctl get globalnetworkpolicies lists them)",
	decode:   api.DecodeStoredGlobalNetworkPolicy,
	wrap: func(p api.GlobalNetworkPolicy, name string) api.Resource {
		p.Name = name
		return &p
	},
	unwrap: func(r api.Resource) api.GlobalNetworkPolicy {
		return *r.(*api.GlobalNetworkPolicy)
	},
	hdr: policyHeader,
	cells: func(r api.Resource, wide bool) []string {
		p := r.(*api.GlobalNetworkPolicy)
		return policyRow(p.Name, &p.PolicySpec, wide)
	},
}

// policyHeader is calicoctl's: NAME, and ORDER and SELECTOR when wide (no
// NAMESPACE column: there are no namespaces).
func policyHeader(wide bool) []string {
	if wide {
		return []string{"NAME", "ORDER", "SELECTOR"}
	}
	return []string{"NAME"}
}

func policyRow(name string, s *api.PolicySpec, wide bool) []string {
	if !wide {
		return []string{name}
	}
	order := ""
	if s.Order != nil {
		order = strconv.FormatFloat(*s.Order, 'g', -1, 64)
	}
	return []string{name, order, s.Selector}
}
