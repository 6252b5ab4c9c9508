package ipam

// Read-only views of IPAM state for calicoctl (ipam show, ipam check,
// node status) and the two repairs it offers (ipam release, freeing a
// deleted node's empty blocks).

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sort"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// AffinityRef is one affinity record: Host owns the block CIDR.
type AffinityRef struct {
	Host        string
	CIDR        netip.Prefix
	ModRevision int64
}

// HandleItem is one handle record as stored.
type HandleItem struct {
	api.HandleRef
	Record      api.HandleRecord
	ModRevision int64
}

// Snapshot is every IPAM-related record, read at one revision.
type Snapshot struct {
	Revision   int64
	Pools      []datastore.Item[api.IPPool]
	Blocks     []datastore.Item[api.Block]
	Affinities []AffinityRef
	Handles    []HandleItem
	Endpoints  []datastore.Item[api.Endpoint]
	Nodes      []datastore.Item[api.Node]
	// Claims are the node names a running daemon holds (lease-bound keys).
	Claims map[string]bool
	// Undecodable lists records that could not be read ("key: error").
	Undecodable []string
	// unreadNodes are the names of node records that could not be read:
	// the node is not taken for deleted (its addresses stay its own).
	unreadNodes map[string]bool
}

// LoadSnapshot reads pools, blocks, affinities, handles, endpoints, nodes and
// node claims in one transaction, so they are consistent with each other.
func LoadSnapshot(ctx context.Context, s *datastore.Store) (*Snapshot, error) {
	res, err := s.Read(ctx,
		datastore.GetPrefix(api.PoolsPrefix), datastore.GetPrefix(api.BlocksPrefix),
		datastore.KeysUnder(api.AffinityPrefix), datastore.GetPrefix(api.HandlesPrefix),
		datastore.GetPrefix(api.EndpointsPrefix), datastore.GetPrefix(api.NodesPrefix),
		datastore.KeysUnder(api.ClaimsPrefix))
	if err != nil {
		return nil, fmt.Errorf("read IPAM records: %w", err)
	}
	snap := &Snapshot{Revision: res.Revision, Claims: map[string]bool{}, unreadNodes: map[string]bool{}}
	bad := func(key string, err error) {
		snap.Undecodable = append(snap.Undecodable, fmt.Sprintf("%s: %v", key, err))
	}
	snap.Pools = decodeAll[api.IPPool](res.Reads[0], bad)
	for _, rec := range res.Reads[1] {
		b, err := decodeBlock(rec)
		if err != nil {
			bad(rec.Key, err)
			continue
		}
		snap.Blocks = append(snap.Blocks, datastore.Item[api.Block]{Key: rec.Key, ModRevision: rec.ModRevision, Value: *b})
	}
	for _, rec := range res.Reads[2] {
		host, cidr, ok := api.ParseAffinityKey(rec.Key)
		if !ok {
			bad(rec.Key, errors.New("not host/cidr"))
			continue
		}
		snap.Affinities = append(snap.Affinities, AffinityRef{Host: host, CIDR: cidr, ModRevision: rec.ModRevision})
	}
	for _, rec := range res.Reads[3] {
		ref, ok := api.ParseHandleKey(rec.Key)
		if !ok {
			bad(rec.Key, errors.New("not host/handle/ip"))
			continue
		}
		hr, err := api.DecodeHandleRecord(rec.Value)
		if err != nil {
			bad(rec.Key, err)
			continue
		}
		snap.Handles = append(snap.Handles, HandleItem{HandleRef: ref, Record: hr, ModRevision: rec.ModRevision})
	}
	snap.Endpoints = decodeAll[api.Endpoint](res.Reads[4], bad)
	snap.Nodes = decodeAll[api.Node](res.Reads[5], func(key string, err error) {
		bad(key, err)
		if name, ok := api.ParseNodeKey(key); ok {
			snap.unreadNodes[name] = true
		}
	})
	for _, rec := range res.Reads[6] {
		if name, ok := api.ParseNodeClaimKey(rec.Key); ok {
			snap.Claims[name] = true
		}
	}
	return snap, nil
}

