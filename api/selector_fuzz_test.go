package api

import (
	"strings"
	"testing"
)

// labelMaps turns "k=v,k2=v2;k=w" into label maps, and adds the empty map.
func labelMaps(raw string) []map[string]string {
	out := []map[string]string{{}}
	for _, group := range strings.Split(raw, ";") {
		m := map[string]string{}
		for _, kv := range strings.Split(group, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				m[k] = v
			} else if kv != "" {
				m[kv] = ""
			}
		}
		out = append(out, m)
	}
	return out
}

// FuzzParseSelector: the parser never panics; an error names the
// selector; a selector that parses prints in a canonical form that parses
// back to itself, selecting exactly the same label sets; Keys names only
// keys that appear in the text.
func FuzzParseSelector(f *testing.F) {
	for _, s := range [][2]string{
		{"role == 'db'", "role=db;role=web"},
		{"has(role) && !(tier in {'a', \"b\"})", "role=x,tier=a;role=y"},
		{`k == 'say "hi"' || k != "it's"`, `k=say "hi";k=it's`},
		{"all()", ""}, {"", "a=b"}, {"a not in {}", "a="}, {"!!a == 'x'", "a=x"},
		{"calico/network == 'net1' && role in {'frontend','db'}", "calico/network=net1,role=db"},
		{"((a == 'x'", ""}, {"a == 'x", ""}, {"has(", ""}, {"a in {'x' 'y'}", ""}, {"has == 'x' && all == 'y'", "has=x,all=y"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, src, labels string) {
		sel, err := ParseSelector(src)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "selector ") {
				t.Fatalf("error does not name the selector: %v", err)
			}
			return
		}
		canon := sel.String()
		again, err := ParseSelector(canon)
		if err != nil {
			t.Fatalf("%q prints as %q, which does not parse: %v", src, canon, err)
		}
		if again.String() != canon {
			t.Fatalf("%q prints as %q, which prints as %q", src, canon, again.String())
		}
		for _, m := range labelMaps(labels) {
			if sel.Matches(m) != again.Matches(m) {
				t.Fatalf("%q and its canonical form %q disagree on %v", src, canon, m)
			}
		}
		for _, k := range SelectorKeys(sel) {
			if !strings.Contains(src, k) {
				t.Fatalf("%q: Keys names %q", src, k)
			}
		}
	})
}
