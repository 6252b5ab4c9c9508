// Package sharing shares calico networks between hosts by name. Docker
// keeps networks per host and never tells a driver a network's name, so the
// daemon learns names from the Docker API (never from inside a plugin
// handler), publishes each network in etcd, and creates the networks other
// hosts published in its own Docker. Removing a network on any host removes
// it everywhere.
package sharing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/agent"
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/docker/engineapi"
)

// SharedLabel marks networks this daemon created because another host
// published them.
const SharedLabel = "org.projectcalico.shared"

// Docker is what the syncer needs from the engine.
type Docker interface {
	Networks(ctx context.Context, driver string) ([]engineapi.Network, error)
	CreateNetwork(ctx context.Context, req engineapi.CreateNetwork) (string, error)
	RemoveNetwork(ctx context.Context, idOrName string) error
}

// Syncer keeps this host's calico networks and the shared records in step.
type Syncer struct {
	store      *datastore.Store
	docker     Docker
	host       string
	drivers    []string // network driver names as Docker reports them; the first creates
	ipamDriver string
	log        *slog.Logger
	kick       agent.Kicker
	warned     map[string]bool
	// Observer is told of every pass (the daemon's status and metrics).
	Observer agent.Observer
}

// New returns a syncer. driver is a comma-separated list of the names
// Docker may report for this driver (the legacy name, a managed plugin's
// NAME:TAG); networks are created on other hosts with the first.
func New(store *datastore.Store, docker Docker, host, driver, ipamDriver string, log *slog.Logger) *Syncer {
	var drivers []string
	for _, d := range strings.Split(driver, ",") {
		if d = strings.TrimSpace(d); d != "" {
			drivers = append(drivers, d)
		}
	}
	if len(drivers) == 0 {
		drivers = []string{"calico"}
	}
	return &Syncer{store: store, docker: docker, host: host, drivers: drivers, ipamDriver: ipamDriver, log: log,
		kick: agent.NewKicker(), warned: map[string]bool{}}
}

// Kick asks for a sync now and again shortly: CreateNetwork runs before
// Docker has recorded the network, so the first pass may not see it yet. It
// never blocks (handlers call it).
func (s *Syncer) Kick() {
	s.kickNow()
	time.AfterFunc(300*time.Millisecond, s.kickNow)
}

func (s *Syncer) kickNow() { s.kick.Kick() }

// Run syncs on every kick, on every change to the shared records, and every
// interval, until ctx ends; the mirror of the shared records is joined
// before it returns.
func (s *Syncer) Run(ctx context.Context, interval time.Duration) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		m := agent.Mirrored{Name: "netsync-mirror", Store: s.store, Prefixes: []string{api.SharedNetworksPrefix}, Model: sharedChanges{s},
			Options: datastore.MirrorOptions{Debounce: 10 * time.Millisecond, Resync: time.Minute}}
		m.Run(ctx)
	}()
	a := agent.Periodic{Name: "netsync", Every: interval, Timeout: -1, Kick: s.kick, Observer: s.Observer, Log: s.log,
		Pass: func(ctx context.Context) (bool, error) {
			err := s.Sync(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Debug("network sync incomplete", "err", err)
			}
			return false, err
		}}
	a.Run(ctx)
}

// sharedChanges kicks a pass whenever the shared records change (the pass
// reads them itself).
type sharedChanges struct{ s *Syncer }

func (sharedChanges) Reset([]datastore.KV) {}
func (sharedChanges) Put(string, []byte)   {}
func (sharedChanges) Delete(string)        {}
func (c sharedChanges) Apply(bool) error   { c.s.kickNow(); return nil }
func (c sharedChanges) Failed(err error) {
	c.s.log.Debug("shared networks: cannot read etcd", "err", err)
}

