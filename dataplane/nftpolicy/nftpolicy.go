// Package nftpolicy enforces network policy in the kernel with nftables. It
// owns one table (inet calico-libnetwork) and nothing else: it never lists,
// flushes or edits another table. It takes a policy.DesiredState and makes
// the table match it in one nftables transaction, touching only what
// changed. It knows nothing of Docker or etcd.
//
// Layout of the table:
//
//	chain forward (hook forward, priority filter): ct established,related accept;
//	                  iifname "cali*" jump from-wl; oifname "cali*" jump to-wl
//	chain input-from-wl (hook input, priority filter): iifname "cali*" jump wl-to-host
//	chain from-wl:    ct mark set ct mark | accepted; ct invalid drop; allow mark off; anti-spoofing (iifname .
//	                  saddr must be in @wl-addrs4/6); iifname vmap @from-wl-dispatch;
//	                  allow mark set: clear it, return; drop
//	chain to-wl:      ct mark set ct mark | accepted; ct invalid drop; oifname vmap @to-wl-dispatch; drop
//	chain wl-to-host: ct established,related accept; ICMPv6 neighbour discovery
//	                  accept; goto from-wl
//	chain ep-in-<h>, ep-eg-<h>: one per distinct (policies, profiles) list of
//	                  a direction, shared by every endpoint with that list:
//	                  jump pols-in-<h>; jump each profile chain; drop
//	                  (egress: return after any of them that set the allow mark)
//	chain pols-in-<h>, pols-eg-<h>: one per distinct policy list: jump each
//	                  policy chain (returning on the pass or allow mark); drop
//	chain gnp-*, np-*, pro-*: the rendered policies and profiles
//	sets s4-*, s6-* (selector members), n4-*, n6-*, pt-* (nets, ports)
//
// Established first: a packet of a known connection is accepted by the
// forward chain's first rule, so only a flow's first packet (and invalid
// ones) walks the endpoint chains, the anti-spoofing lookup included (the
// host table's fib check in prerouting still sees every packet). One base
// chain serves both directions, so an egress Allow cannot accept: it sets
// the allow mark and returns up to from-wl, which clears the mark and
// returns to the forward chain, where the receiver's ingress policy
// follows when the packet goes to an endpoint (a container-to-container
// packet needs the sender's egress and the receiver's ingress). Ingress
// Allow accepts.
//
// Packets the host sends to its containers go through the output hook,
// which this table leaves alone: they are always allowed. Accept here ends
// only this table's walk: every other table's chains still see the packet
// (Docker's FORWARD policy is DROP; the daemon accepts cali+ there, right
// after Docker's DOCKER-USER jump).
//
// Use: build a policy.Model (resources and every endpoint of the cluster),
// policy.Compute(model, nodeName), then Enforcer.Apply on every change and
// Enforcer.Resync from the periodic reconcile loop. A cali… interface that
// the desired state does not list passes no traffic, so an endpoint should
// be in the desired state (with its network's profile) by the time its
// container starts. Nothing is removed on shutdown: the table keeps
// enforcing until the next daemon converges it.
package nftpolicy

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// Defaults.
const (
	DefaultTable       = "calico-libnetwork"
	DefaultIfacePrefix = "cali"
	// DefaultPassMark is the packet mark bit a Pass sets for the moment it
	// takes to reach the profiles; it is cleared before the packet leaves
	// the table. Pick another bit if something else on the host uses it.
	DefaultPassMark uint32 = 0x00100000
	// DefaultAllowMark is the bit an egress Allow sets on its way back to
	// the forward chain, where the receiver's ingress policy follows; it
	// too is cleared before the packet leaves the table.
	DefaultAllowMark uint32 = 0x00200000
	// DefaultAcceptedCTMark is the conntrack mark bit set on every
	// connection whose first packet walks the endpoint chains (it stays
	// only if every table lets the packet through): the eBPF redirect path
	// (package bpfredirect) carries the rest of such a connection only.
	DefaultAcceptedCTMark uint32 = 0x00400000
)

// Names of the table's fixed objects.
const (
	chainForward   = "forward"
	chainInput     = "input-from-wl"
	chainFromWL    = "from-wl"
	chainToWL      = "to-wl"
	chainWLToHost  = "wl-to-host"
	mapFromWL      = "from-wl-dispatch"
	mapToWL        = "to-wl-dispatch"
	setWLAddrs4    = "wl-addrs4"
	setWLAddrs6    = "wl-addrs6"
	opTimeout      = 30 * time.Second
	socketBufBytes = 32 << 20
)

