package ipam

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// FuzzBlockDecode feeds arbitrary records to the block decoder: it must
// never panic, and a block it accepts (Validate) keeps its invariants
// through every operation the allocator applies, and survives a round trip.
func FuzzBlockDecode(f *testing.F) {
	for _, seed := range []string{
		`{"cidr":"10.0.0.0/30","affinity":"h","allocations":[null,{"host":"h","handle":"docker.1","seq":7},null,null],"unallocated":[0,2,3],"seq":7}`,
		`{"cidr":"10.0.0.0/31","allocations":["","docker.legacy"],"unallocated":[0]}`,
		`{"cidr":"fd00::/126","allocations":[null,null,null,null],"unallocated":[3,2,1,0]}`,
		`{"cidr":"10.0.0.0/30","allocations":[null,null],"unallocated":[0,1]}`,
		`{"cidr":"10.0.0.0/30","allocations":[null,null,null,null],"unallocated":[0,0,1,2]}`,
		`{"cidr":"10.0.0.1/30"}`, `{}`, `[]`, `null`, `{"allocations":[1]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b api.Block
		if err := json.Unmarshal(data, &b); err != nil {
			return
		}
		if b.Validate() != nil {
			return
		}
		// A round trip keeps the block.
		out, err := json.Marshal(&b)
		if err != nil {
			t.Fatal(err)
		}
		var again api.Block
		if err := json.Unmarshal(out, &again); err != nil || !reflect.DeepEqual(normalise(&b), normalise(&again)) {
			t.Fatalf("round trip changed the block: %v\n%+v\n%+v", err, b, again)
		}
		// Take every free address, then free them all: invariants hold at
		// each step and every sequence number is new.
		c := b.Clone()
		seen := map[uint64]bool{}
		for _, o := range c.Allocations {
			if o != nil {
				seen[o.Seq] = true
			}
		}
		for {
			q, ord := firstFree(c, netip.Prefix{})
			if ord < 0 {
				break
			}
			o := takeAt(c, q, ord, "fuzz", "h")
			if seen[o.Seq] {
				t.Fatalf("sequence number %d handed out twice", o.Seq)
			}
			seen[o.Seq] = true
			if err := c.Validate(); err != nil {
				t.Fatalf("after take: %v", err)
			}
			if c.Holder(c.Addr(ord)) != o {
				t.Fatal("the taken address is not held by its owner")
			}
		}
		for ord := range c.Allocations {
			releaseOrdinal(c, ord)
			if err := c.Validate(); err != nil {
				t.Fatalf("after release: %v", err)
			}
		}
		if c.InUse() != 0 {
			t.Fatalf("%d in use after releasing everything", c.InUse())
		}
		if !reflect.DeepEqual(normalise(&b), normalise(b.Clone())) {
			t.Fatal("operations on a clone changed the original")
		}
	})
}

func normalise(b *api.Block) *api.Block {
	c := b.Clone()
	if c.Unallocated == nil {
		c.Unallocated = []int{}
	}
	return c
}
