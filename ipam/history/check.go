package history

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strings"
)

// Rule names an invariant the checker enforces.
type Rule string

const (
	// RuleDoubleHolder: two owners certainly held one address at once.
	RuleDoubleHolder Rule = "two holders at once"
	// RuleLost: an acknowledged allocation, not yet released, is not in etcd.
	RuleLost Rule = "acknowledged allocation missing from etcd"
	// RuleLostBeforeBind: Bind found the allocation gone (and claimed the
	// address again, or found it taken).
	RuleLostBeforeBind Rule = "allocation disappeared before its endpoint was created"
	// RuleState: the handle record disagrees with the last acknowledged call.
	RuleState Rule = "handle record in the wrong state"
	// RuleUnexplained: etcd holds an allocation no client asked for, or at
	// an address its client was not given.
	RuleUnexplained Rule = "allocation no client asked for"
	// RuleNotFreed: etcd still holds an allocation after its release (or
	// the collector's) was acknowledged.
	RuleNotFreed Rule = "allocation still in etcd after its release was acknowledged"
	// RuleReplay: a replayed request was answered differently from the
	// first (another address, or refused).
	RuleReplay Rule = "replay answered differently"
	// RuleReplayFreedLive: a replayed release freed an address another owner
	// held.
	RuleReplayFreedLive Rule = "replayed release freed a live allocation"
	// RuleCollectedLive: the collector freed an allocation its client held.
	RuleCollectedLive Rule = "collector freed a live allocation"
	// RuleTwoAddresses: one handle holds two addresses.
	RuleTwoAddresses Rule = "one request holds two addresses"
	// RuleDangling: a handle record whose allocation no block holds.
	RuleDangling Rule = "handle record without its allocation"
	// RuleNoRecord: an allocation without its handle record.
	RuleNoRecord Rule = "allocation without its handle record"
	// RuleMalformed: the history itself is inconsistent (a harness bug).
	RuleMalformed Rule = "history not well formed"
)

// Violation is one broken invariant.
type Violation struct {
	Rule Rule
	IP   netip.Addr
	What string
}

func (v Violation) String() string {
	if v.IP.IsValid() {
		return fmt.Sprintf("%s: %s: %s", v.Rule, v.IP, v.What)
	}
	return fmt.Sprintf("%s: %s", v.Rule, v.What)
}

// Leak is an allocation in etcd that no client believes it holds, left by a
// request whose outcome was unknown or failed, or by a client that gave up:
// garbage for the collector, not a violation.
type Leak struct {
	Snapshot int // index of the snapshot it was found in
	IP       netip.Addr
	Host     string
	Handle   string
	Seq      uint64
	Cause    string
}

// Report is what the checker found.
type Report struct {
	Ops       int // allocator calls
	Counts    map[Kind]map[Outcome]int
	Replays   int
	Retries   int
	Refused   int
	Abandoned int
	ReadBacks int // calls that resolved an unconfirmed commit by reading it back
	Holds     int // acknowledged allocations
	Snapshots int
	// MaxBorrowed is the most allocations a snapshot found in blocks
	// affine to another host: hosts competed for the same blocks.
	MaxBorrowed int
	// Violations must be empty.
	Violations []Violation
	// Leaks lists each leak once, as first found.
	Leaks []Leak
	// present holds, per snapshot, the leaks it shows.
	present map[int][]Leak
	// FailedApplied counts allocations found in etcd whose every request
	// had failed with an error that said nothing was applied.
	FailedApplied int
	// Anomalies are oddities that break no invariant by themselves: a
	// release that reported freeing nothing although its client held the
	// address and no earlier call of it had failed (if the allocation is
	// still in etcd afterwards, that is a violation: RuleNotFreed).
	Anomalies []string
}

// Leaked returns the leaks snapshot i shows (found there or earlier and
// not collected since).
func (r *Report) Leaked(i int) []Leak { return r.present[i] }

// Count returns how many calls of kind ended with outcome.
func (r *Report) Count(k Kind, o Outcome) int { return r.Counts[k][o] }

type allocKey struct{ host, handle string }

func (k allocKey) String() string { return k.handle + "@" + k.host }

type allocState int

const (
	allocating allocState = iota // requested, not acknowledged yet
	allocated                    // RequestAddress answered
	bound                        // CreateEndpoint done
	unbound                      // DeleteEndpoint done
	releasing                    // release asked, not acknowledged yet
	gone                         // released, taken over or collected
	abandoned                    // its client gave up on it
)