// Config configures an Enforcer. The zero value works.
type Config struct {
	// Table is the name of our inet table (DefaultTable).
	Table string
	// IfacePrefix starts every endpoint interface name (DefaultIfacePrefix).
	// Traffic on such an interface that no endpoint claims is dropped.
	IfacePrefix string
	// PassMark is one packet-mark bit (DefaultPassMark).
	PassMark uint32
	// AllowMark is another (DefaultAllowMark).
	AllowMark uint32
	// AcceptedCTMark is a conntrack mark bit (DefaultAcceptedCTMark).
	AcceptedCTMark uint32
	// NetNS is a file descriptor of the network namespace to program; 0 is
	// the caller's.
	NetNS int
	Log   *slog.Logger
}

// Enforcer keeps the kernel table in line with a DesiredState. Its methods
// are safe for concurrent use.
type Enforcer struct {
	cfg   Config
	table *nftables.Table
	log   *slog.Logger

	mu sync.Mutex
	// have is what the kernel holds as far as we know; nil means unknown:
	// the next Apply reads the kernel first.
	have *state
}

// New returns an Enforcer. Nothing is read or written until Apply.
func New(cfg Config) (*Enforcer, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.IfacePrefix == "" {
		cfg.IfacePrefix = DefaultIfacePrefix
	}
	if cfg.PassMark == 0 {
		cfg.PassMark = DefaultPassMark
	}
	if cfg.AllowMark == 0 {
		cfg.AllowMark = DefaultAllowMark
	}
	if cfg.AcceptedCTMark == 0 {
		cfg.AcceptedCTMark = DefaultAcceptedCTMark
	}
	if cfg.AcceptedCTMark&(cfg.AcceptedCTMark-1) != 0 {
		return nil, fmt.Errorf("nftpolicy: AcceptedCTMark %#x must be a single bit", cfg.AcceptedCTMark)
	}
	if cfg.PassMark&(cfg.PassMark-1) != 0 || cfg.AllowMark&(cfg.AllowMark-1) != 0 || cfg.PassMark == cfg.AllowMark {
		return nil, fmt.Errorf("nftpolicy: PassMark %#x and AllowMark %#x must be two different single bits", cfg.PassMark, cfg.AllowMark)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Enforcer{cfg: cfg, log: cfg.Log, table: &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyINet}}, nil
}

// Stats says what one Apply changed in the kernel.
type Stats struct {
	ReadKernel      bool // the kernel's table was read first (start, resync, after an error)
	TableCreated    bool
	ChainsAdded     int
	ChainsRewritten int // flushed and refilled (only when their rules changed)
	ChainsDeleted   int
	RulesWritten    int
	SetsAdded       int
	SetsDeleted     int
	ElementsAdded   int
	ElementsDeleted int
	Duration        time.Duration
}

// Changed reports whether anything was written.
func (s Stats) Changed() bool {
	return s.TableCreated || s.ChainsAdded+s.ChainsRewritten+s.ChainsDeleted+s.RulesWritten+
		s.SetsAdded+s.SetsDeleted+s.ElementsAdded+s.ElementsDeleted > 0
}

func (s Stats) String() string {
	return fmt.Sprintf("chains +%d ~%d -%d, rules written %d, sets +%d -%d, elements +%d -%d in %s",
		s.ChainsAdded, s.ChainsRewritten, s.ChainsDeleted, s.RulesWritten, s.SetsAdded, s.SetsDeleted,
		s.ElementsAdded, s.ElementsDeleted, s.Duration.Round(time.Microsecond))
}

// conn opens a netlink connection to nftables in our namespace; lasting
// keeps one socket for a series of reads (close it with CloseLasting).
func (e *Enforcer) conn(lasting bool) (*nftables.Conn, error) { return dial(e.cfg.NetNS, lasting) }

// dial opens a netlink connection to nftables in the namespace netns (0:
// the caller's).
func dial(netns int, lasting bool) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		// A transaction is one sendmsg, and the kernel answers every
		// message in it: the default socket buffers are too small for
		// thousands of endpoints. Forcing needs CAP_NET_ADMIN; without it,
		// take what the system allows.
		rc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = errors.Join(
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufBytes),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBufBytes))
		}); err != nil {
			return err
		}
		if serr != nil {
			_ = c.SetWriteBuffer(socketBufBytes)
			_ = c.SetReadBuffer(socketBufBytes)
		}
		return c.SetDeadline(time.Now().Add(opTimeout))
	})}
	if netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	if lasting {
		opts = append(opts, nftables.AsLasting())
	}
	return nftables.New(opts...)
}

