package ownedroute

import (
	"net"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

func cidr(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func via(dst, gw string, link int) netlink.Route {
	return netlink.Route{Dst: cidr(dst), Gw: net.ParseIP(gw), LinkIndex: link}
}

func blackhole(dst string) netlink.Route {
	return netlink.Route{Dst: cidr(dst), Type: unix.RTN_BLACKHOLE}
}

func onLink(dst string, link int) netlink.Route {
	return netlink.Route{Dst: cidr(dst), LinkIndex: link, Scope: netlink.SCOPE_LINK}
}

// describe renders routes as "dst gw link [blackhole]" for comparison.
func describe(rs []netlink.Route) []string {
	var out []string
	for i := range rs {
		k := KeyOf(&rs[i])
		s := k.Dst + " gw=" + k.Gw + " link=" + strconv.Itoa(k.Link)
		if k.Blackhole {
			s += " blackhole"
		}
		out = append(out, s)
	}
	return out
}

func ptrs(rs []netlink.Route) []*netlink.Route {
	out := make([]*netlink.Route, len(rs))
	for i := range rs {
		out[i] = &rs[i]
	}
	return out
}

func deref(rs []*netlink.Route) []netlink.Route {
	out := make([]netlink.Route, len(rs))
	for i, r := range rs {
		out[i] = *r
	}
	return out
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name string
		want []netlink.Route
		have []netlink.Route
		add  []string
		del  []string
	}{
		{
			name: "empty kernel: everything added, sorted by destination",
			want: []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 2), blackhole("192.168.0.0/26"), onLink("10.1.0.5/32", 3)},
			add:  []string{"10.1.0.5/32 gw= link=3", "192.168.0.0/26 gw= link=0 blackhole", "192.168.0.64/26 gw=10.0.1.2 link=2"},
		},
		{
			name: "kernel already right: nothing to do",
			want: []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 2), blackhole("192.168.0.0/26")},
			have: []netlink.Route{blackhole("192.168.0.0/26"), via("192.168.0.64/26", "10.0.1.2", 2)},
		},
		{
			name: "nothing wanted: every owned route goes, in kernel order",
			have: []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 2), blackhole("192.168.0.0/26")},
			del:  []string{"192.168.0.64/26 gw=10.0.1.2 link=2", "192.168.0.0/26 gw= link=0 blackhole"},
		},
		{
			name: "next hop moved: old route removed, new one added",
			want: []netlink.Route{via("192.168.0.64/26", "10.0.1.3", 2)},
			have: []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 2)},
			add:  []string{"192.168.0.64/26 gw=10.0.1.3 link=2"},
			del:  []string{"192.168.0.64/26 gw=10.0.1.2 link=2"},
		},
		{
			name: "device changed (direct to vxlan)",
			want: []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 5)},
			have: []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 2)},
			add:  []string{"192.168.0.64/26 gw=10.0.1.2 link=5"},
			del:  []string{"192.168.0.64/26 gw=10.0.1.2 link=2"},
		},
		{
			name: "a block turns from remote to own: blackhole replaces the route",
			want: []netlink.Route{blackhole("192.168.0.64/26")},
			have: []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 2)},
			add:  []string{"192.168.0.64/26 gw= link=0 blackhole"},
			del:  []string{"192.168.0.64/26 gw=10.0.1.2 link=2"},
		},
		{
			name: "an IPv6 blackhole the kernel lists on lo is the wanted blackhole",
			want: []netlink.Route{blackhole("fd00:1::/122"), blackhole("192.168.0.0/26")},
			have: []netlink.Route{{Dst: cidr("fd00:1::/122"), Type: unix.RTN_BLACKHOLE, LinkIndex: 1}, blackhole("192.168.0.0/26")},
		},
		{
			name: "duplicates in want count once",
			want: []netlink.Route{onLink("10.1.0.5/32", 3), onLink("10.1.0.5/32", 3)},
			add:  []string{"10.1.0.5/32 gw= link=3"},
		},
		{
			name: "IPv6 and IPv4 side by side; a gateway written as IPv4-in-IPv6 is the same gateway",
			want: []netlink.Route{onLink("fd00::5/128", 3), {Dst: cidr("192.168.0.64/26"), Gw: net.IPv4(10, 0, 1, 2).To4(), LinkIndex: 2}},
			have: []netlink.Route{onLink("fd00::5/128", 3), {Dst: cidr("192.168.0.64/26"), Gw: net.IPv4(10, 0, 1, 2).To16(), LinkIndex: 2}},
		},
		{
			name: "same destination on another veth is another route",
			want: []netlink.Route{onLink("10.1.0.5/32", 3)},
			have: []netlink.Route{onLink("10.1.0.5/32", 4)},
			add:  []string{"10.1.0.5/32 gw= link=3"},
			del:  []string{"10.1.0.5/32 gw= link=4"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Diff(ptrs(tc.want), tc.have)
			if got := describe(deref(p.Add)); strings.Join(got, "; ") != strings.Join(tc.add, "; ") {
				t.Errorf("add:\n got  %v\n want %v", got, tc.add)
			}
			if got := describe(p.Del); strings.Join(got, "; ") != strings.Join(tc.del, "; ") {
				t.Errorf("del:\n got  %v\n want %v", got, tc.del)
			}
		})
	}
}