var recordState = map[allocState]string{allocated: "allocated", bound: "bound", unbound: "released"}

func (s allocState) held() bool { return s == allocated || s == bound || s == unbound }

// alloc is one allocation's life as its client saw it.
type alloc struct {
	allocKey
	ip         netip.Addr
	st         allocState
	start, end int64 // certainly held from start (0: never acknowledged) until end (0: not ended)
	unboundAt  int64
	freedAt    int64  // completion of the acknowledged release or collection
	unknown    bool   // an allocate attempt's outcome was unknown
	failed     bool   // an allocate attempt failed
	trouble    string // the calls that did not succeed, in order ("unbind failed, release failed")
	leaked     bool   // reported as a leak already
}

type checker struct {
	r       *Report
	allocs  map[allocKey]*alloc
	byIP    map[netip.Addr][]*alloc
	replays []Op // replayed releases that freed something
	maxDone int64
	lastOp  Op
}

// Check walks the merged history (see Merge) and the snapshots, and reports
// every violated invariant:
//
//   - no two owners held one address at once. An owner certainly holds an
//     address from the completion of the call that acknowledged it (for a
//     request first answered "unknown", the retry that returned it) until
//     the invocation of its release (the first attempt). Intervals that
//     merely might have overlapped (an unknown request whose first attempt
//     was invoked before another's release) are not flagged: some order of
//     the effects within the calls' intervals makes them disjoint.
//   - at every snapshot, each allocation a client holds is in etcd with its
//     owner and the state of its last acknowledged call; each allocation in
//     etcd is held by its client, or is a leak of a request whose outcome
//     was unknown or failed or that its client gave up on.
//   - replays are answered as the first request was, and a replayed
//     release never frees an address someone else holds.
func Check(ops []Op, snaps []Snapshot) *Report {
	c := &checker{
		r:      &Report{Counts: map[Kind]map[Outcome]int{}, Snapshots: len(snaps), present: map[int][]Leak{}},
		allocs: map[allocKey]*alloc{},
		byIP:   map[netip.Addr][]*alloc{},
	}
	snaps = append([]Snapshot(nil), snaps...)
	sort.SliceStable(snaps, func(i, j int) bool { return snaps[i].Time < snaps[j].Time })
	si := 0
	for _, op := range ops {
		for si < len(snaps) && snaps[si].Time < op.Invoke {
			c.snapshot(si, &snaps[si])
			si++
		}
		c.op(op)
	}
	for ; si < len(snaps); si++ {
		c.snapshot(si, &snaps[si])
	}
	c.overlaps()
	c.replayedReleases()
	return c.r
}

func (c *checker) violate(rule Rule, ip netip.Addr, format string, a ...any) {
	c.r.Violations = append(c.r.Violations, Violation{Rule: rule, IP: ip, What: fmt.Sprintf(format, a...)})
}

func (c *checker) count(op Op) {
	if !op.IsCall() {
		c.r.Abandoned++
		return
	}
	c.r.Ops++
	m := c.r.Counts[op.Kind]
	if m == nil {
		m = map[Outcome]int{}
		c.r.Counts[op.Kind] = m
	}
	m[op.Outcome]++
	if op.Replay {
		c.r.Replays++
	}
	if op.Attempt > 0 {
		c.r.Retries++
	}
	if op.Refused {
		c.r.Refused++
	}
	for _, n := range op.Notes {
		if n == NoteReadBack {
			c.r.ReadBacks++
			break
		}
	}
}

func (c *checker) op(op Op) {
	c.count(op)
	if op.Complete < op.Invoke {
		c.violate(RuleMalformed, op.IP, "%s completes before it is invoked", op)
	}
	c.maxDone = max(c.maxDone, op.Complete)
	c.lastOp = op
	k := allocKey{op.Host, op.Handle}
	a := c.allocs[k]
	switch op.Kind {
	case Allocate, Assign:
		c.acquire(op, k, a)
	case Bind:
		c.bind(op, a)
	case Unbind:
		c.unbind(op, a)
	case Release, ReleaseHandle:
		c.release(op, a)
	case Collect:
		c.collect(op, k, a)
	case Abandon:
		if a == nil {
			return
		}
		if a.st.held() {
			a.end = op.Invoke
		}
		if a.st != gone {
			a.st = abandoned
		}
	default:
		c.violate(RuleMalformed, op.IP, "unknown kind in %s", op)
	}
}