// Sync runs one pass.
func (s *Syncer) Sync(ctx context.Context) error {
	var local []engineapi.Network
	seen := map[string]bool{}
	for _, d := range s.drivers {
		ns, err := s.docker.Networks(ctx, d)
		if err != nil {
			return err
		}
		for _, n := range ns {
			if !seen[n.ID] {
				seen[n.ID] = true
				local = append(local, n)
			}
		}
	}
	items, bad, err := datastore.ListReadable[api.SharedNetwork](ctx, s.store, api.SharedNetworksPrefix)
	if err != nil {
		return err
	}
	shared := map[string]api.SharedNetwork{}
	for _, it := range items {
		shared[it.Value.Name] = it.Value
	}
	// A record that does not decode is reported, and only its network is
	// treated apart: a host that has it rewrites the record from its own
	// copy, the others leave the name alone until then. Every other network
	// goes on being shared.
	unreadable := map[string]*datastore.DecodeError{} // by network name
	for _, b := range bad {
		unreadable[api.NameUnder(b.Key, api.SharedNetworksPrefix)] = b
	}
	errs := s.unreadable(unreadable)
	localNames := map[string]bool{}
	for _, n := range local {
		localNames[n.Name] = true
		if b := unreadable[n.Name]; b != nil {
			if err := s.heal(ctx, n, b); err != nil {
				errs = append(errs, fmt.Errorf("network %s: %w", n.Name, err))
			}
			continue
		}
		if err := s.syncLocal(ctx, n, shared); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.Name, err))
		}
	}
	names := make([]string, 0, len(shared))
	for name := range shared {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if localNames[name] {
			continue
		}
		sn := shared[name]
		if _, err := s.docker.CreateNetwork(ctx, toCreate(sn, s.drivers[0], s.ipamDriver)); err != nil {
			if !s.warned["create/"+name] {
				s.log.Warn("cannot create shared network in this host's Docker", "network", name, "err", err)
				s.warned["create/"+name] = true
			}
			errs = append(errs, err)
			continue
		}
		delete(s.warned, "create/"+name)
		s.log.Info("created network shared by another host", "network", name, "createdBy", sn.CreatedBy)
	}
	return errors.Join(errs...)
}

// heal replaces a shared record that does not decode with this host's copy
// of the network, which Docker holds with its settings; the compare on the
// record's revision leaves a record written meanwhile alone.
func (s *Syncer) heal(ctx context.Context, n engineapi.Network, b *datastore.DecodeError) error {
	var rec api.Network
	if _, err := s.store.Get(ctx, api.NetworkKey(n.ID), &rec); errors.Is(err, datastore.ErrNotFound) {
		return nil // not one of ours
	} else if err != nil {
		return err
	}
	res, err := s.store.CAS(ctx, []datastore.Cond{datastore.Unchanged(b.Key, b.ModRevision)},
		[]datastore.Op{datastore.Put(b.Key, fromDocker(n, s.host))})
	if err != nil {
		return fmt.Errorf("rewrite %s: %w", b.Key, err)
	}
	if res.Succeeded {
		s.log.Warn("rewrote a shared network record that did not decode from this host's copy of the network", "network", n.Name, "key", b.Key)
	}
	return nil
}

// unreadable warns once per corrupt shared record and names each in the
// pass's error, so that calicoctl node status shows it until it is fixed.
func (s *Syncer) unreadable(bad map[string]*datastore.DecodeError) []error {
	var errs []error
	for k := range s.warned {
		if name, ok := strings.CutPrefix(k, "bad/"); ok && bad[name] == nil {
			delete(s.warned, k) // fixed: warn again should it break again
		}
	}
	for _, name := range slices.Sorted(maps.Keys(bad)) {
		b := bad[name]
		err := fmt.Errorf("shared network record %s does not decode (%v): a host that has network %q rewrites it from its own copy; until then the others leave that network as it is",
			b.Key, b.Err, name)
		if !s.warned["bad/"+name] {
			s.log.Warn("skipping a shared network record that does not decode", "key", b.Key, "err", b.Err)
			s.warned["bad/"+name] = true
		}
		errs = append(errs, err)
	}
	return errs
}

func (s *Syncer) syncLocal(ctx context.Context, n engineapi.Network, shared map[string]api.SharedNetwork) error {
	var rec api.Network
	_, err := s.store.Get(ctx, api.NetworkKey(n.ID), &rec)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil // created before this datastore, or not through us
	}
	if err != nil {
		return err
	}
	sn, exists := shared[n.Name]
	fromSync := n.Labels[SharedLabel] == "true"
	switch {
	case exists:
		if !sameConfig(sn, fromDocker(n, s.host)) && !s.warned["differs/"+n.Name] {
			s.log.Warn("network exists on another host with other settings; containers still share its name and pools", "network", n.Name)
			s.warned["differs/"+n.Name] = true
		}
		return s.mark(ctx, n, true)
	case rec.Published || fromSync || rec.Withdrawn:
		// Removed on another host: remove here too. The list above may be
		// older than a shared record made since (the name created again),
		// so read it once more before removing a network Docker lists.
		var cur api.SharedNetwork
		if _, err := s.store.Get(ctx, api.SharedNetworkKey(n.Name), &cur); err == nil {
			return s.mark(ctx, n, true)
		} else if !errors.Is(err, datastore.ErrNotFound) {
			return err
		}
		if err := s.withdraw(ctx, n); err != nil {
			return err
		}
		if err := s.docker.RemoveNetwork(ctx, n.ID); err != nil {
			if !s.warned["rm/"+n.Name] {
				s.log.Warn("network was removed on another host but cannot be removed here (containers still attached?): remove them, then the network", "network", n.Name, "err", err)
				s.warned["rm/"+n.Name] = true
			}
			return err
		}
		s.log.Info("removed network deleted on another host", "network", n.Name)
		return nil
	default:
		sn := fromDocker(n, s.host)
		if _, err := s.store.Create(ctx, api.SharedNetworkKey(n.Name), sn); err != nil {
			return err
		}
		s.log.Info("published network to other hosts", "network", n.Name)
		return s.mark(ctx, n, true)
	}
}