func decodeAll[T any](recs []datastore.Record, bad func(string, error)) []datastore.Item[T] {
	var out []datastore.Item[T]
	for _, rec := range recs {
		var v T
		if err := rec.Decode(&v); err != nil {
			bad(rec.Key, err)
			continue
		}
		out = append(out, datastore.Item[T]{Key: rec.Key, ModRevision: rec.ModRevision, Value: v})
	}
	return out
}

// BlockUsage is one block's occupancy.
type BlockUsage struct {
	CIDR  netip.Prefix
	Host  string // the host the block is affine to, "" when none
	Size  int
	InUse int
	Pool  string // the pool holding the block, "" when none does
}

// PoolUsage is one pool's occupancy; Blocks are its blocks in address order.
type PoolUsage struct {
	Pool   api.IPPool
	Size   *big.Int
	InUse  int
	Blocks []BlockUsage
}

// Usage returns each pool's occupancy, in address order (IPv4 first), and
// the blocks that lie in no pool (left by a pool deleted with --force).
func (s *Snapshot) Usage() ([]PoolUsage, []BlockUsage) {
	pools := make([]PoolUsage, 0, len(s.Pools))
	for _, it := range s.Pools {
		p := it.Value
		bits := p.Prefix().Addr().BitLen() - p.Prefix().Bits()
		pools = append(pools, PoolUsage{Pool: p, Size: new(big.Int).Lsh(big.NewInt(1), uint(bits))})
	}
	sort.Slice(pools, func(i, j int) bool { return prefixLess(pools[i].Pool.Prefix(), pools[j].Pool.Prefix()) })
	var orphans []BlockUsage
	for _, it := range s.sortedBlocks() {
		b := it.Value
		bu := BlockUsage{CIDR: b.CIDR, Host: b.Affinity, Size: len(b.Allocations), InUse: b.InUse()}
		placed := false
		for i := range pools {
			pp := pools[i].Pool.Prefix()
			if pp.Bits() <= bu.CIDR.Bits() && pp.Contains(bu.CIDR.Addr()) {
				bu.Pool = pools[i].Pool.Name
				pools[i].Blocks = append(pools[i].Blocks, bu)
				pools[i].InUse += bu.InUse
				placed = true
				break
			}
		}
		if !placed {
			orphans = append(orphans, bu)
		}
	}
	return pools, orphans
}

func (s *Snapshot) sortedBlocks() []datastore.Item[api.Block] {
	out := append([]datastore.Item[api.Block](nil), s.Blocks...)
	sort.Slice(out, func(i, j int) bool { return prefixLess(out[i].Value.CIDR, out[j].Value.CIDR) })
	return out
}

func prefixLess(a, b netip.Prefix) bool {
	if a.Addr() != b.Addr() {
		return a.Addr().Less(b.Addr())
	}
	return a.Bits() < b.Bits()
}

// BlocksOf returns the blocks affine to host, in address order.
func (s *Snapshot) BlocksOf(host string) []BlockUsage {
	pools, orphans := s.Usage()
	var out []BlockUsage
	for _, p := range pools {
		for _, b := range p.Blocks {
			if b.Host == host {
				out = append(out, b)
			}
		}
	}
	for _, b := range orphans {
		if b.Host == host {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return prefixLess(out[i].CIDR, out[j].CIDR) })
	return out
}

// IPInfo says who holds an address.
type IPInfo struct {
	IP     netip.Addr
	Pool   *api.IPPool     // the pool containing IP, nil when none
	Block  *BlockUsage     // the block containing IP, nil when none is carved
	Handle string          // the allocation's handle, "" when IP is free
	Owner  *api.Owner      // the allocation, nil when IP is free
	State  api.HandleState // the allocation's state, from its handle record
	// Endpoints are the endpoint records with this address (normally at most one).
	Endpoints []api.Endpoint
}

