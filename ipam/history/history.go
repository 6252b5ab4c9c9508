// Package history is the fault-injection history test of the IPAM allocator,
// in the manner of Jepsen: allocator processes record every call they make
// (invocation, completion, outcome) while a nemesis kills and isolates etcd
// members, and a checker proves from the merged record and from snapshots of
// the datastore that no address was held by two owners at once, that no
// acknowledged allocation disappeared before its release, and that replays
// were answered as the first request was.
//
// This file holds the record's types; check.go the checker. The harness
// (etcd cluster in network namespaces, nemesis, worker processes) is in the
// package's tests. RELIABILITY.md at the repository root describes the run.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// Kind is the allocator call an operation made.
type Kind string

const (
	// Allocate is Allocator.AllocateOnce(handle): Docker's RequestAddress.
	Allocate Kind = "allocate"
	// Assign is Allocator.Assign(ip, handle): RequestAddress with a fixed
	// address (docker run --ip).
	Assign Kind = "assign"
	// Bind is Allocator.Bind: CreateEndpoint.
	Bind Kind = "bind"
	// Unbind is Allocator.Unbind: DeleteEndpoint.
	Unbind Kind = "unbind"
	// Release is Allocator.Release(ip): Docker's ReleaseAddress, which
	// names only the address.
	Release Kind = "release"
	// ReleaseHandle is Allocator.ReleaseByHandle(handle).
	ReleaseHandle Kind = "release-handle"
	// Collect is Allocator.ReleaseOwned(ip, owner): the collector freeing a
	// leak it found, naming the exact allocation.
	Collect Kind = "collect"
	// Abandon is no call: the client gave up on an allocation (as Docker
	// gives up on a container whose request kept failing). What it leaves
	// in etcd is a leak for the collector, not a violation.
	Abandon Kind = "abandon"
)

// Outcome is what the caller learnt.
type Outcome string

const (
	// OK: the call returned no error.
	OK Outcome = "ok"
	// Failed: an error that says nothing was applied.
	Failed Outcome = "failed"
	// Unknown: an error that says the write may have been applied
	// (datastore.ErrUncertain): a timeout or a broken connection after the
	// request was sent.
	Unknown Outcome = "unknown"
)

// Op is one call as a client saw it. Times are CLOCK_MONOTONIC nanoseconds,
// which every process on the machine shares.
type Op struct {
	Proc     int        `json:"proc"` // the client process; -1 for the collector
	Seq      int        `json:"seq"`  // position in the process's own history
	Host     string     `json:"host"`
	Kind     Kind       `json:"kind"`
	Handle   string     `json:"handle,omitempty"`
	IP       netip.Addr `json:"ip,omitzero"` // argument, or the address an allocate returned
	Endpoint string     `json:"ep,omitempty"`
	Invoke   int64      `json:"inv"`
	Complete int64      `json:"done"`
	Outcome  Outcome    `json:"out"`
	Err      string     `json:"err,omitempty"`
	// Refused: the call failed on its merits (address in use, pool
	// exhausted), not because etcd could not be reached.
	Refused bool   `json:"refused,omitempty"`
	Freed   int    `json:"freed,omitempty"`   // releases: addresses the call reported freed
	Replay  bool   `json:"replay,omitempty"`  // a deliberate repeat of a request already acknowledged
	Attempt int    `json:"attempt,omitempty"` // 0 first; n: the n-th retry of the same request
	Owner   uint64 `json:"owner,omitempty"`   // collect: the allocation's sequence number
	// Notes are what the allocator logged during the call that the checker
	// needs: NoteReclaimed, NoteReadBack.
	Notes []string `json:"notes,omitempty"`
}

// NoteReclaimed marks a Bind that found its allocation gone and claimed the
// address again: an acknowledged allocation disappeared before its release.
const NoteReclaimed = "reclaimed"

// NoteReadBack marks a call during which a commit etcd did not confirm was
// found, read back, to have been applied: the uncertain path was taken and
// resolved inside the call.
const NoteReadBack = "read-back"

// IsCall reports whether the op is an allocator call (Abandon is not).
func (o Op) IsCall() bool { return o.Kind != Abandon }

func (o Op) String() string {
	s := fmt.Sprintf("p%d#%d %s %s", o.Proc, o.Seq, o.Host, o.Kind)
	if o.Handle != "" {
		s += " " + o.Handle
	}
	if o.IP.IsValid() {
		s += " " + o.IP.String()
	}
	if o.Replay {
		s += " (replay)"
	}
	if o.Attempt > 0 {
		s += fmt.Sprintf(" (retry %d)", o.Attempt)
	}
	s += " -> " + string(o.Outcome)
	if o.Err != "" {
		s += ": " + o.Err
	}
	return s
}

// Snapshot is the datastore's IPAM state, read while no client had a call
// in flight (a quiet period, or the end).
type Snapshot struct {
	Time int64 `json:"time"` // CLOCK_MONOTONIC ns, after the read returned
	// Slots are the blocks' allocations, each with its handle record.
	Slots []Slot `json:"slots"`
	// Dangling are handle records whose allocation no block holds.
	Dangling []Slot `json:"dangling,omitempty"`
}

// Slot is one allocation in a block: the owner the block names and the
// state its handle record gives ("" with Record false when there is none).
type Slot struct {
	IP     netip.Addr `json:"ip"`
	Host   string     `json:"host"`
	Handle string     `json:"handle"`
	Seq    uint64     `json:"seq"`
	State  string     `json:"state,omitempty"`
	Record bool       `json:"record"`
	// Borrowed: the block is affine to another host.
	Borrowed bool `json:"borrowed,omitempty"`
}

// Now is the shared clock every record is stamped with.
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("clock_gettime(CLOCK_MONOTONIC): %v", err))
	}
	return ts.Nano()
}

// Writer appends ops to a JSON-lines file.
type Writer struct {
	f   *os.File
	buf *bufio.Writer
	enc *json.Encoder
}

// Create opens path for a process's history.
func Create(path string) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("history file: %w", err)
	}
	buf := bufio.NewWriterSize(f, 1<<16)
	return &Writer{f: f, buf: buf, enc: json.NewEncoder(buf)}, nil
}

// Add appends one op.
func (w *Writer) Add(op Op) error { return w.enc.Encode(op) }

// Flush makes everything added so far readable by another process.
func (w *Writer) Flush() error { return w.buf.Flush() }

// Close flushes and closes the file.
func (w *Writer) Close() error {
	if err := w.buf.Flush(); err != nil {
		w.f.Close()
		return err
	}
	return w.f.Close()
}

// Read decodes a JSON-lines history.
func Read(r io.Reader) ([]Op, error) {
	dec := json.NewDecoder(r)
	var out []Op
	for {
		var op Op
		err := dec.Decode(&op)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("history record %d: %w", len(out)+1, err)
		}
		out = append(out, op)
	}
}

// ReadFile decodes the history at path.
func ReadFile(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// Merge orders the ops of several processes by invocation (then process and
// position), the order the checker walks them in.
func Merge(parts ...[]Op) []Op {
	var all []Op
	for _, p := range parts {
		all = append(all, p...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.Invoke != b.Invoke {
			return a.Invoke < b.Invoke
		}
		if a.Proc != b.Proc {
			return a.Proc < b.Proc
		}
		return a.Seq < b.Seq
	})
	return all
}
