package datastore_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// FuzzEscapeCIDR: a CIDR's key segment holds no '/' (it would reach into
// another key) and turns back into the same CIDR; any segment unescapes
// without panicking, and a segment that came from a CIDR unescapes to it.
func FuzzEscapeCIDR(f *testing.F) {
	for _, s := range []string{"10.0.0.0/26", "fd00::/122", "fd00:1:2::-64", "::/0", "10.0.0.0-26", "-", "a/b/c", "", "::ffff:10.0.0.0/104"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seg := datastore.EscapeCIDR(s)
		if strings.Contains(seg, "/") {
			t.Fatalf("EscapeCIDR(%q) = %q holds a '/'", s, seg)
		}
		_ = datastore.UnescapeCIDR(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return
		}
		canon := p.String()
		back := datastore.UnescapeCIDR(datastore.EscapeCIDR(canon))
		if back != canon {
			t.Fatalf("CIDR %s: escaped %q, unescaped %q", canon, datastore.EscapeCIDR(canon), back)
		}
		if q, err := netip.ParsePrefix(back); err != nil || q != p {
			t.Fatalf("CIDR %s comes back as %q (%v)", canon, back, err)
		}
	})
}
