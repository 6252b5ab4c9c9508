package history

import (
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// Hand-made histories: the checker must pass the legal ones and report each
// violation in the bad ones. Times are in milliseconds.

var (
	ipX = netip.MustParseAddr("10.9.0.1")
	ipY = netip.MustParseAddr("10.9.0.2")
)

// op builds one call; proc is taken from the host ("h0" is process 0).
func op(host string, kind Kind, handle string, ip netip.Addr, inv, done int64, out Outcome, mods ...func(*Op)) Op {
	o := Op{Proc: int(host[1] - '0'), Host: host, Kind: kind, Handle: handle, IP: ip, Invoke: inv * 1e6, Complete: done * 1e6, Outcome: out}
	if kind == Release || kind == ReleaseHandle || kind == Collect {
		if out == OK {
			o.Freed = 1
		}
	}
	for _, m := range mods {
		m(&o)
	}
	return o
}

func replay(o *Op)             { o.Replay = true }
func freed(n int) func(*Op)    { return func(o *Op) { o.Freed = n } }
func attempt(n int) func(*Op)  { return func(o *Op) { o.Attempt = n } }
func refused(o *Op)            { o.Refused = true }
func note(n string) func(*Op)  { return func(o *Op) { o.Notes = append(o.Notes, n) } }
func owner(s uint64) func(*Op) { return func(o *Op) { o.Owner = s } }

func snap(at int64, slots ...Slot) Snapshot { return Snapshot{Time: at * 1e6, Slots: slots} }

func slot(ip netip.Addr, host, handle, state string) Slot {
	return Slot{IP: ip, Host: host, Handle: handle, Seq: 1, State: state, Record: true}
}

// lifecycle is one allocation's whole legal life from t on host (10 ms a call).
func lifecycle(host, handle string, ip netip.Addr, t int64) []Op {
	return []Op{
		op(host, Allocate, handle, ip, t, t+5, OK),
		op(host, Bind, handle, ip, t+10, t+15, OK),
		op(host, Unbind, handle, ip, t+20, t+25, OK),
		op(host, Release, handle, ip, t+30, t+35, OK),
	}
}

func cat(parts ...[]Op) []Op { return Merge(parts...) }

// handMade are the histories TestCheckerOnHandMadeHistories feeds the
// checker, with the rules each must break (none for the legal ones).
var handMade = []struct {
	name  string
	ops   []Op
	snaps []Snapshot
	want  []Rule
	leaks int
}{
	{
		name: "legal: sequential reuse across hosts, replays, a late replayed release",
		ops: cat(
			lifecycle("h0", "a", ipX, 0),
			[]Op{
				op("h0", Allocate, "a", ipX, 6, 8, OK, replay),
				op("h0", Release, "a", ipX, 36, 38, OK, replay, freed(0)),
			},
			lifecycle("h1", "b", ipX, 40),
			[]Op{op("h0", Release, "a", ipX, 50, 52, OK, replay, freed(0))}, // the ABA case: refused
		),
		snaps: []Snapshot{snap(45, slot(ipX, "h1", "b", "allocated")), snap(100)},
	},
	{
		// b's first request was invoked before a's release and answered
		// "unknown"; its retry got X after the release. Some order of
		// the effects is legal, so no overlap may be reported.
		name: "legal: unknown request concurrent with the release, resolved by its retry",
		ops: cat(
			lifecycle("h0", "a", ipX, 0),
			[]Op{
				op("h1", Allocate, "b", netip.Addr{}, 25, 40, Unknown),
				op("h1", Allocate, "b", ipX, 41, 44, OK, attempt(1)),
			},
		),
		snaps: []Snapshot{snap(60, slot(ipX, "h1", "b", "allocated"))},
	},
	{
		name: "legal: Assign takes over the host's own deleted endpoint's address",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Bind, "a", ipX, 10, 15, OK),
			op("h0", Unbind, "a", ipX, 20, 25, OK),
			op("h0", Assign, "b", ipX, 30, 35, OK),
		},
		snaps: []Snapshot{snap(40, slot(ipX, "h0", "b", "allocated"))},
	},
	{
		name: "lost: Assign could not take over the host's own deleted endpoint's address",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Bind, "a", ipX, 10, 15, OK),
			op("h0", Unbind, "a", ipX, 20, 25, OK),
			op("h0", Assign, "b", ipX, 30, 35, Failed, refused),
		},
		want: []Rule{RuleLost},
	},
	{
		name: "leaks: an abandoned unknown request and a failed one that applied are leaks, not violations",
		ops: []Op{
			op("h0", Allocate, "a", netip.Addr{}, 0, 5, Unknown),
			op("h0", Abandon, "a", netip.Addr{}, 6, 6, OK),
			op("h1", Allocate, "b", netip.Addr{}, 0, 5, Failed),
			op("h1", Abandon, "b", netip.Addr{}, 6, 6, OK),
			op("h1", Collect, "b", ipY, 25, 26, OK, owner(1)),
		},
		snaps: []Snapshot{
			snap(20, slot(ipX, "h0", "a", "allocated"), slot(ipY, "h1", "b", "allocated")),
			snap(30, slot(ipX, "h0", "a", "allocated")),
		},
		leaks: 2,
	},
	{
		name: "leak: Bind unknown (it did apply), so Docker's rollback release freed nothing",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Bind, "a", ipX, 10, 15, Unknown),
			op("h0", Release, "a", ipX, 20, 25, OK, freed(0)),
		},
		snaps: []Snapshot{snap(30, slot(ipX, "h0", "a", "bound"))},
		leaks: 1,
	},
	{
		name: "released (reporting nothing freed) yet still in etcd",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Release, "a", ipX, 20, 25, OK, freed(0)),
		},
		snaps: []Snapshot{snap(30, slot(ipX, "h0", "a", "allocated"))},
		want:  []Rule{RuleNotFreed},
	},
	{
		name: "two holders at once",
		ops: cat(
			lifecycle("h0", "a", ipX, 0),
			lifecycle("h1", "b", ipX, 20), // allocated at 25, before a's release at 30
		),
		want: []Rule{RuleDoubleHolder},
	},
	{
		name: "two holders at once: the address handed out again while the first holder never released",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h1", Assign, "b", ipX, 10, 15, OK),
		},
		want: []Rule{RuleDoubleHolder},
	},
	{
		name: "lost: an acknowledged allocation is not in etcd",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Bind, "a", ipX, 10, 15, OK),
		},
		snaps: []Snapshot{snap(20)},
		want:  []Rule{RuleLost},
	},
	{
		name:  "lost: etcd gives the address to someone else",
		ops:   []Op{op("h0", Allocate, "a", ipX, 0, 5, OK)},
		snaps: []Snapshot{snap(20, Slot{IP: ipX, Host: "h9", Handle: "z", Seq: 7, State: "allocated", Record: true})},
		want:  []Rule{RuleLost, RuleUnexplained},
	},
	{
		name: "lost before bind: Bind had to claim the address again",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Bind, "a", ipX, 10, 15, OK, note(NoteReclaimed)),
		},
		want: []Rule{RuleLostBeforeBind},
	},
	{
		name: "state: the record is not bound after an acknowledged Bind",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Bind, "a", ipX, 10, 15, OK),
		},
		snaps: []Snapshot{snap(20, slot(ipX, "h0", "a", "allocated"))},
		want:  []Rule{RuleState},
	},
	{
		name: "replay returned another address",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h0", Allocate, "a", ipY, 6, 8, OK, replay),
		},
		want: []Rule{RuleReplay},
	},
	{
		name: "replayed Assign refused",
		ops: []Op{
			op("h0", Assign, "a", ipX, 0, 5, OK),
			op("h0", Assign, "a", ipX, 6, 8, Failed, replay, refused),
		},
		want: []Rule{RuleReplay},
	},
	{
		name: "replayed release freed the next holder's address",
		ops: cat(
			lifecycle("h0", "a", ipX, 0),
			[]Op{op("h1", Allocate, "b", ipX, 40, 45, OK)},
			[]Op{op("h0", Release, "a", ipX, 50, 52, OK, replay, freed(1))},
		),
		want: []Rule{RuleReplayFreedLive},
	},
	{
		name:  "released yet still in etcd",
		ops:   lifecycle("h0", "a", ipX, 0),
		snaps: []Snapshot{snap(50, slot(ipX, "h0", "a", "released"))},
		want:  []Rule{RuleNotFreed},
	},
	{
		name:  "an allocation nobody asked for",
		snaps: []Snapshot{snap(50, slot(ipX, "h0", "ghost", "allocated"))},
		want:  []Rule{RuleUnexplained},
	},
	{
		name:  "one handle with two addresses",
		ops:   []Op{op("h0", Allocate, "a", ipX, 0, 5, OK)},
		snaps: []Snapshot{snap(20, slot(ipX, "h0", "a", "allocated"), slot(ipY, "h0", "a", "allocated"))},
		want:  []Rule{RuleTwoAddresses, RuleUnexplained},
	},
	{
		name: "dangling handle record and allocation without record",
		ops:  []Op{op("h0", Allocate, "a", ipX, 0, 5, OK)},
		snaps: []Snapshot{{Time: 20e6,
			Slots:    []Slot{{IP: ipX, Host: "h0", Handle: "a", Seq: 1}},
			Dangling: []Slot{{IP: ipY, Host: "h0", Handle: "old", Seq: 3, State: "bound", Record: true}}}},
		want: []Rule{RuleNoRecord, RuleDangling},
	},
	{
		name: "the collector freed a live allocation",
		ops: []Op{
			op("h0", Allocate, "a", ipX, 0, 5, OK),
			op("h9", Collect, "a", ipX, 10, 12, OK, func(o *Op) { o.Host = "h0"; o.Proc = -1 }),
		},
		want: []Rule{RuleCollectedLive},
	},
	{
		name:  "a snapshot taken while a call was in flight",
		ops:   []Op{op("h0", Allocate, "a", ipX, 0, 50, OK)},
		snaps: []Snapshot{snap(20, slot(ipX, "h0", "a", "allocated"))},
		want:  []Rule{RuleMalformed},
	},
}