func (c *checker) acquire(op Op, k allocKey, a *alloc) {
	if op.Replay {
		switch {
		case a == nil || a.st != allocated:
			c.violate(RuleMalformed, op.IP, "replay of a request that holds nothing unbound: %s", op)
		case op.Outcome == OK && op.IP != a.ip:
			c.violate(RuleReplay, a.ip, "%s was given %s, its replay %s", k, a.ip, op)
		case op.Refused:
			c.violate(RuleReplay, a.ip, "%s holds %s unbound, yet its replay was refused: %s", k, a.ip, op)
		}
		return
	}
	if a == nil {
		a = &alloc{allocKey: k, st: allocating}
		c.allocs[k] = a
	}
	if a.st != allocating {
		c.violate(RuleMalformed, op.IP, "request %s after it was acknowledged: %s", k, op)
		return
	}
	if op.Kind == Assign && op.Refused {
		for _, b := range c.byIP[op.IP] {
			if b.host == op.Host && b.st == unbound && b.unboundAt < op.Invoke {
				c.violate(RuleLost, op.IP, "%s's endpoint was deleted, so this host may take its address over, yet %s was refused", b.allocKey, op)
			}
		}
	}
	switch op.Outcome {
	case Unknown:
		a.unknown = true
		a.troubled(string(op.Kind) + " unknown")
		return
	case Failed:
		a.failed = true
		a.troubled(string(op.Kind) + " failed")
		return
	}
	if op.Kind == Assign {
		c.takeOver(op)
	}
	a.ip, a.st, a.start = op.IP, allocated, op.Complete
	c.byIP[a.ip] = append(c.byIP[a.ip], a)
	c.r.Holds++
}

// troubled notes a call of a's that did not succeed (once per kind in a row).
func (a *alloc) troubled(what string) {
	switch {
	case a.trouble == "":
		a.trouble = what
	case !strings.HasSuffix(a.trouble, what):
		a.trouble += ", " + what
	}
}

// takeOver ends the host's own allocation of the address whose endpoint
// was deleted (Unbind acknowledged before the Assign began): Assign may
// take it over, as Docker's release for it was all that was still to come.
func (c *checker) takeOver(op Op) {
	for _, b := range c.byIP[op.IP] {
		if b.host == op.Host && b.st == unbound && b.unboundAt < op.Invoke {
			b.st, b.end = gone, op.Invoke
		}
	}
}

func (c *checker) bind(op Op, a *alloc) {
	if a == nil || (a.st != allocated && a.st != bound) {
		c.violate(RuleMalformed, op.IP, "bind of an allocation not held: %s", op)
		return
	}
	for _, n := range op.Notes {
		if n == NoteReclaimed {
			c.violate(RuleLostBeforeBind, a.ip, "%s's allocation was gone when its endpoint was bound (claimed again): %s", a.allocKey, op)
		}
	}
	switch {
	case op.Refused:
		c.violate(RuleLostBeforeBind, a.ip, "%s holds %s, yet binding its endpoint was refused: %s", a.allocKey, a.ip, op)
	case op.Outcome == OK:
		a.st = bound
	default:
		a.troubled("bind " + string(op.Outcome))
	}
}

func (c *checker) unbind(op Op, a *alloc) {
	if a == nil || (a.st != bound && a.st != unbound) {
		c.violate(RuleMalformed, op.IP, "unbind of an allocation not bound: %s", op)
		return
	}
	if op.Outcome == OK {
		if a.st == bound {
			a.unboundAt = op.Complete
		}
		a.st = unbound
		return
	}
	if op.Refused {
		c.violate(RuleReplay, a.ip, "unbinding %s was refused: %s", a.allocKey, op)
	}
	a.troubled("unbind " + string(op.Outcome))
}

func (c *checker) release(op Op, a *alloc) {
	if op.Replay {
		if op.Outcome == OK && op.Freed > 0 {
			c.replays = append(c.replays, op)
		}
		return
	}
	if a == nil || !(a.st.held() || a.st == releasing) {
		c.violate(RuleMalformed, op.IP, "release of an allocation not held: %s", op)
		return
	}
	if a.st != releasing {
		a.st, a.end = releasing, op.Invoke
	}
	if op.Outcome != OK {
		a.troubled(string(op.Kind) + " " + string(op.Outcome))
		return
	}
	switch {
	case op.Freed > 0:
		a.st, a.freedAt = gone, op.Complete
	case a.trouble != "" || op.Attempt > 0:
		// An earlier call's outcome was unknown: this release may have
		// found the address freed already (by its own first attempt), or
		// bound (a Bind that did apply, an Unbind that did not), which a
		// release naming only the address leaves alone. Either way what
		// etcd still holds is a leak.
		a.st = abandoned
		a.troubled("release freed nothing")
	default:
		c.r.Anomalies = append(c.r.Anomalies, fmt.Sprintf("%s: the release reported freeing nothing although the client held %s", op, a.ip))
		a.st, a.freedAt = gone, op.Complete
	}
}

