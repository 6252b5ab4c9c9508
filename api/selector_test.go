package api

import (
	"strings"
	"testing"
)

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"role": "db", "env": "prod", "calico/network": "net1"}
	tests := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"all()", true},
		{"role == 'db'", true},
		{`role == "web"`, false},
		{"role != 'web'", true},
		{"role != 'db'", false},
		{"has(env)", true},
		{"!has(env)", false},
		{"has(missing)", false},
		{"role in {'db', 'cache'}", true},
		{"role not in {'db', 'cache'}", false},
		{"missing not in {'x'}", true},
		{"missing in {'x'}", false},
		{"role == 'db' && env == 'prod'", true},
		{"role == 'db' && env == 'dev'", false},
		{"role == 'web' || env == 'prod'", true},
		{"!(role == 'web' || env == 'dev')", true},
		{"calico/network == 'net1'", true},
		{"role == 'db' && (env == 'dev' || has(calico/network))", true},
		{"missing != 'x'", true},
	}
	for _, tc := range tests {
		t.Run(tc.sel, func(t *testing.T) {
			s, err := ParseSelector(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Matches(labels); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
			// The canonical form parses back to the same selector.
			again, err := ParseSelector(s.String())
			if err != nil || again.String() != s.String() {
				t.Errorf("round trip %q -> %q (%v)", s.String(), again, err)
			}
		})
	}
}

func TestSelectorCanonical(t *testing.T) {
	a := MustParseSelector(`role in {"b", 'a'} && x=='1'`)
	b := MustParseSelector(`role in {'a','b'}&&x == "1"`)
	if a.String() != b.String() {
		t.Errorf("%q != %q", a, b)
	}
}

func TestSelectorErrors(t *testing.T) {
	tests := []struct{ sel, want string }{
		{"role ==", "position 8: expected a quoted value"},
		{"role = 'db'", "position 6: unexpected character '='"},
		{"role == 'db", "unterminated string"},
		{"(role == 'db'", "expected ')'"},
		{"role == 'db' &&", "position 16: expected a label key"},
		{"role in 'db'", "expected '{'"},
		{"role in {'a' 'b'}", "expected ',' or '}'"},
		{"has(", "a label key inside has()"},
		{"role not 'x'", "expected 'in' after 'not'"},
		{"role == 'db' extra", "unexpected \"extra\""},
		{"role", "expected ==, !=, in or not in"},
	}
	for _, tc := range tests {
		t.Run(tc.sel, func(t *testing.T) {
			_, err := ParseSelector(tc.sel)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
