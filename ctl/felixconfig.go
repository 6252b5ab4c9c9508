package ctl

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// felixConfigStore is the FelixConfiguration named default: the host
// protection settings, one record at api.FelixConfigKey (absent: the
// defaults).
type felixConfigStore struct{}

func checkFelixConfigName(name string) error {
	if name != api.FelixConfigName {
		return api.Mark(datastore.ErrNotFound, "FelixConfiguration %q does not exist: the host protection settings are the FelixConfiguration named default", name)
	}
	return nil
}

func (felixConfigStore) get(ctx context.Context, s *datastore.Store, name string) (api.Object, error) {
	if err := checkFelixConfigName(name); err != nil {
		return api.Object{}, err
	}
	c := api.DefaultFelixConfig()
	rev, err := s.Get(ctx, api.FelixConfigKey, &c)
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return api.Object{}, err
	}
	c.Normalize()
	return api.Object{Resource: &c, ResourceVersion: rvString(rev)}, nil
}

func (st felixConfigStore) list(ctx context.Context, s *datastore.Store) ([]api.Object, error) {
	o, err := st.get(ctx, s, api.FelixConfigName)
	if err != nil {
		return nil, err
	}
	return []api.Object{o}, nil
}

func (felixConfigStore) put(ctx context.Context, s *datastore.Store, o api.Object, mode ipam.PutMode) (bool, error) {
	if err := checkFelixConfigName(o.Resource.ResourceName()); err != nil {
		return false, err
	}
	c := *o.Resource.(*api.FelixConfig)
	rv, err := parseRV(o)
	if err != nil {
		return false, err
	}
	if mode == ipam.PutCreate {
		rv = 0
	}
	if mode == ipam.PutReplace {
		mode = ipam.PutApply // the defaults always exist, so there is always something to replace
	}
	return casPut(ctx, s, api.FelixConfigKey, "FelixConfiguration", api.FelixConfigName, mode, rv, func(*api.FelixConfig) api.FelixConfig { return c })
}

func (felixConfigStore) del(ctx context.Context, s *datastore.Store, o api.Object, _ bool) (string, error) {
	if err := checkFelixConfigName(o.Resource.ResourceName()); err != nil {
		return "", err
	}
	rv, err := parseRV(o)
	if err != nil {
		return "", err
	}
	return "", casDelete(ctx, s, api.FelixConfigKey, "FelixConfiguration", api.FelixConfigName, rv)
}

func (felixConfigStore) header(bool) []string {
	return []string{"NAME", "DEFAULTENDPOINTTOHOSTACTION", "ENDPOINTTOHOSTALLOWEDPORTS"}
}

func (felixConfigStore) row(o api.Object, _ bool, _ time.Time) []string {
	c := o.Resource.(*api.FelixConfig)
	ports := make([]string, len(c.EndpointToHostAllowedPorts))
	for i, p := range c.EndpointToHostAllowedPorts {
		ports[i] = p.String()
	}
	return []string{api.FelixConfigName, string(c.DefaultEndpointToHostAction), strings.Join(ports, ",")}
}

// namedFelixConfig is a FelixConfiguration with a wrong name, so that the
// store can say there is no such thing.
type namedFelixConfig string

func (n namedFelixConfig) ResourceKind() *api.Kind { return api.FelixConfigKind }
func (n namedFelixConfig) ResourceName() string    { return string(n) }
func (n namedFelixConfig) Normalize()              {}
func (n namedFelixConfig) Validate() error         { return nil }

func felixConfigNameOnly(name string) api.Object {
	if name != api.FelixConfigName {
		return api.Object{Resource: namedFelixConfig(name)}
	}
	return api.Object{Resource: &api.FelixConfig{}}
}