func (c *checker) collect(op Op, k allocKey, a *alloc) {
	if op.Outcome != OK {
		return
	}
	if a == nil {
		a = &alloc{allocKey: k, ip: op.IP, st: gone}
		c.allocs[k] = a
	}
	if a.st.held() {
		c.violate(RuleCollectedLive, a.ip, "%s held %s: %s", k, a.ip, op)
		a.end = op.Invoke
	}
	if op.Freed > 0 {
		a.st, a.freedAt = gone, op.Complete
	}
}

// snapshot checks etcd's state at a quiet moment against what the clients
// believe.
func (c *checker) snapshot(i int, s *Snapshot) {
	if c.maxDone > s.Time {
		c.violate(RuleMalformed, netip.Addr{}, "snapshot %d taken while a call was in flight (%s)", i, c.lastOp)
	}
	inEtcd := map[allocKey][]Slot{}
	borrowed := 0
	for _, sl := range s.Slots {
		if sl.Borrowed {
			borrowed++
		}
		k := allocKey{sl.Host, sl.Handle}
		inEtcd[k] = append(inEtcd[k], sl)
	}
	c.r.MaxBorrowed = max(c.r.MaxBorrowed, borrowed)
	keys := make([]allocKey, 0, len(c.allocs))
	for k := range c.allocs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		a := c.allocs[k]
		if !a.st.held() {
			continue
		}
		sl, ok := slotAt(inEtcd[k], a.ip)
		switch {
		case !ok:
			c.violate(RuleLost, a.ip, "snapshot %d: %s holds %s (%s) but etcd has it as %s", i, k, a.ip, recordState[a.st], holderIn(s, a.ip))
		case sl.Record && sl.State != recordState[a.st]:
			c.violate(RuleState, a.ip, "snapshot %d: %s's record says %q, its last acknowledged call left it %q", i, k, sl.State, recordState[a.st])
		}
	}
	for k, sls := range inEtcd {
		if len(sls) > 1 {
			c.violate(RuleTwoAddresses, sls[0].IP, "snapshot %d: %s holds %d addresses", i, k, len(sls))
		}
		for _, sl := range sls {
			c.slot(i, s.Time, k, sl)
		}
	}
	for _, d := range s.Dangling {
		c.violate(RuleDangling, d.IP, "snapshot %d: record of %s (seq %d, %s)", i, allocKey{d.Host, d.Handle}, d.Seq, d.State)
	}
}

func (c *checker) slot(i int, t int64, k allocKey, sl Slot) {
	if !sl.Record {
		c.violate(RuleNoRecord, sl.IP, "snapshot %d: %s (seq %d)", i, k, sl.Seq)
	}
	a := c.allocs[k]
	switch {
	case a == nil:
		c.violate(RuleUnexplained, sl.IP, "snapshot %d: etcd gives %s to %s, which no client asked for", i, sl.IP, k)
	case a.st.held() && a.ip == sl.IP:
	case a.st.held():
		c.violate(RuleUnexplained, sl.IP, "snapshot %d: etcd gives %s to %s, whose client was given %s", i, sl.IP, k, a.ip)
	case a.st == gone && a.freedAt != 0 && a.freedAt < t:
		c.violate(RuleNotFreed, sl.IP, "snapshot %d: %s (seq %d) was released", i, k, sl.Seq)
	case a.st == gone:
		c.violate(RuleNotFreed, sl.IP, "snapshot %d: %s (seq %d) was taken over by another request", i, k, sl.Seq)
	default: // allocating, releasing, abandoned: a leak
		cause := "abandoned after " + a.trouble
		if a.trouble == "" {
			cause = "abandoned by its client" // another request for its address failed
		}
		if a.start == 0 && a.failed && !a.unknown {
			cause = "every request failed with an error saying nothing was applied, yet it was"
		} else if a.start == 0 {
			cause = "request unknown, then abandoned"
		}
		l := Leak{Snapshot: i, IP: sl.IP, Host: k.host, Handle: k.handle, Seq: sl.Seq, Cause: cause}
		if !a.leaked {
			a.leaked = true
			c.r.Leaks = append(c.r.Leaks, l)
			if a.start == 0 && a.failed && !a.unknown {
				c.r.FailedApplied++
			}
		}
		c.r.present[i] = append(c.r.present[i], l)
	}
}