// Lookup finds who holds ip.
func (s *Snapshot) Lookup(ip netip.Addr) IPInfo {
	info := IPInfo{IP: ip}
	for _, it := range s.Pools {
		if it.Value.Prefix().Contains(ip) {
			p := it.Value
			info.Pool = &p
		}
	}
	for _, it := range s.Blocks {
		b := it.Value
		if b.CIDR.Contains(ip) {
			info.Block = &BlockUsage{CIDR: b.CIDR, Host: b.Affinity, Size: len(b.Allocations), InUse: b.InUse()}
			if info.Pool != nil {
				info.Block.Pool = info.Pool.Name
			}
			if o := b.Holder(ip); o != nil {
				info.Owner, info.Handle = o, o.Handle
				for _, h := range s.Handles {
					if h.IP == ip && h.Handle == o.Handle && (h.Host == o.Host || h.Host == "") {
						info.State = h.Record.State
					}
				}
			}
			break
		}
	}
	for _, it := range s.Endpoints {
		if endpointHas(it.Value, ip) {
			info.Endpoints = append(info.Endpoints, it.Value)
		}
	}
	return info
}

func endpointHas(e api.Endpoint, ip netip.Addr) bool {
	for _, a := range e.Addrs() {
		if a == ip {
			return true
		}
	}
	return false
}

// EndpointIssue is an endpoint whose address IPAM does not hold for it.
type EndpointIssue struct {
	Endpoint api.Endpoint
	IP       netip.Addr
	Reason   string
}

// BlockIssue is a block with a problem.
type BlockIssue struct {
	CIDR   netip.Prefix
	Host   string
	InUse  int
	Reason string
}

// RecordIssue is a record that disagrees with the blocks or cannot be read.
type RecordIssue struct {
	Key    string
	Reason string
}

// CheckReport is what Check found.
type CheckReport struct {
	Pools, Blocks, InUse, Endpoints, Nodes int

	// Garbage is what the garbage collector releases (each with when).
	Garbage []Finding
	// EndpointsWithoutAllocation are endpoints whose address is free, or
	// that share their address with an earlier endpoint. The daemon of the
	// endpoint's host claims such addresses again when it can.
	EndpointsWithoutAllocation []EndpointIssue
	// BlocksNoPool are blocks inside no pool (their pool was deleted).
	BlocksNoPool []BlockIssue
	// RecordIssues are affinity records that disagree with the blocks, and
	// records that could not be decoded.
	RecordIssues []RecordIssue
}

// Problems counts everything found.
func (r *CheckReport) Problems() int {
	return len(r.Garbage) + len(r.EndpointsWithoutAllocation) + len(r.BlocksNoPool) + len(r.RecordIssues)
}

// Check cross-checks blocks, handles, affinities, endpoints and nodes, and
// lists the garbage the collector would release with opt.
func (s *Snapshot) Check(opt CollectOptions) CheckReport {
	r := CheckReport{Pools: len(s.Pools), Blocks: len(s.Blocks), Endpoints: len(s.Endpoints), Nodes: len(s.Nodes)}
	for _, u := range s.Undecodable {
		r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: u, Reason: "cannot be decoded"})
	}
	r.Garbage = s.Garbage(opt)
	byIP := map[netip.Addr][]api.Endpoint{}
	for _, it := range s.Endpoints {
		for _, a := range it.Value.Addrs() {
			byIP[a] = append(byIP[a], it.Value)
		}
	}
	affinities := map[AffinityRef]bool{}
	for _, a := range s.Affinities {
		affinities[AffinityRef{Host: a.Host, CIDR: a.CIDR}] = true
	}
	allocated := map[netip.Addr]bool{}
	blockHost := map[netip.Prefix]string{}
	for _, it := range s.sortedBlocks() {
		b := it.Value
		blockHost[b.CIDR] = b.Affinity
		r.InUse += b.InUse()
		for ord, o := range b.Allocations {
			if o != nil {
				allocated[b.Addr(ord)] = true
			}
		}
		if !s.inSomePool(b.CIDR) {
			r.BlocksNoPool = append(r.BlocksNoPool, BlockIssue{CIDR: b.CIDR, Host: b.Affinity, InUse: b.InUse(), Reason: "inside no IP pool"})
		}
		if ok := affinities[AffinityRef{Host: b.Affinity, CIDR: b.CIDR}]; b.Affinity != "" && !ok {
			r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: api.AffinityKey(b.Affinity, b.CIDR), Reason: fmt.Sprintf("missing: block %s is affine to %s", b.CIDR, b.Affinity)})
		}
	}
	for _, a := range s.Affinities {
		if h, ok := blockHost[a.CIDR]; ok && h != a.Host {
			r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: api.AffinityKey(a.Host, a.CIDR), Reason: fmt.Sprintf("stale: the block is affine to %q", h)})
		}
	}
	for _, it := range s.Endpoints {
		e := it.Value
		for _, ip := range e.Addrs() {
			if !allocated[ip] {
				r.EndpointsWithoutAllocation = append(r.EndpointsWithoutAllocation, EndpointIssue{Endpoint: e, IP: ip, Reason: "address not allocated"})
			} else if others := byIP[ip]; len(others) > 1 && others[0].ID != e.ID {
				r.EndpointsWithoutAllocation = append(r.EndpointsWithoutAllocation, EndpointIssue{Endpoint: e, IP: ip,
					Reason: fmt.Sprintf("address also held by endpoint %s on host %s", abbrevID(others[0].ID), others[0].Host)})
			}
		}
	}
	sort.Slice(r.EndpointsWithoutAllocation, func(i, j int) bool {
		return r.EndpointsWithoutAllocation[i].IP.Less(r.EndpointsWithoutAllocation[j].IP)
	})
	sort.Slice(r.RecordIssues, func(i, j int) bool { return r.RecordIssues[i].Key < r.RecordIssues[j].Key })
	return r
}