func (s *Syncer) mark(ctx context.Context, n engineapi.Network, published bool) error {
	return datastore.Update(ctx, s.store, api.NetworkKey(n.ID), func(cur *api.Network) (*api.Network, error) {
		if cur == nil || (cur.Name == n.Name && cur.Published == published && !cur.Withdrawn) {
			return nil, datastore.ErrNoChange
		}
		cur.Name, cur.Published, cur.Withdrawn = n.Name, published, false
		return cur, nil
	})
}

// withdraw marks this host's copy as going because its shared record is
// gone, before Docker is asked to remove it: DeleteNetwork then leaves the
// shared record alone. (Forgetting it there would delete a record made
// meanwhile for a new network of the same name, and every host would
// remove that network while Docker lists it and containers start on it.)
func (s *Syncer) withdraw(ctx context.Context, n engineapi.Network) error {
	return datastore.Update(ctx, s.store, api.NetworkKey(n.ID), func(cur *api.Network) (*api.Network, error) {
		if cur == nil || cur.Withdrawn {
			return nil, datastore.ErrNoChange
		}
		cur.Withdrawn = true
		return cur, nil
	})
}

// Forget removes a network's shared record: the user removed it on this
// host, so every host removes it. Called from the DeleteNetwork handler; it
// only touches etcd.
func Forget(ctx context.Context, s *datastore.Store, name string) error {
	if name == "" {
		return nil
	}
	return s.Delete(ctx, api.SharedNetworkKey(name))
}

func fromDocker(n engineapi.Network, host string) api.SharedNetwork {
	sn := api.SharedNetwork{Name: n.Name, EnableIPv6: n.EnableIPv6, CreatedBy: host, CreatedAt: time.Now().UTC()}
	for _, c := range n.IPAM.Config {
		p, err := netip.ParsePrefix(c.Subnet)
		if c.Subnet == "" || (err == nil && p.Bits() == 0) {
			// No --subnet: calico-ipam answered 0.0.0.0/0 (::/0), which
			// means "any pool" and must not be passed on as a --subnet.
			continue
		}
		sub := api.Subnet{Subnet: c.Subnet, IPRange: c.IPRange}
		if err == nil && p.Addr().Is6() {
			sn.IPv6 = append(sn.IPv6, sub)
		} else {
			sn.IPv4 = append(sn.IPv4, sub)
		}
	}
	if len(n.Options) > 0 {
		sn.Options = maps.Clone(n.Options)
	}
	if len(n.IPAM.Options) > 0 {
		sn.IPAMOptions = maps.Clone(n.IPAM.Options)
	}
	return sn
}

func sameConfig(a, b api.SharedNetwork) bool {
	return a.EnableIPv6 == b.EnableIPv6 && fmt.Sprint(a.IPv4) == fmt.Sprint(b.IPv4) && fmt.Sprint(a.IPv6) == fmt.Sprint(b.IPv6) &&
		maps.Equal(a.Options, b.Options)
}

func toCreate(sn api.SharedNetwork, driver, ipamDriver string) engineapi.CreateNetwork {
	req := engineapi.CreateNetwork{
		Name: sn.Name, CheckDuplicate: true, Driver: driver, EnableIPv6: sn.EnableIPv6,
		IPAM:    engineapi.IPAM{Driver: ipamDriver, Options: sn.IPAMOptions},
		Options: sn.Options, Labels: map[string]string{SharedLabel: "true"},
	}
	for _, sub := range append(append([]api.Subnet{}, sn.IPv4...), sn.IPv6...) {
		req.IPAM.Config = append(req.IPAM.Config, engineapi.IPAMConfig{Subnet: sub.Subnet, IPRange: sub.IPRange})
	}
	return req
}
