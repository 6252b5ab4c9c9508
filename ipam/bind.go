package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// ErrNotAllocated is wrapped when an address is not assigned to who asks.
var ErrNotAllocated = errors.New("address not assigned")

// Bind records that endpointID holds the addresses handle was given
// (CreateEndpoint), in one transaction with ops (the endpoint's record).
// From then on a release that names only the address leaves them alone.
// An address whose allocation a stray release freed in the meantime is
// claimed again when it is still free; one held by someone else is an
// error, so that two endpoints never share an address. Binding again to the
// same endpoint is a no-op (a replay).
func (a *Allocator) Bind(ctx context.Context, handle string, ips []netip.Addr, endpointID string, ops ...datastore.Op) error {
	return a.setState(ctx, handle, ips, endpointID, api.StateBound, ops)
}

// Unbind records that endpointID is gone (DeleteEndpoint), in one
// transaction with ops (deleting the endpoint's record): Docker's
// ReleaseAddress, which follows, frees the addresses, and the garbage
// collector frees them if it never comes.
func (a *Allocator) Unbind(ctx context.Context, handle string, ips []netip.Addr, endpointID string, ops ...datastore.Op) error {
	return a.setState(ctx, handle, ips, endpointID, api.StateReleased, ops)
}

func (a *Allocator) setState(ctx context.Context, handle string, ips []netip.Addr, endpointID string, state api.HandleState, ops []datastore.Op) error {
	fresh, uncertain := false, false
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		conds, puts, missing, err := a.transitions(ctx, handle, ips, endpointID, state, fresh)
		if err != nil && uncertain {
			// An earlier attempt may have applied: say so, so that no one
			// takes this for "nothing changed".
			return fmt.Errorf("record endpoint %s's addresses: %w (and reading them back failed: %w)", abbrevID(endpointID), datastore.ErrUncertain, err)
		}
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			if state == api.StateReleased {
				missing = nil // nothing to mark: the address is already free or someone else's
			} else if err := a.reclaim(ctx, handle, missing, endpointID); err != nil {
				return err
			} else {
				fresh = true
				continue
			}
		}
		all := make([]datastore.Op, 0, len(puts)+len(ops))
		for _, p := range puts {
			all = append(all, datastore.PutAppended(p.key, p.rec))
		}
		res, err := a.store.CAS(ctx, conds, append(all, ops...))
		if errors.Is(err, datastore.ErrUncertain) {
			fresh, uncertain = true, true // read back on the next pass: the records say whether it was applied
			continue
		}
		if err != nil {
			return fmt.Errorf("record endpoint %s's addresses: %w", abbrevID(endpointID), err)
		}
		if res.Succeeded {
			for _, p := range puts {
				a.cacheHandle(p.key, p.rec, res.Revision)
			}
			return nil
		}
		fresh = true
	}
	return fmt.Errorf("record endpoint %s's addresses: %w", abbrevID(endpointID), datastore.ErrConflict)
}

// transitions reads (or takes from the cache) the records of handle's ips
// and returns the conditions and writes that move them to state for
// endpointID. Records already there need no write but are still compared.
// missing lists the addresses with no record of this handle.
type handlePut struct {
	key string
	rec api.HandleRecord
}

func (a *Allocator) transitions(ctx context.Context, handle string, ips []netip.Addr, endpointID string, state api.HandleState, fresh bool) (conds []datastore.Cond, puts []handlePut, missing []netip.Addr, err error) {
	for _, ip := range ips {
		key := api.HandleKey(a.host, handle, ip)
		rec, rev, _, err := a.handleFor(ctx, key, fresh)
		if err != nil {
			return nil, nil, nil, err
		}
		if rev == 0 {
			missing = append(missing, ip)
			continue
		}
		switch {
		case rec.State == state && rec.Endpoint == endpointID:
			// Already there (a replay): compare only.
		case state == api.StateBound && rec.State == api.StateBound && rec.Endpoint != endpointID:
			return nil, nil, nil, fmt.Errorf("address %s already belongs to endpoint %s on this host (two containers with the same MAC address?): give the container another MAC or address: %w",
				ip, abbrevID(rec.Endpoint), ErrInUse)
		case state == api.StateReleased && rec.Endpoint != endpointID:
			continue // another endpoint's: not ours to mark
		default:
			rec.State, rec.Endpoint, rec.Since = state, endpointID, a.now().UTC()
			puts = append(puts, handlePut{key, rec})
		}
		conds = append(conds, datastore.Unchanged(key, rev))
	}
	return conds, puts, missing, nil
}

// reclaim assigns again, bound to endpointID, addresses that a stray
// release freed between RequestAddress and CreateEndpoint.
func (a *Allocator) reclaim(ctx context.Context, handle string, ips []netip.Addr, endpointID string) error {
	for _, ip := range ips {
		if err := a.AssignBound(ctx, ip, handle, endpointID); err != nil {
			if errors.Is(err, ErrInUse) {
				return fmt.Errorf("address %s was released before the endpoint was created and is now in use by another container: retry: %w", ip, err)
			}
			return fmt.Errorf("address %s is not allocated to this endpoint: %w", ip, err)
		}
		a.log.Warn("address was freed before its endpoint was created; claimed it again", "ip", ip, "endpoint", endpointID)
	}
	return nil
}
