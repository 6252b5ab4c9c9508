package nftpolicy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/nftables"

	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// ErrNoState is ApplyDelta's answer when it does not know what the kernel
// holds (no Apply yet, or the last one failed): Apply in full.
var ErrNoState = errors.New("nftpolicy: the table's state is not known: apply in full")

// ApplyDelta makes the kernel follow an endpoint-only change (a
// policy.Tracker's Delta) in one transaction that touches only element
// lists: the changed endpoints' entries in the dispatch maps and the
// anti-spoofing sets, and the selector sets' addresses. Chains and rules
// are left as they are: every chain an endpoint dispatches to must be in
// the table already. On an error (ErrNoState included) nothing is changed
// and the caller applies in full; after a failed transaction the next
// Apply reads the kernel first.
func (e *Enforcer) ApplyDelta(d *policy.Delta) (Stats, error) {
	start := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.have == nil {
		return Stats{}, ErrNoState
	}
	old, want, err := e.deltaElems(d)
	if err != nil {
		return Stats{}, err
	}
	c, err := e.conn(false)
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	b := &batch{c: c, st: &st}
	type change struct {
		del, add map[string]nftables.SetElement
	}
	changes := map[string]change{}
	for _, name := range sortedKeys(want) {
		h := e.have.sets[name]
		ch := change{del: map[string]nftables.SetElement{}, add: map[string]nftables.SetElement{}}
		for id, el := range old[name] {
			_, stays := want[name][id]
			if _, there := h.elems[id]; there && !stays {
				ch.del[id] = el
			}
		}
		for id, el := range want[name] {
			if _, there := h.elems[id]; !there {
				ch.add[id] = el
			}
		}
		s := h.proto
		s.Table = e.table
		// The two lists are disjoint: syncElements deletes exactly ch.del
		// and adds exactly ch.add.
		if err := syncElements(b, &s, name, &set{elems: ch.add}, &set{elems: ch.del}); err != nil {
			return st, err
		}
		changes[name] = ch
	}
	if b.n > 0 {
		if err := c.Flush(); err != nil {
			e.have = nil
			return st, fmt.Errorf("nftpolicy: apply an endpoint change to table %s: %w", e.cfg.Table, err)
		}
	}
	for name, ch := range changes {
		for id := range ch.del {
			delete(e.have.sets[name].elems, id)
		}
		for id, el := range ch.add {
			e.have.sets[name].elems[id] = el
		}
	}
	st.Duration = time.Since(start)
	return st, nil
}

// deltaElems are, by set, the elements d's endpoints and addresses had
// (old: to remove unless still wanted) and those they have now (want: to
// add unless there). Every set named, here or by d, gets a want entry.
func (e *Enforcer) deltaElems(d *policy.Delta) (old, want map[string]map[string]nftables.SetElement, err error) {
	old, want = map[string]map[string]nftables.SetElement{}, map[string]map[string]nftables.SetElement{}
	put := func(m map[string]map[string]nftables.SetElement, name string, els []nftables.SetElement) {
		if m[name] == nil {
			m[name] = map[string]nftables.SetElement{}
		}
		for _, el := range els {
			m[name][elemID(el)] = el
		}
	}
	for _, name := range []string{mapToWL, mapFromWL, setWLAddrs4, setWLAddrs6} {
		put(want, name, nil)
	}
	for _, ch := range d.Endpoints {
		for _, x := range []struct {
			ep *policy.LocalEndpoint
			m  map[string]map[string]nftables.SetElement
		}{{ch.Old, old}, {ch.New, want}} {
			if x.ep == nil {
				continue
			}
			in, eg, err := e.endpointChains(x.ep)
			if err != nil {
				return nil, nil, err
			}
			for name, els := range endpointElems(*x.ep, in, eg) {
				put(x.m, name, els)
			}
		}
	}
	for _, sc := range d.Sets {
		h := e.have.sets[sc.Name]
		if h == nil || h.immutable() || h.proto.IsMap {
			return nil, nil, fmt.Errorf("nftpolicy: set %s is not a selector set of the table: apply in full", sc.Name)
		}
		want4 := sc.Type == policy.SetIPv4Addrs
		for _, l := range [][]nftables.SetElement{addrElems(sc.Del), addrElems(sc.Add)} {
			for _, el := range l {
				if (len(el.Key) == 4) != want4 {
					return nil, nil, fmt.Errorf("set %s: address %x of the wrong family", sc.Name, el.Key)
				}
			}
		}
		put(old, sc.Name, addrElems(sc.Del))
		put(want, sc.Name, addrElems(sc.Add))
	}
	for name := range want {
		if e.have.sets[name] == nil {
			return nil, nil, fmt.Errorf("nftpolicy: set %s is not in the table: apply in full", name)
		}
	}
	return old, want, nil
}

// endpointChains names a local endpoint's ingress and egress chains, which
// must be in the table.
func (e *Enforcer) endpointChains(ep *policy.LocalEndpoint) (in, eg string, err error) {
	if !strings.HasPrefix(ep.Iface, e.cfg.IfacePrefix) || len(ep.Iface) > 15 {
		return "", "", fmt.Errorf("endpoint %s: interface %q must start with %q and be at most 15 characters", ep.Name, ep.Iface, e.cfg.IfacePrefix)
	}
	in, eg = endpointChainName("in", ep.Ingress), endpointChainName("eg", ep.Egress)
	for _, c := range []string{in, eg} {
		if e.have.chains[c] == nil {
			return "", "", fmt.Errorf("nftpolicy: endpoint %s needs chain %s, which the table lacks: apply in full", ep.Iface, c)
		}
	}
	return in, eg, nil
}
