package api

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// sameAsMarshal fails t unless v's AppendJSON writes what json.Marshal
// writes (and fails where it fails), so that records written by the
// appender are the records every earlier version wrote and reads.
func sameAsMarshal(t *testing.T, name string, v interface {
	AppendJSON([]byte) ([]byte, error)
}) {
	t.Helper()
	want, werr := json.Marshal(v)
	got, gerr := v.AppendJSON([]byte("prefix"))
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%s: json.Marshal error %v, AppendJSON error %v", name, werr, gerr)
	}
	if werr != nil {
		return
	}
	if !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Fatalf("%s:\n AppendJSON %s\njson.Marshal prefix%s", name, got, want)
	}
}

func TestAppendJSONMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 12, 2, 18, 4, 5, 123456000, time.UTC)
	blocks := []struct {
		name string
		b    *Block
	}{
		{"stored example", &Block{CIDR: netip.MustParsePrefix("10.0.0.0/31"), Affinity: "h1", Allocations: []*Owner{nil, {Host: "h1", Handle: "docker.1", Seq: 7}}, Unallocated: []int{0}, Seq: 7}},
		{"no affinity, no seq, legacy owner", &Block{CIDR: netip.MustParsePrefix("fd00:1::/126"), Allocations: []*Owner{{Handle: "legacy"}, nil, nil, nil}, Unallocated: []int{3, 2, 1}}},
		{"full: empty free queue", &Block{CIDR: netip.MustParsePrefix("10.0.0.0/32"), Allocations: []*Owner{{Host: "h", Handle: "x", Seq: 1}}, Unallocated: []int{}, Seq: 1}},
		{"nil slices", &Block{CIDR: netip.MustParsePrefix("10.0.0.0/32")}},
		{"names to escape", &Block{CIDR: netip.MustParsePrefix("10.0.0.0/32"), Affinity: "a<b>&\"c\"\\\n\u2028é\xff", Allocations: []*Owner{{Host: "h\t", Handle: "<x>"}}, Unallocated: []int{}}},
		{"mapped IPv4 prefix", &Block{CIDR: netip.MustParsePrefix("::ffff:10.0.0.0/126"), Allocations: make([]*Owner, 4), Unallocated: []int{0, 1, 2, 3}}},
		{"invalid cidr", &Block{Affinity: "h"}},
		{"new block", newTestBlock()},
	}
	for _, tc := range blocks {
		sameAsMarshal(t, tc.name, tc.b)
	}
	records := []struct {
		name string
		r    HandleRecord
	}{
		{"allocated", HandleRecord{Seq: 1764700000000000001, State: StateAllocated, Since: at}},
		{"bound", HandleRecord{Seq: 2, State: StateBound, Endpoint: "0123abcd", Since: at.Truncate(time.Second)}},
		{"zero", HandleRecord{}},
		{"zone", HandleRecord{Seq: 3, State: StateReleased, Since: at.In(time.FixedZone("x", -(5*3600 + 30*60)))}},
		{"year 10000: json.Marshal fails", HandleRecord{Since: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"zone of 24 hours: json.Marshal fails", HandleRecord{Since: at.In(time.FixedZone("y", 24*3600))}},
		{"state to escape", HandleRecord{State: "a&b", Endpoint: "\x00", Since: at}},
	}
	for _, tc := range records {
		sameAsMarshal(t, tc.name, tc.r)
	}
}

func newTestBlock() *Block {
	b := &Block{CIDR: netip.MustParsePrefix("10.1.2.0/26"), Affinity: "bench-1-host-0", Allocations: make([]*Owner, 64), Seq: 1764700000000000000}
	for i := range 64 {
		b.Unallocated = append(b.Unallocated, i)
	}
	return b
}

// FuzzBlockJSON: for any stored block that decodes, and any handle record,
// AppendJSON writes exactly what json.Marshal writes.
func FuzzBlockJSON(f *testing.F) {
	for _, seed := range []string{
		`{"cidr":"10.0.0.0/30","affinity":"h","allocations":[null,{"host":"h","handle":"docker.1","seq":7},null,null],"unallocated":[0,2,3],"seq":7}`,
		`{"cidr":"10.0.0.0/31","allocations":["","docker.legacy"],"unallocated":[0]}`,
		`{"cidr":"fd00::/126","allocations":[null,null,null,null],"unallocated":[]}`,
		`{"affinity":"<&>","allocations":null}`,
	} {
		f.Add([]byte(seed), uint64(7), "allocated", "ep", int64(1764700000123456789))
	}
	f.Fuzz(func(t *testing.T, data []byte, seq uint64, state, endpoint string, nanos int64) {
		var b Block
		if json.Unmarshal(data, &b) == nil {
			sameAsMarshal(t, "block", &b)
		}
		sameAsMarshal(t, "handle record", HandleRecord{Seq: seq, State: HandleState(state), Endpoint: endpoint, Since: time.Unix(0, nanos).UTC()})
	})
}

func BenchmarkBlockJSON(b *testing.B) {
	blk := newTestBlock()
	b.Run("json.Marshal", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(blk); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		for b.Loop() {
			if _, err := blk.AppendJSON(nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
