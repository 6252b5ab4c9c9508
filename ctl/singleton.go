package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// singletonStore serves a kind of which one record exists, named default,
// at one key: IPAMConfiguration, FelixConfiguration and BGPConfiguration.
// P is *T, the api.Resource.
type singletonStore[T any, P interface {
	*T
	api.Resource
}] struct {
	kind      *api.Kind
	name, key string
	// what finishes "<kind> "x" does not exist: " for another name.
	what string
	// defaults is what an absent record means (the kind then always
	// exists); nil when absence means something, said by absent.
	defaults func() T
	absent   string
	// strict decodes the stored record as the daemon does; nil: plain JSON.
	// A record it refuses is shown with its reason (Object.Invalid).
	strict func([]byte) (T, error)
	// deleted is told to the user after a delete.
	deleted string
	columns []string
	cells   func(*T) []string
}

func (st singletonStore[T, P]) checkName(name string) error {
	if name != st.name {
		return api.Mark(datastore.ErrNotFound, "%s %q does not exist: %s", st.kind.Name, name, st.what)
	}
	return nil
}

func (st singletonStore[T, P]) get(ctx context.Context, s *datastore.Store, name string) (api.Object, error) {
	if err := st.checkName(name); err != nil {
		return api.Object{}, err
	}
	var c T
	if st.defaults != nil {
		c = st.defaults()
	}
	it, err := datastore.GetRaw(ctx, s, st.key)
	switch {
	case errors.Is(err, datastore.ErrNotFound) && st.defaults != nil:
		P(&c).Normalize()
		return api.Object{Resource: P(&c)}, nil
	case errors.Is(err, datastore.ErrNotFound):
		return api.Object{}, api.Mark(datastore.ErrNotFound, "%s %q does not exist: %s", st.kind.Name, name, st.absent)
	case err != nil:
		return api.Object{}, err
	}
	o := api.Object{ResourceVersion: rvString(it.ModRevision)}
	if st.strict != nil {
		if d, err := st.strict(it.Value); err != nil {
			_ = json.Unmarshal(it.Value, &c)
			o.Invalid = err.Error()
		} else {
			c = d
		}
	} else if err := json.Unmarshal(it.Value, &c); err != nil {
		return api.Object{}, &datastore.DecodeError{Key: st.key, Err: err}
	}
	if o.Invalid == "" {
		P(&c).Normalize()
	}
	o.Resource = P(&c)
	return o, nil
}

func (st singletonStore[T, P]) list(ctx context.Context, s *datastore.Store) ([]api.Object, error) {
	o, err := st.get(ctx, s, st.name)
	if errors.Is(err, datastore.ErrNotFound) && st.defaults == nil {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []api.Object{o}, nil
}

func (st singletonStore[T, P]) put(ctx context.Context, s *datastore.Store, o api.Object, mode ipam.PutMode) (bool, error) {
	if err := st.checkName(o.Resource.ResourceName()); err != nil {
		return false, err
	}
	c := *o.Resource.(P)
	rv, err := parseRV(o)
	if err != nil {
		return false, err
	}
	if mode == ipam.PutCreate {
		rv = 0
	}
	if mode == ipam.PutReplace && st.defaults != nil {
		mode = ipam.PutApply // the defaults always exist, so there is always something to replace
	}
	return casPut(ctx, s, st.key, st.kind.Name, st.name, mode, rv, func(*T) T { return c })
}

func (st singletonStore[T, P]) del(ctx context.Context, s *datastore.Store, o api.Object, _ bool) (string, error) {
	if err := st.checkName(o.Resource.ResourceName()); err != nil {
		return "", err
	}
	rv, err := parseRV(o)
	if err != nil {
		return "", err
	}
	if err := casDelete(ctx, s, st.key, st.kind.Name, st.name, rv); err != nil {
		return "", err
	}
	return st.deleted, nil
}

func (st singletonStore[T, P]) header(bool) []string { return st.columns }

func (st singletonStore[T, P]) row(o api.Object, _ bool, _ time.Time) []string {
	return append([]string{st.name}, st.cells((*T)(o.Resource.(P)))...)
}

// nameOnly is the object "delete KIND NAME" names: the default one, or one
// of another name that the store then says does not exist.
func (st singletonStore[T, P]) nameOnly(name string) api.Object {
	if name != st.name {
		return api.Object{Resource: wrongName{st.kind, name}}
	}
	return api.Object{Resource: P(new(T))}
}

// wrongName is a singleton kind's object of another name than default.
type wrongName struct {
	kind *api.Kind
	name string
}

func (n wrongName) ResourceKind() *api.Kind { return n.kind }
func (n wrongName) ResourceName() string    { return n.name }
func (n wrongName) Normalize()              {}
func (n wrongName) Validate() error         { return nil }