// Apply makes the kernel enforce ds, in one transaction: either all of it
// takes effect or none. Only differences from what was applied last are
// written; the first call (and the first after an error) reads the
// kernel's table first, so a restarted daemon converges without ever
// removing the table: traffic is never left unfiltered.
func (e *Enforcer) Apply(ds *policy.DesiredState) (Stats, error) {
	start := time.Now()
	want, err := e.build(ds)
	if err != nil {
		return Stats{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var st Stats
	if e.have == nil {
		have, err := e.read()
		if err != nil {
			return st, fmt.Errorf("nftpolicy: read table %s: %w", e.cfg.Table, err)
		}
		e.have = have
		st.ReadKernel = true
	}
	if err := e.sync(want, e.have, &st); err != nil {
		e.have = nil
		return st, fmt.Errorf("nftpolicy: apply to table %s: %w", e.cfg.Table, err)
	}
	e.have = want.withoutExprs()
	st.Duration = time.Since(start)
	if st.Changed() {
		e.log.Debug("nftables policy applied", "table", e.cfg.Table, "stats", st.String())
	}
	return st, nil
}

// Resync forgets what it believes the kernel holds, reads the table and
// applies ds: anything changed behind our back is put right.
func (e *Enforcer) Resync(ds *policy.DesiredState) (Stats, error) {
	e.mu.Lock()
	e.have = nil
	e.mu.Unlock()
	return e.Apply(ds)
}

// Remove deletes our table, and only it (uninstall, tests). Traffic on
// endpoint interfaces is then no longer filtered by policy.
func (e *Enforcer) Remove() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.conn(false)
	if err != nil {
		return err
	}
	have, err := e.read()
	if err != nil {
		return err
	}
	e.have = nil
	if !have.tableExists {
		return nil
	}
	c.DelTable(e.table)
	return c.Flush()
}

// Present reports whether our table is in the kernel.
func (e *Enforcer) Present() (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.conn(false)
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == e.cfg.Table {
			return true, nil
		}
	}
	return false, nil
}

// Table is our table's name.
func (e *Enforcer) Table() string { return e.cfg.Table }

// Counts are the sizes of our table, read from the kernel.
type Counts struct {
	Chains   int
	Rules    int
	Sets     int
	Elements int // in the sets and maps that are not interval sets
}

// Counts reads the table's size from the kernel.
func (e *Enforcer) Counts() (Counts, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, err := e.read()
	if err != nil {
		return Counts{}, err
	}
	c := Counts{Chains: len(s.chains), Sets: len(s.sets)}
	for _, ch := range s.chains {
		c.Rules += len(ch.ruleHashes())
	}
	for _, set := range s.sets {
		c.Elements += len(set.elems)
	}
	return c, nil
}

// state is a table's contents: desired (with expressions) or as held by
// the kernel (hashes only).
type state struct {
	tableExists bool
	chains      map[string]*chain
	sets        map[string]*set
}

type chain struct {
	name  string
	hook  *nftables.ChainHook // nil for a regular chain
	rules []rule
	// hashes of the rules, for a chain read from the kernel.
	hashes []string
}

func (c *chain) ruleHashes() []string {
	if c.hashes != nil || len(c.rules) == 0 {
		return c.hashes
	}
	out := make([]string, len(c.rules))
	for i := range c.rules {
		out[i] = c.rules[i].hash()
	}
	return out
}

type set struct {
	proto nftables.Set // name, types and flags
	// elems by identity (key and verdict); interval sets are never diffed
	// (their names hash their contents), so only their initial elements count.
	elems   map[string]nftables.SetElement
	initial []nftables.SetElement
}

func (s *set) immutable() bool { return s.proto.Interval }

func (s *set) signature() string {
	key := s.proto.KeyType.GetNFTMagic()
	if s.proto.IsMap {
		key = 0 // the library mis-decodes a verdict map's key type
	}
	return fmt.Sprintf("key=%d interval=%v map=%v concat=%v", key, s.proto.Interval, s.proto.IsMap, s.proto.Concatenation)
}

func elemID(el nftables.SetElement) string {
	id := hex.EncodeToString(el.Key)
	if el.IntervalEnd {
		id += "/end"
	}
	if el.VerdictData != nil {
		id += "->" + strconv.Itoa(int(el.VerdictData.Kind)) + ":" + el.VerdictData.Chain
	}
	return id
}

func byKey(a, b nftables.SetElement) int { return bytes.Compare(a.Key, b.Key) }