func TestCheckerOnHandMadeHistories(t *testing.T) {
	for _, tc := range handMade {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(tc.ops, tc.snaps)
			var got []Rule
			for _, v := range r.Violations {
				if !slices.Contains(got, v.Rule) {
					got = append(got, v.Rule)
				}
			}
			sortRules(got)
			want := append([]Rule(nil), tc.want...)
			sortRules(want)
			if !slices.Equal(got, want) {
				t.Errorf("violations %q, want %q\n%s", got, want, r.Summary())
			}
			if len(r.Leaks) != tc.leaks {
				t.Errorf("%d leaks, want %d\n%s", len(r.Leaks), tc.leaks, r.Summary())
			}
		})
	}
}

func sortRules(r []Rule) { sort.Slice(r, func(i, j int) bool { return r[i] < r[j] }) }

func TestCheckerCountsAndLeakCauses(t *testing.T) {
	ops := []Op{
		op("h0", Allocate, "a", netip.Addr{}, 0, 5, Unknown),
		op("h0", Allocate, "a", ipX, 6, 8, OK, attempt(1)),
		op("h0", Bind, "a", ipX, 10, 12, OK),
		op("h0", Unbind, "a", ipX, 14, 16, Unknown),
		op("h0", Unbind, "a", ipX, 17, 19, Unknown, attempt(1)),
		op("h0", Abandon, "a", ipX, 20, 20, OK),
		op("h1", Allocate, "b", netip.Addr{}, 0, 5, Failed),
		op("h1", Abandon, "b", netip.Addr{}, 6, 6, OK),
	}
	r := Check(ops, []Snapshot{snap(30,
		slot(ipX, "h0", "a", "released"),
		slot(ipY, "h1", "b", "allocated"))})
	if len(r.Violations) != 0 {
		t.Fatalf("violations in a legal history:\n%s", r.Summary())
	}
	if r.Ops != 6 || r.Abandoned != 2 || r.Retries != 2 || r.Count(Allocate, Unknown) != 1 || r.Count(Unbind, Unknown) != 2 {
		t.Errorf("counts wrong:\n%s", r.Summary())
	}
	if len(r.Leaks) != 2 || r.FailedApplied != 1 {
		t.Fatalf("leaks %v, failed-but-applied %d; want 2 and 1", r.Leaks, r.FailedApplied)
	}
	causes := []string{r.Leaks[0].Cause, r.Leaks[1].Cause}
	sort.Strings(causes)
	if causes[0] != "abandoned after allocate unknown, unbind unknown" {
		t.Errorf("cause of the abandoned bound allocation: %q", causes[0])
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	ops := cat(lifecycle("h0", "a", ipX, 0), []Op{op("h1", Allocate, "b", netip.Addr{}, 3, 4, Unknown, note(NoteReclaimed))})
	path := filepath.Join(t.TempDir(), "h.jsonl")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		if err := w.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	back, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(ops) {
		t.Fatalf("%d ops read back, want %d", len(back), len(ops))
	}
	for i := range ops {
		if back[i].String() != ops[i].String() || back[i].Invoke != ops[i].Invoke || !slices.Equal(back[i].Notes, ops[i].Notes) {
			t.Errorf("op %d: %s, want %s", i, back[i], ops[i])
		}
	}
}

func TestLeakNotCollectedIsListedAgain(t *testing.T) {
	ops := []Op{
		op("h0", Allocate, "a", netip.Addr{}, 0, 5, Unknown),
		op("h0", Abandon, "a", netip.Addr{}, 6, 6, OK),
		op("h0", Collect, "a", ipX, 25, 26, Failed, freed(0)),
	}
	leak := slot(ipX, "h0", "a", "allocated")
	r := Check(ops, []Snapshot{snap(20, leak), snap(30, leak)})
	if len(r.Violations) != 0 {
		t.Fatalf("violations:\n%s", r.Summary())
	}
	if len(r.Leaks) != 1 || len(r.Leaked(0)) != 1 || len(r.Leaked(1)) != 1 {
		t.Fatalf("leaks %v, at snapshot 0 %v, at 1 %v: want one leak, shown by both", r.Leaks, r.Leaked(0), r.Leaked(1))
	}
}
