package ipamdriver

import (
	"net/netip"
	"strings"
	"testing"
)

// encodePoolID is the pool ID RequestPool gives Docker for a subnet and an
// optional range.
func encodePoolID(subnet, within netip.Prefix) string {
	id := subnetPoolPrefix + subnet.String()
	if within.IsValid() && within != subnet {
		id += "|" + within.String()
	}
	return id
}

// FuzzSelection: a pool ID that parses means one family, a subnet that is a
// masked prefix of it, and a range inside the subnet; writing the selection
// back as RequestPool does gives an ID that parses to the same selection.
func FuzzSelection(f *testing.F) {
	for _, s := range []string{PoolIDv4, PoolIDv6, "CalicoSubnet|10.0.0.0/24", "CalicoSubnet|10.0.0.0/24|10.0.0.128/25",
		"CalicoSubnet|fd00::/48|fd00::/64", "CalicoSubnet|10.0.0.0/24|10.1.0.0/25", "CalicoSubnet|10.0.0.0/24|fd00::/64",
		"CalicoSubnet|10.0.0.1/24", "CalicoSubnet|10.0.0.0/24|10.0.0.0/24|x", "CalicoSubnet|", "CalicoSubnet||", "nope"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		sel, subnet, err := selection(id)
		if err != nil {
			if !strings.Contains(err.Error(), "pool ID") {
				t.Fatalf("error does not name the pool ID: %v", err)
			}
			return
		}
		if sel.Family != 4 && sel.Family != 6 {
			t.Fatalf("%q: family %d", id, sel.Family)
		}
		if !subnet.IsValid() {
			if sel.Within.IsValid() || (id != PoolIDv4 && id != PoolIDv6) {
				t.Fatalf("%q: no subnet but %+v", id, sel)
			}
			return
		}
		w := sel.Within
		if subnet.Masked() != subnet || w.Masked() != w || w.Addr().Is6() != subnet.Addr().Is6() || (sel.Family == 6) != subnet.Addr().Is6() {
			t.Fatalf("%q: subnet %s range %s family %d", id, subnet, w, sel.Family)
		}
		if w.Bits() < subnet.Bits() || !subnet.Contains(w.Addr()) {
			t.Fatalf("%q: range %s is not inside subnet %s", id, w, subnet)
		}
		again, subnet2, err := selection(encodePoolID(subnet, w))
		if err != nil || subnet2 != subnet || again.Within != sel.Within || again.Family != sel.Family {
			t.Fatalf("%q: re-encoded as %q it parses to %+v %s (%v)", id, encodePoolID(subnet, w), again, subnet2, err)
		}
	})
}