func (s *Snapshot) inSomePool(b netip.Prefix) bool {
	for _, p := range s.Pools {
		if pp := p.Value.Prefix(); pp.Bits() <= b.Bits() && pp.Contains(b.Addr()) {
			return true
		}
	}
	return false
}

// ReleaseIP frees ip whoever holds it, for `calicoctl ipam release`. An
// address an endpoint record still holds is refused unless force: its
// container would keep an address IPAM may hand out again. It frees exactly
// the allocation it found (a new one made meanwhile is left alone). It
// returns the handle that held the address; an address not in use wraps
// ErrNotAllocated.
func ReleaseIP(ctx context.Context, s *datastore.Store, ip netip.Addr, force bool) (string, error) {
	snap, err := LoadSnapshot(ctx, s)
	if err != nil {
		return "", err
	}
	info := snap.Lookup(ip)
	if !force && len(info.Endpoints) > 0 {
		e := info.Endpoints[0]
		return "", fmt.Errorf("IP address %s is held by endpoint %s on host %s (network %s): remove that container, or pass --force to release it anyway",
			ip, abbrevID(e.ID), e.Host, abbrevID(e.NetworkID))
	}
	if info.Owner == nil {
		return "", api.Mark(ErrNotAllocated, "IP address %s is not assigned", ip)
	}
	ok, err := FreeOwned(ctx, s, ip, *info.Owner)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("IP address %s changed hands while releasing it: check again with calicoctl ipam show --ip %s", ip, ip)
	}
	return info.Owner.Handle, nil
}

// HostBlocksFreed reports what FreeHostBlocks did.
type HostBlocksFreed struct {
	Freed, Kept, InUse int
}

// FreeHostBlocks removes host's empty blocks with their affinities, for when
// its node is deleted; blocks with addresses in use are kept and counted
// (the garbage collector releases them after its grace period). Affinity
// records of host that point at no block are removed too.
func FreeHostBlocks(ctx context.Context, s *datastore.Store, host string) (HostBlocksFreed, error) {
	var out HostBlocksFreed
	keys, err := s.Keys(ctx, api.HostAffinitiesPrefix(host))
	if err != nil {
		return out, err
	}
	for _, k := range keys {
		_, cidr, ok := api.ParseAffinityKey(k)
		var rec datastore.Record
		if ok {
			res, err := s.Read(ctx, datastore.Get(api.BlockKey(cidr)))
			if err != nil {
				return out, err
			}
			rec, ok = res.One(0)
		}
		if !ok { // an affinity that points at no block
			if err := s.Delete(ctx, k); err != nil {
				return out, err
			}
			continue
		}
		b, err := decodeBlock(rec)
		if err != nil {
			return out, err
		}
		freed, err := freeBlockIfEmpty(ctx, s, cidr, host)
		if err != nil {
			return out, err
		}
		if freed {
			out.Freed++
		} else if b.Affinity == host {
			out.Kept++
			out.InUse += b.InUse()
		}
	}
	return out, nil
}

func abbrevID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