func slotAt(sls []Slot, ip netip.Addr) (Slot, bool) {
	for _, s := range sls {
		if s.IP == ip {
			return s, true
		}
	}
	return Slot{}, false
}

func holderIn(s *Snapshot, ip netip.Addr) string {
	for _, sl := range s.Slots {
		if sl.IP == ip {
			return fmt.Sprintf("%s@%s (seq %d)", sl.Handle, sl.Host, sl.Seq)
		}
	}
	return "free"
}

func (a *alloc) until() int64 {
	if a.end == 0 {
		return math.MaxInt64
	}
	return a.end
}

// overlaps finds addresses whose certain hold intervals overlap.
func (c *checker) overlaps() {
	ips := make([]netip.Addr, 0, len(c.byIP))
	for ip := range c.byIP {
		ips = append(ips, ip)
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	for _, ip := range ips {
		hs := append([]*alloc(nil), c.byIP[ip]...)
		sort.SliceStable(hs, func(i, j int) bool { return hs[i].start < hs[j].start })
		var last *alloc // the hold that ends latest so far
		for _, h := range hs {
			if last != nil && h.start < last.until() && h.allocKey != last.allocKey {
				c.violate(RuleDoubleHolder, ip, "%s held it from %s to %s, %s from %s", last.allocKey, stamp(last.start), stamp(last.until()), h.allocKey, stamp(h.start))
			}
			if last == nil || h.until() > last.until() {
				last = h
			}
		}
	}
}

// replayedReleases flags replayed releases that freed an address while
// another owner certainly held it throughout the call.
func (c *checker) replayedReleases() {
	for _, op := range c.replays {
		for _, h := range c.byIP[op.IP] {
			if h.start <= op.Invoke && h.until() >= op.Complete && h.allocKey != (allocKey{op.Host, op.Handle}) {
				c.violate(RuleReplayFreedLive, op.IP, "%s held it: %s", h.allocKey, op)
			}
		}
	}
}

func stamp(t int64) string {
	if t == math.MaxInt64 {
		return "the end"
	}
	return fmt.Sprintf("t=%.3fs", float64(t)/1e9)
}

// Summary prints the report's figures, one item per line.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "operations: %d (replays %d, retries %d, refused on their merits %d), allocations given up by their client: %d\n",
		r.Ops, r.Replays, r.Retries, r.Refused, r.Abandoned)
	kinds := []Kind{Allocate, Assign, Bind, Unbind, Release, ReleaseHandle, Collect}
	for _, k := range kinds {
		m := r.Counts[k]
		if m == nil {
			continue
		}
		fmt.Fprintf(&b, "  %-15s ok %6d  failed %5d  unknown %4d\n", k, m[OK], m[Failed], m[Unknown])
	}
	fmt.Fprintf(&b, "acknowledged allocations: %d; snapshots checked: %d (most allocations borrowed from another host's block: %d)\n", r.Holds, r.Snapshots, r.MaxBorrowed)
	fmt.Fprintf(&b, "calls that found an unconfirmed commit applied by reading it back: %d\n", r.ReadBacks)
	fmt.Fprintf(&b, "violations: %d\n", len(r.Violations))
	for i, v := range r.Violations {
		if i == 50 {
			fmt.Fprintf(&b, "  ... %d more\n", len(r.Violations)-50)
			break
		}
		fmt.Fprintf(&b, "  VIOLATION %s\n", v)
	}
	causes := map[string]int{}
	for _, l := range r.Leaks {
		causes[l.Cause]++
	}
	fmt.Fprintf(&b, "leaks found for the collector: %d (of which %d from requests that failed saying nothing was applied)\n", len(r.Leaks), r.FailedApplied)
	var cs []string
	for c := range causes {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	for _, c := range cs {
		fmt.Fprintf(&b, "  %4d %s\n", causes[c], c)
	}
	fmt.Fprintf(&b, "anomalies: %d\n", len(r.Anomalies))
	for i, a := range r.Anomalies {
		if i == 20 {
			fmt.Fprintf(&b, "  ... %d more\n", len(r.Anomalies)-20)
			break
		}
		fmt.Fprintf(&b, "  %s\n", a)
	}
	return b.String()
}
