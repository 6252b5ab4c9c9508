package ipam

// Read-only views of IPAM state for calicoctl (ipam show, ipam check,
// node status) and the two repairs it offers (ipam release, freeing a
// deleted node's empty blocks).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// ErrNotAllocated is wrapped when an address to release is not in use.
var ErrNotAllocated = errors.New("address not assigned")

// HandleRef is one handle record: handle holds IP.
type HandleRef struct {
	Handle string
	IP     netip.Addr
}

// AffinityRef is one affinity record: Host owns the block CIDR.
type AffinityRef struct {
	Host string
	CIDR string
}

// Snapshot is every IPAM-related record, read at one revision.
type Snapshot struct {
	Revision   int64
	Pools      []datastore.Item[api.IPPool]
	Blocks     []datastore.Item[Block]
	Affinities []AffinityRef
	Handles    []HandleRef
	Endpoints  []datastore.Item[api.Endpoint]
	Nodes      []datastore.Item[api.Node]
	// Undecodable lists records that could not be read ("key: error").
	Undecodable []string
}

// LoadSnapshot reads pools, blocks, affinities, handles, endpoints and nodes
// in one transaction, so they are consistent with each other.
func LoadSnapshot(ctx context.Context, s *datastore.Store) (*Snapshot, error) {
	prefixes := []string{datastore.PoolsPrefix, datastore.BlocksPrefix, datastore.AffinityPrefix,
		datastore.HandlesPrefix, datastore.EndpointsPrefix, datastore.NodesPrefix}
	ops := make([]clientv3.Op, len(prefixes))
	for i, p := range prefixes {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if p == datastore.AffinityPrefix || p == datastore.HandlesPrefix {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		ops[i] = clientv3.OpGet(p, opts...)
	}
	c, cancel := s.Ctx(ctx)
	defer cancel()
	resp, err := s.Client.Txn(c).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read IPAM records: %w", err)
	}
	snap := &Snapshot{Revision: resp.Header.Revision}
	bad := func(key []byte, err error) {
		snap.Undecodable = append(snap.Undecodable, fmt.Sprintf("%s: %v", key, err))
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var p api.IPPool
		if err := json.Unmarshal(kv.Value, &p); err != nil {
			bad(kv.Key, err)
			continue
		}
		snap.Pools = append(snap.Pools, datastore.Item[api.IPPool]{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: p})
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var b Block
		if err := json.Unmarshal(kv.Value, &b); err != nil {
			bad(kv.Key, err)
			continue
		}
		if !b.prefix().IsValid() || len(b.Allocations) != 1<<(b.prefix().Addr().BitLen()-b.prefix().Bits()) {
			bad(kv.Key, fmt.Errorf("block %q has %d allocation slots", b.CIDR, len(b.Allocations)))
			continue
		}
		snap.Blocks = append(snap.Blocks, datastore.Item[Block]{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: b})
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		rest := strings.TrimPrefix(string(kv.Key), datastore.AffinityPrefix)
		i := strings.LastIndex(rest, "/")
		if i < 0 {
			bad(kv.Key, errors.New("not host/cidr"))
			continue
		}
		snap.Affinities = append(snap.Affinities, AffinityRef{Host: rest[:i], CIDR: datastore.UnescapeCIDR(rest[i+1:])})
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		rest := strings.TrimPrefix(string(kv.Key), datastore.HandlesPrefix)
		i := strings.LastIndex(rest, "/")
		ip, err := netip.ParseAddr(rest[i+1:])
		if i < 0 || err != nil {
			bad(kv.Key, errors.New("not handle/ip"))
			continue
		}
		snap.Handles = append(snap.Handles, HandleRef{Handle: rest[:i], IP: ip})
	}
	for _, kv := range resp.Responses[4].GetResponseRange().Kvs {
		var e api.Endpoint
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			bad(kv.Key, err)
			continue
		}
		snap.Endpoints = append(snap.Endpoints, datastore.Item[api.Endpoint]{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: e})
	}
	for _, kv := range resp.Responses[5].GetResponseRange().Kvs {
		var n api.Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			bad(kv.Key, err)
			continue
		}
		snap.Nodes = append(snap.Nodes, datastore.Item[api.Node]{Key: string(kv.Key), ModRevision: kv.ModRevision, Value: n})
	}
	return snap, nil
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
		bu := BlockUsage{CIDR: b.prefix(), Host: b.Affinity, Size: len(b.Allocations), InUse: b.inUse()}
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