// After a Diff is applied, a second Diff against the result is empty.
func TestDiffConverges(t *testing.T) {
	want := []netlink.Route{via("192.168.0.64/26", "10.0.1.3", 2), blackhole("192.168.0.0/26"), onLink("10.1.0.5/32", 3)}
	have := []netlink.Route{via("192.168.0.64/26", "10.0.1.2", 2), blackhole("192.168.0.0/26"), onLink("10.1.0.9/32", 3)}
	p := Diff(ptrs(want), have)
	kept := map[Key]bool{}
	for i := range p.Del {
		kept[KeyOf(&p.Del[i])] = true
	}
	var after []netlink.Route
	for i := range have {
		if !kept[KeyOf(&have[i])] {
			after = append(after, have[i])
		}
	}
	after = append(after, deref(p.Add)...)
	if again := Diff(ptrs(want), after); len(again.Add) != 0 || len(again.Del) != 0 {
		t.Errorf("second diff not empty: add %v del %v", describe(deref(again.Add)), describe(again.Del))
	}
}

func ip(t *testing.T, args string) {
	t.Helper()
	if out, err := exec.Command("ip", strings.Fields(args)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", args, err, out)
	}
}

func listed(t *testing.T, c Reconciler) []string {
	t.Helper()
	rs, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Dst.String())
	}
	sort.Strings(out)
	return out
}

// Against a real kernel: Apply marks what it adds, never touches a route
// without the mark, and does every change it can when one fails.
func TestReconcilerApply(t *testing.T) {
	n := testns.New(t)
	testns.Do(t, n, func() {
		ip(t, "link add up0 type veth peer name up0p")
		ip(t, "addr add 10.0.1.1/24 dev up0")
		ip(t, "link set up0 up")
		ip(t, "link set up0p up")
		ip(t, "route add 172.31.0.0/24 via 10.0.1.9 proto static") // someone else's
		ip(t, "route add 172.30.0.0/24 via 10.0.1.8 proto 79")     // another mark
		l, err := netlink.LinkByName("up0")
		if err != nil {
			t.Fatal(err)
		}
		c := Reconciler{Protocol: 78, Table: unix.RT_TABLE_MAIN}
		good := via("192.168.0.64/26", "10.0.1.2", l.Attrs().Index)
		bad := via("192.168.0.128/26", "10.0.1.3", 9999) // no such device
		bh := blackhole("192.168.0.0/26")
		res, err := c.Apply([]*netlink.Route{&good, &bad, &bh}, nil)
		if err == nil || !strings.Contains(err.Error(), "192.168.0.128/26") {
			t.Errorf("Apply error = %v, want one naming the route that cannot be added", err)
		}
		if res.Added != 2 || res.Removed != 0 {
			t.Errorf("result %+v, want 2 added despite the failure", res)
		}
		if got := strings.Join(listed(t, c), " "); got != "192.168.0.0/26 192.168.0.64/26" {
			t.Errorf("owned routes = %s", got)
		}
		// Converged: nothing to change.
		have, _ := c.List()
		good2 := via("192.168.0.64/26", "10.0.1.2", l.Attrs().Index)
		if res, err := c.Apply([]*netlink.Route{&good2}, have); err != nil || res.Added != 0 || res.Removed != 1 {
			t.Errorf("second Apply = %+v, %v; want the blackhole removed only", res, err)
		}
		have, _ = c.List()
		if res, err := c.Apply(nil, have); err != nil || res.Removed != 1 {
			t.Errorf("empty Apply = %+v, %v", res, err)
		}
		// Removing a route someone else already removed is not an error.
		gone := via("192.168.0.64/26", "10.0.1.2", l.Attrs().Index)
		gone.Protocol = 78
		if res, err := c.Apply(nil, []netlink.Route{gone}); err != nil || res.Removed != 1 {
			t.Errorf("Apply over a vanished route = %+v, %v", res, err)
		}
		if len(listed(t, c)) != 0 {
			t.Errorf("owned routes left: %v", listed(t, c))
		}
		for _, other := range []string{"172.31.0.0/24", "172.30.0.0/24"} {
			out, _ := exec.Command("ip", "route", "show", other).CombinedOutput()
			if !strings.Contains(string(out), other) {
				t.Errorf("route without our mark %s was removed", other)
			}
		}
	})
}

// Against a real kernel: a second Apply of the same blackholes (IPv4 and
// IPv6, which the kernel lists on lo) changes nothing.
func TestReconcilerBlackholesSettle(t *testing.T) {
	n := testns.New(t)
	testns.Do(t, n, func() {
		ip(t, "link set lo up")
		c := Reconciler{Protocol: 78, Table: unix.RT_TABLE_MAIN}
		want := func() []*netlink.Route {
			v4, v6 := blackhole("192.168.0.0/26"), blackhole("fd00:1::/122")
			return []*netlink.Route{&v4, &v6}
		}
		if res, err := c.Apply(want(), nil); err != nil || res.Added != 2 {
			t.Fatalf("first Apply = %+v, %v; want 2 added", res, err)
		}
		for pass := range 3 {
			have, err := c.List()
			if err != nil {
				t.Fatal(err)
			}
			if res, err := c.Apply(want(), have); err != nil || res != (Result{}) {
				t.Errorf("pass %d over a settled kernel = %+v, %v; want nothing changed", pass, res, err)
			}
		}
	})
}
