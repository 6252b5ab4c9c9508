package metrics

import (
	"encoding/json"
	"net/netip"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// IPAMPrefixes are what IPAMStats mirrors.
var IPAMPrefixes = []string{api.PoolsPrefix, api.BlocksPrefix}

// blockUse is what one block record says.
type blockUse struct {
	cidr     netip.Prefix
	affinity string
	inUse    int
	mine     int // addresses held by this host
}

// IPAMStats is an agent.Model (run it as an agent.Mirrored over
// IPAMPrefixes): from the pools and blocks it sets the blocks this host
// owns and the addresses in use, per pool, without reading etcd at scrape.
type IPAMStats struct {
	host string

	mu     sync.Mutex
	pools  map[string]netip.Prefix // key -> CIDR
	names  map[string]string       // key -> pool name
	blocks map[string]blockUse     // by key

	owned   prometheus.Gauge
	inUse   *prometheus.GaugeVec
	mine    *prometheus.GaugeVec
	nblocks *prometheus.GaugeVec
}

// NewIPAMStats registers the IPAM gauges of host in m.
func (m *Metrics) NewIPAMStats(host string) *IPAMStats {
	s := &IPAMStats{host: host, pools: map[string]netip.Prefix{}, names: map[string]string{}, blocks: map[string]blockUse{},
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "ipam", Name: "blocks_owned",
			Help: "Blocks affine to this host."}),
		inUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "ipam", Name: "addresses_in_use",
			Help: "Addresses allocated in a pool, on every host."}, []string{"pool"}),
		mine: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "ipam", Name: "host_addresses_in_use",
			Help: "Addresses allocated in a pool to this host."}, []string{"pool"}),
		nblocks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "ipam", Name: "blocks",
			Help: "Blocks carved from a pool, on every host."}, []string{"pool"}),
	}
	m.Registry.MustRegister(s.owned, s.inUse, s.mine, s.nblocks)
	return s
}

// Reset, Put, Delete and Apply make IPAMStats an agent.Model.
func (s *IPAMStats) Reset(kvs []datastore.KV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pools, s.names, s.blocks = map[string]netip.Prefix{}, map[string]string{}, map[string]blockUse{}
	for _, kv := range kvs {
		s.put(kv.Key, kv.Value)
	}
}

func (s *IPAMStats) Put(key string, val []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(key, val)
}

func (s *IPAMStats) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pools, key)
	delete(s.names, key)
	delete(s.blocks, key)
}

func (s *IPAMStats) put(key string, val []byte) {
	switch {
	case strings.HasPrefix(key, api.PoolsPrefix):
		var p api.IPPool
		if json.Unmarshal(val, &p) != nil {
			return
		}
		if pp, err := netip.ParsePrefix(p.CIDR); err == nil {
			s.pools[key], s.names[key] = pp.Masked(), p.Name
		}
	case strings.HasPrefix(key, api.BlocksPrefix):
		var b api.Block
		if json.Unmarshal(val, &b) != nil || !b.CIDR.IsValid() {
			return
		}
		u := blockUse{cidr: b.CIDR, affinity: b.Affinity}
		for _, o := range b.Allocations {
			if o != nil {
				u.inUse++
				if o.Host == s.host {
					u.mine++
				}
			}
		}
		s.blocks[key] = u
	}
}

// Apply sets the gauges; it touches no kernel state.
func (s *IPAMStats) Apply(bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	owned := 0
	inUse, mine, blocks := map[string]int{}, map[string]int{}, map[string]int{}
	for _, name := range s.names {
		inUse[name], mine[name], blocks[name] = 0, 0, 0
	}
	for _, b := range s.blocks {
		if b.affinity == s.host {
			owned++
		}
		pool := s.poolOf(b.cidr)
		inUse[pool] += b.inUse
		mine[pool] += b.mine
		blocks[pool]++
	}
	s.owned.Set(float64(owned))
	for _, v := range []*prometheus.GaugeVec{s.inUse, s.mine, s.nblocks} {
		v.Reset() // a deleted pool's series goes
	}
	for pool, n := range inUse {
		s.inUse.WithLabelValues(pool).Set(float64(n))
		s.mine.WithLabelValues(pool).Set(float64(mine[pool]))
		s.nblocks.WithLabelValues(pool).Set(float64(blocks[pool]))
	}
	return nil
}

// poolOf names the pool holding a block ("" when none does: its pool was
// deleted while the block still held addresses).
func (s *IPAMStats) poolOf(b netip.Prefix) string {
	for key, p := range s.pools {
		if p.Contains(b.Addr()) {
			return s.names[key]
		}
	}
	return ""
}