func (s *Snapshot) sortedBlocks() []datastore.Item[Block] {
	out := append([]datastore.Item[Block](nil), s.Blocks...)
	sort.Slice(out, func(i, j int) bool { return prefixLess(out[i].Value.prefix(), out[j].Value.prefix()) })
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
	Pool   *api.IPPool // the pool containing IP, nil when none
	Block  *BlockUsage // the block containing IP, nil when none is carved
	Handle string      // the allocation's handle, "" when IP is free
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
		if b.prefix().Contains(ip) {
			info.Block = &BlockUsage{CIDR: b.prefix(), Host: b.Affinity, Size: len(b.Allocations), InUse: b.inUse()}
			if info.Pool != nil {
				info.Block.Pool = info.Pool.Name
			}
			info.Handle = b.Allocations[b.ordinal(ip)]
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

// EndpointAddrs returns the addresses an endpoint record holds.
func EndpointAddrs(e api.Endpoint) []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{e.IPv4, e.IPv6} {
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func endpointHas(e api.Endpoint, ip netip.Addr) bool {
	for _, a := range EndpointAddrs(e) {
		if a == ip {
			return true
		}
	}
	return false
}

// Allocation is one address in use.
type Allocation struct {
	IP     netip.Addr
	Handle string
	Block  string
	Host   string // the block's host
}

// EndpointIssue is an endpoint whose address IPAM does not hold for it.
type EndpointIssue struct {
	Endpoint api.Endpoint
	IP       netip.Addr
	Reason   string
}

// BlockIssue is a block with a problem.
type BlockIssue struct {
	CIDR   string
	Host   string
	InUse  int
	Reason string
}

// RecordIssue is a handle or affinity record that disagrees with the blocks.
type RecordIssue struct {
	Key    string
	Reason string
}

// CheckReport is what Check found.
type CheckReport struct {
	Pools, Blocks, InUse, Endpoints, Nodes int

	// LeakedAllocations are addresses in use that no endpoint holds.
	LeakedAllocations []Allocation
	// EndpointsWithoutAllocation are endpoints whose address is free, or
	// that share their address with an earlier endpoint.
	EndpointsWithoutAllocation []EndpointIssue
	// BlocksHostGone are blocks affine to a host with no node record. It is
	// only filled when NodesKnown.
	BlocksHostGone []BlockIssue
	// NodesKnown is false when there are no node records at all, so hosts
	// cannot be judged.
	NodesKnown bool
	// BlocksNoPool are blocks inside no pool (their pool was deleted).
	BlocksNoPool []BlockIssue
	// RecordIssues are handle and affinity records that disagree with the
	// blocks, and records that could not be decoded.
	RecordIssues []RecordIssue
}

// Problems counts everything found.
func (r *CheckReport) Problems() int {
	return len(r.LeakedAllocations) + len(r.EndpointsWithoutAllocation) + len(r.BlocksHostGone) +
		len(r.BlocksNoPool) + len(r.RecordIssues)
}

// Check cross-checks blocks, handles, affinities, endpoints and nodes.
// An address allocated a moment ago for a container that is still starting
// shows as leaked until its endpoint is written.
func (s *Snapshot) Check() CheckReport {
	r := CheckReport{Pools: len(s.Pools), Blocks: len(s.Blocks), Endpoints: len(s.Endpoints), Nodes: len(s.Nodes), NodesKnown: len(s.Nodes) > 0}
	for _, u := range s.Undecodable {
		r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: u, Reason: "cannot be decoded"})
	}
	byIP := map[netip.Addr][]api.Endpoint{}
	for _, it := range s.Endpoints {
		for _, a := range EndpointAddrs(it.Value) {
			byIP[a] = append(byIP[a], it.Value)
		}
	}
	handles := map[HandleRef]bool{}
	for _, h := range s.Handles {
		handles[h] = true
	}
	nodes := map[string]bool{}
	for _, n := range s.Nodes {
		nodes[n.Value.Name] = true
	}
	affinities := map[AffinityRef]bool{}
	for _, a := range s.Affinities {
		affinities[a] = true
	}
	allocated := map[netip.Addr]string{}
	blocks := s.sortedBlocks()
	for _, it := range blocks {
		b := it.Value
		inUse := b.inUse()
		r.InUse += inUse
		for ord, h := range b.Allocations {
			if h == "" {
				continue
			}
			ip := b.addr(ord)
			allocated[ip] = h
			if len(byIP[ip]) == 0 {
				r.LeakedAllocations = append(r.LeakedAllocations, Allocation{IP: ip, Handle: h, Block: b.CIDR, Host: b.Affinity})
			}
			if !handles[HandleRef{Handle: h, IP: ip}] {
				r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: HandleKey(h, ip), Reason: fmt.Sprintf("missing: %s is allocated to handle %s in block %s", ip, h, b.CIDR)})
			}
		}
		if r.NodesKnown && b.Affinity != "" && !nodes[b.Affinity] {
			r.BlocksHostGone = append(r.BlocksHostGone, BlockIssue{CIDR: b.CIDR, Host: b.Affinity, InUse: inUse, Reason: "no node record for its host"})
		}
		inPool := false
		for _, p := range s.Pools {
			pp := p.Value.Prefix()
			if pp.Bits() <= b.prefix().Bits() && pp.Contains(b.prefix().Addr()) {
				inPool = true
			}
		}
		if !inPool {
			r.BlocksNoPool = append(r.BlocksNoPool, BlockIssue{CIDR: b.CIDR, Host: b.Affinity, InUse: inUse, Reason: "inside no IP pool"})
		}
		if b.Affinity != "" && !affinities[AffinityRef{Host: b.Affinity, CIDR: b.CIDR}] {
			r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: AffinityKey(b.Affinity, b.CIDR), Reason: fmt.Sprintf("missing: block %s is affine to %s", b.CIDR, b.Affinity)})
		}
	}
	for _, h := range s.Handles {
		if allocated[h.IP] != h.Handle {
			why := "the address is free"
			if other := allocated[h.IP]; other != "" {
				why = "the address is allocated to " + other
			}
			r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: HandleKey(h.Handle, h.IP), Reason: "stale: " + why})
		}
	}
	blockHost := map[string]string{}
	for _, it := range s.Blocks {
		blockHost[it.Value.CIDR] = it.Value.Affinity
	}
	for _, a := range s.Affinities {
		if h, ok := blockHost[a.CIDR]; !ok {
			r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: AffinityKey(a.Host, a.CIDR), Reason: "stale: no such block"})
		} else if h != a.Host {
			r.RecordIssues = append(r.RecordIssues, RecordIssue{Key: AffinityKey(a.Host, a.CIDR), Reason: fmt.Sprintf("stale: the block is affine to %q", h)})
		}
	}
	for _, it := range s.Endpoints {
		e := it.Value
		for _, ip := range EndpointAddrs(e) {
			if _, ok := allocated[ip]; !ok {
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

// ReleaseIP frees ip whoever holds it, for `calicoctl ipam release`. An
// address an endpoint record still holds is refused unless force: its
// container would keep an address IPAM may hand out again. A block left empty
// that lies in no pool is removed with its affinity. It returns the handle
// that held the address; an address not in use wraps ErrNotAllocated.
func ReleaseIP(ctx context.Context, s *datastore.Store, ip netip.Addr, force bool) (string, error) {
	if !force {
		eps, err := datastore.List[api.Endpoint](ctx, s, datastore.EndpointsPrefix)
		if err != nil {
			return "", err
		}
		for _, it := range eps {
			if e := it.Value; endpointHas(e, ip) {
				return "", fmt.Errorf("IP address %s is held by endpoint %s on host %s (network %s): remove that container, or pass --force to release it anyway",
					ip, abbrevID(e.ID), e.Host, abbrevID(e.NetworkID))
			}
		}
	}
	for attempt := 0; attempt < datastore.MaxCASAttempts; attempt++ {
		v, err := readPoolView(ctx, s)
		if err != nil {
			return "", err
		}
		var blk *datastore.Item[Block]
		for i := range v.blocks {
			if v.blocks[i].Value.prefix().Contains(ip) {
				blk = &v.blocks[i]
				break
			}
		}
		if blk == nil {
			return "", api.Mark(ErrNotAllocated, "IP address %s is not assigned: no block holds it", ip)
		}
		b := blk.Value.clone()
		h := b.release(b.ordinal(ip))
		if h == "" {
			return "", api.Mark(ErrNotAllocated, "IP address %s is not assigned", ip)
		}
		inPool := false
		for _, p := range v.pools {
			if pp := p.Value.Prefix(); pp.Bits() <= b.prefix().Bits() && pp.Contains(b.prefix().Addr()) {
				inPool = true
			}
		}
		ops := []clientv3.Op{clientv3.OpDelete(HandleKey(h, ip))}
		if b.inUse() == 0 && !inPool {
			ops = append(ops, clientv3.OpDelete(blk.Key))
			if b.Affinity != "" {
				ops = append(ops, clientv3.OpDelete(AffinityKey(b.Affinity, b.CIDR)))
			}
		} else {
			val, err := json.Marshal(b)
			if err != nil {
				return "", err
			}
			ops = append(ops, clientv3.OpPut(blk.Key, string(val)))
		}
		c, cancel := s.Ctx(ctx)
		resp, err := s.Client.Txn(c).If(clientv3.Compare(clientv3.ModRevision(blk.Key), "=", blk.ModRevision)).Then(ops...).Commit()
		cancel()
		if err != nil {
			return "", fmt.Errorf("release %s: %w", ip, err)
		}
		if resp.Succeeded {
			return h, nil
		}
	}
	return "", fmt.Errorf("release %s: %w", ip, datastore.ErrConflict)
}

// HostBlocksFreed reports what FreeHostBlocks did.
type HostBlocksFreed struct {
	Freed, Kept, InUse int
}

// FreeHostBlocks removes host's empty blocks with their affinities, for when
// its node is deleted; blocks with addresses in use are kept and counted.
// Affinity records of host that point at no block are removed too.
func FreeHostBlocks(ctx context.Context, s *datastore.Store, host string) (HostBlocksFreed, error) {
	var out HostBlocksFreed
	keys, err := s.Keys(ctx, datastore.AffinityPrefix+host+"/")
	if err != nil {
		return out, err
	}
	for _, k := range keys {
		cidr := datastore.UnescapeCIDR(k[strings.LastIndex(k, "/")+1:])
		var b Block
		_, err := s.Get(ctx, BlockKey(cidr), &b)
		if errors.Is(err, datastore.ErrNotFound) {
			if err := s.Delete(ctx, k); err != nil {
				return out, err
			}
			continue
		}
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
			out.InUse += b.inUse()
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