func (s *state) withoutExprs() *state {
	out := &state{tableExists: true, chains: make(map[string]*chain, len(s.chains)), sets: s.sets}
	for n, c := range s.chains {
		out.chains[n] = &chain{name: n, hook: c.hook, hashes: c.ruleHashes()}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// sync queues the difference between want and have as one batch and sends
// it. Order within the batch: table, new chains (empty, so every jump and
// map verdict below finds its target), sets and elements, rules of new and
// changed chains, then removal of what is no longer wanted (flushed first,
// so no deleted chain is still jumped to).
func (e *Enforcer) sync(want, have *state, st *Stats) error {
	c, err := e.conn(false)
	if err != nil {
		return err
	}
	b := &batch{c: c, st: st}
	if !have.tableExists {
		c.AddTable(e.table)
		st.TableCreated = true
		b.n++
	}
	objs := e.addChains(b, want, have)
	for _, name := range sortedKeys(want.sets) {
		if err := e.syncSet(b, name, want.sets[name], have.sets[name]); err != nil {
			return err
		}
	}
	e.writeRules(b, want, have, objs)
	e.removeUnwanted(b, want, have)
	if b.n == 0 {
		return nil
	}
	return c.Flush()
}

// batch is one sync's netlink batch, what it counts and how many changes
// it holds.
type batch struct {
	c  *nftables.Conn
	st *Stats
	n  int // queued changes
}

// addChains queues every wanted chain that is not there yet (empty) and
// returns the chain objects of all wanted chains by name.
func (e *Enforcer) addChains(b *batch, want, have *state) map[string]*nftables.Chain {
	objs := map[string]*nftables.Chain{}
	for _, name := range sortedKeys(want.chains) {
		w := want.chains[name]
		ch := &nftables.Chain{Name: name, Table: e.table}
		if w.hook != nil {
			accept := nftables.ChainPolicyAccept
			ch.Hooknum, ch.Priority, ch.Type, ch.Policy = w.hook, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, &accept
		}
		objs[name] = ch
		if have.chains[name] == nil {
			b.c.AddChain(ch)
			b.st.ChainsAdded++
			b.n++
		}
	}
	return objs
}

// syncSet queues a new set with all its elements, or the elements an
// existing set (h) lacks or has too many of.
func (e *Enforcer) syncSet(b *batch, name string, w, h *set) error {
	s := w.proto
	s.Table = e.table
	if h == nil {
		elems := w.initial
		if !w.immutable() {
			elems = make([]nftables.SetElement, 0, len(w.elems))
			for _, el := range w.elems {
				elems = append(elems, el)
			}
			slices.SortFunc(elems, byKey)
		}
		parts := chunks(elems)
		if err := b.c.AddSet(&s, parts[0]); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
		for _, p := range parts[1:] {
			if err := b.c.SetAddElements(&s, p); err != nil {
				return fmt.Errorf("set %s: %w", name, err)
			}
		}
		b.st.SetsAdded++
		b.st.ElementsAdded += len(elems)
		b.n++
		return nil
	}
	if h.signature() != w.signature() {
		return fmt.Errorf("set %s in the kernel is %s, want %s: delete the table (nft delete table inet %s) and restart", name, h.signature(), w.signature(), e.cfg.Table)
	}
	if w.immutable() {
		return nil
	}
	return syncElements(b, &s, name, w, h)
}

// syncElements queues the deletion of the elements of h that w lacks and
// the addition of those w has and h lacks.
func syncElements(b *batch, s *nftables.Set, name string, w, h *set) error {
	var del, add []nftables.SetElement
	for id, el := range h.elems {
		if _, ok := w.elems[id]; !ok {
			del = append(del, el)
		}
	}
	for id, el := range w.elems {
		if _, ok := h.elems[id]; !ok {
			add = append(add, el)
		}
	}
	slices.SortFunc(del, byKey)
	slices.SortFunc(add, byKey)
	if len(del) > 0 {
		// The kernel finds an element to delete by its key alone.
		keys := make([]nftables.SetElement, len(del))
		for i, el := range del {
			keys[i] = nftables.SetElement{Key: el.Key, IntervalEnd: el.IntervalEnd}
		}
		for _, p := range chunks(keys) {
			if err := b.c.SetDeleteElements(s, p); err != nil {
				return fmt.Errorf("set %s: %w", name, err)
			}
		}
		b.st.ElementsDeleted += len(del)
		b.n++
	}
	if len(add) > 0 {
		for _, p := range chunks(add) {
			if err := b.c.SetAddElements(s, p); err != nil {
				return fmt.Errorf("set %s: %w", name, err)
			}
		}
		b.st.ElementsAdded += len(add)
		b.n++
	}
	return nil
}

// writeRules queues the rules of every new chain and rewrites (flush, then
// add) every chain whose rules changed.
func (e *Enforcer) writeRules(b *batch, want, have *state, objs map[string]*nftables.Chain) {
	for _, name := range sortedKeys(want.chains) {
		w, h := want.chains[name], have.chains[name]
		if h != nil && slices.Equal(h.ruleHashes(), w.ruleHashes()) {
			continue
		}
		if h != nil {
			if len(h.ruleHashes()) > 0 {
				b.c.FlushChain(objs[name])
			}
			b.st.ChainsRewritten++
			b.n++
		}
		for i := range w.rules {
			r := &w.rules[i]
			b.c.AddRule(&nftables.Rule{Table: e.table, Chain: objs[name], Exprs: r.exprs, UserData: r.userData()})
			b.st.RulesWritten++
			b.n++
		}
	}
}

// removeUnwanted queues the removal of chains and sets no longer wanted:
// all such chains are flushed before any is deleted, so none is still
// jumped to.
func (e *Enforcer) removeUnwanted(b *batch, want, have *state) {
	var gone []*nftables.Chain
	for _, name := range sortedKeys(have.chains) {
		if want.chains[name] == nil {
			ch := &nftables.Chain{Name: name, Table: e.table}
			b.c.FlushChain(ch)
			gone = append(gone, ch)
		}
	}
	for _, ch := range gone {
		b.c.DelChain(ch)
		b.st.ChainsDeleted++
		b.n++
	}
	for _, name := range sortedKeys(have.sets) {
		if want.sets[name] == nil {
			b.c.DelSet(&nftables.Set{Name: name, Table: e.table})
			b.st.SetsDeleted++
			b.n++
		}
	}
}

// chunks splits elements so that each message's element list stays well
// below 64 KiB: a netlink attribute's length is 16 bits, and a longer list
// would be silently cut.
func chunks(elems []nftables.SetElement) [][]nftables.SetElement {
	const budget = 32 << 10
	out := [][]nftables.SetElement{nil}
	size := 0
	for _, el := range elems {
		n := len(el.Key) + len(el.KeyEnd) + 48
		if el.VerdictData != nil {
			n += len(el.VerdictData.Chain) + 32
		}
		if size+n > budget && len(out[len(out)-1]) > 0 {
			out = append(out, nil)
			size = 0
		}
		out[len(out)-1] = append(out[len(out)-1], el)
		size += n
	}
	return out
}

// read lists our table as the kernel holds it.
func (e *Enforcer) read() (*state, error) {
	s := &state{chains: map[string]*chain{}, sets: map[string]*set{}}
	c, err := e.conn(true)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.CloseLasting() }()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == e.cfg.Table {
			s.tableExists = true
		}
	}
	if !s.tableExists {
		return s, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != e.cfg.Table {
			continue
		}
		rules, err := c.GetRules(e.table, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		kc := &chain{name: ch.Name, hook: ch.Hooknum, hashes: make([]string, 0, len(rules))}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			h := hashFromComment(comment)
			if h == "" {
				h = "?" // not ours: never equal to a wanted rule
			}
			kc.hashes = append(kc.hashes, h)
		}
		s.chains[ch.Name] = kc
	}
	sets, err := c.GetSets(e.table)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	for _, ks := range sets {
		if ks.Anonymous || strings.HasPrefix(ks.Name, "__") {
			continue
		}
		kset := &set{proto: *ks, elems: map[string]nftables.SetElement{}}
		kset.proto.Table = nil
		if !ks.Interval {
			elems, err := c.GetSetElements(ks)
			if err != nil {
				return nil, fmt.Errorf("list elements of set %s: %w", ks.Name, err)
			}
			for _, el := range elems {
				if ks.IsMap {
					el.VerdictData = decodeVerdict(el.Val)
					el.Val = nil
				}
				kset.elems[elemID(el)] = el
			}
		}
		s.sets[ks.Name] = kset
	}
	return s, nil
}

// decodeVerdict parses a verdict map element's data (NFTA_VERDICT_CODE,
// NFTA_VERDICT_CHAIN).
func decodeVerdict(b []byte) *expr.Verdict {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	ad.ByteOrder = binary.BigEndian
	v := &expr.Verdict{}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind = expr.VerdictKind(int32(ad.Uint32()))
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil {
		return nil
	}
	return v
}

func userdataComment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }
