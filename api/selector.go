package api

// Label selectors, as Calico writes them: the syntax policy resources are
// stored with (parsed and validated here, evaluated by package policy).

import (
	"fmt"
	"sort"
	"strings"
)

// Selector matches a set of labels.
type Selector interface {
	Matches(labels map[string]string) bool
	// String is the canonical form: equal selectors print the same.
	String() string
}

// ParseSelector parses Calico's selector syntax: all(), has(k), k == 'v',
// k != 'v', k in {'a','b'}, k not in {...}, !, &&, || and parentheses. An
// empty string selects everything, as all() does.
func ParseSelector(s string) (Selector, error) {
	if strings.TrimSpace(s) == "" {
		return allSel{}, nil
	}
	p := &parser{src: s}
	p.next()
	sel, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.errf("unexpected %s", p.tok)
	}
	return sel, nil
}

// MustParseSelector is for literals in code and tests.
func MustParseSelector(s string) Selector {
	sel, err := ParseSelector(s)
	if err != nil {
		panic(err)
	}
	return sel
}

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tEq
	tNe
	tAnd
	tOr
	tNot
	tLParen
	tRParen
	tLBrace
	tRBrace
	tComma
)

type token struct {
	kind tokKind
	text string
	pos  int
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of selector"
	case tString:
		return fmt.Sprintf("string %q", t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

type parser struct {
	src string
	pos int
	tok token
	err error
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("selector %q: at position %d: %s", p.src, p.tok.pos+1, fmt.Sprintf(format, args...))
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '/'
}

func (p *parser) next() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t' || p.src[p.pos] == '\n') {
		p.pos++
	}
	start := p.pos
	if p.pos >= len(p.src) {
		p.tok = token{kind: tEOF, pos: start}
		return
	}
	two := ""
	if p.pos+1 < len(p.src) {
		two = p.src[p.pos : p.pos+2]
	}
	switch two {
	case "==":
		p.pos += 2
		p.tok = token{tEq, "==", start}
		return
	case "!=":
		p.pos += 2
		p.tok = token{tNe, "!=", start}
		return
	case "&&":
		p.pos += 2
		p.tok = token{tAnd, "&&", start}
		return
	case "||":
		p.pos += 2
		p.tok = token{tOr, "||", start}
		return
	}
	c := p.src[p.pos]
	single := map[byte]tokKind{'!': tNot, '(': tLParen, ')': tRParen, '{': tLBrace, '}': tRBrace, ',': tComma}
	if k, ok := single[c]; ok {
		p.pos++
		p.tok = token{k, string(c), start}
		return
	}
	if c == '\'' || c == '"' {
		end := strings.IndexByte(p.src[p.pos+1:], c)
		if end < 0 {
			p.tok = token{kind: tString, pos: start}
			p.err = fmt.Errorf("selector %q: at position %d: unterminated string", p.src, start+1)
			p.pos = len(p.src)
			return
		}
		p.tok = token{tString, p.src[p.pos+1 : p.pos+1+end], start}
		p.pos += end + 2
		return
	}
	if isKeyChar(c) {
		for p.pos < len(p.src) && isKeyChar(p.src[p.pos]) {
			p.pos++
		}
		p.tok = token{tIdent, p.src[start:p.pos], start}
		return
	}
	p.tok = token{kind: tIdent, text: string(c), pos: start}
	p.err = fmt.Errorf("selector %q: at position %d: unexpected character %q", p.src, start+1, c)
	p.pos++
}

func (p *parser) expect(k tokKind, what string) (token, error) {
	if p.err != nil {
		return token{}, p.err
	}
	if p.tok.kind != k {
		return token{}, p.errf("expected %s, got %s", what, p.tok)
	}
	t := p.tok
	p.next()
	return t, nil
}

func (p *parser) parseOr() (Selector, error) {
	left, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	terms := []Selector{left}
	for p.err == nil && p.tok.kind == tOr {
		p.next()
		r, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		terms = append(terms, r)
	}
	if len(terms) == 1 {
		return left, p.err
	}
	return orSel(terms), p.err
}

func (p *parser) parseAnd() (Selector, error) {
	left, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	terms := []Selector{left}
	for p.err == nil && p.tok.kind == tAnd {
		p.next()
		r, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		terms = append(terms, r)
	}
	if len(terms) == 1 {
		return left, p.err
	}
	return andSel(terms), p.err
}

func (p *parser) parseUnary() (Selector, error) {
	if p.err != nil {
		return nil, p.err
	}
	if p.tok.kind == tNot {
		p.next()
		inner, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return notSel{inner}, nil
	}
	return p.parsePrimary()
}

func (p *parser) parsePrimary() (Selector, error) {
	if p.err != nil {
		return nil, p.err
	}
	switch p.tok.kind {
	case tLParen:
		p.next()
		inner, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tRParen, "')'"); err != nil {
			return nil, err
		}
		return inner, nil
	case tIdent:
	default:
		return nil, p.errf("expected a label key, has(), all() or '(', got %s", p.tok)
	}
	key := p.tok
	p.next()
	if p.err != nil {
		return nil, p.err
	}
	if (key.text == "has" || key.text == "all") && p.tok.kind == tLParen {
		p.next()
		if key.text == "all" {
			if _, err := p.expect(tRParen, "')' after all("); err != nil {
				return nil, err
			}
			return allSel{}, nil
		}
		k, err := p.expect(tIdent, "a label key inside has()")
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tRParen, "')' after has(key"); err != nil {
			return nil, err
		}
		return hasSel(k.text), nil
	}
	switch p.tok.kind {
	case tEq, tNe:
		op := p.tok.kind
		p.next()
		v, err := p.expect(tString, "a quoted value")
		if err != nil {
			return nil, err
		}
		if op == tEq {
			return eqSel{key.text, v.text}, nil
		}
		return notSel{eqSel{key.text, v.text}}, nil
	case tIdent:
		negate := false
		if p.tok.text == "not" {
			negate = true
			p.next()
			if p.tok.kind != tIdent || p.tok.text != "in" {
				return nil, p.errf("expected 'in' after 'not', got %s", p.tok)
			}
		}
		if p.tok.text != "in" {
			return nil, p.errf("expected ==, !=, in or not in after label %q, got %s", key.text, p.tok)
		}
		p.next()
		set, err := p.parseSet()
		if err != nil {
			return nil, err
		}
		var s Selector = inSel{key.text, set}
		if negate {
			s = notSel{s}
		}
		return s, nil
	}
	return nil, p.errf("expected ==, !=, in or not in after label %q, got %s", key.text, p.tok)
}

func (p *parser) parseSet() ([]string, error) {
	if _, err := p.expect(tLBrace, "'{'"); err != nil {
		return nil, err
	}
	var vals []string
	for p.err == nil && p.tok.kind != tRBrace {
		v, err := p.expect(tString, "a quoted value in the set")
		if err != nil {
			return nil, err
		}
		vals = append(vals, v.text)
		if p.tok.kind == tComma {
			p.next()
			continue
		}
		if p.tok.kind != tRBrace {
			return nil, p.errf("expected ',' or '}', got %s", p.tok)
		}
	}
	if _, err := p.expect(tRBrace, "'}'"); err != nil {
		return nil, err
	}
	sort.Strings(vals)
	return vals, nil
}

type allSel struct{}

func (allSel) Matches(map[string]string) bool { return true }
func (allSel) String() string                 { return "all()" }

type hasSel string

func (h hasSel) Matches(l map[string]string) bool { _, ok := l[string(h)]; return ok }
func (h hasSel) String() string                   { return "has(" + string(h) + ")" }

type eqSel struct{ k, v string }

func (e eqSel) Matches(l map[string]string) bool { v, ok := l[e.k]; return ok && v == e.v }
func (e eqSel) String() string                   { return e.k + " == " + quote(e.v) }

// quote writes a value as the parser reads it back: in double quotes, or in
// single quotes when it holds a double quote (there are no escapes; a value
// cannot hold both).
func quote(v string) string {
	if strings.Contains(v, `"`) {
		return "'" + v + "'"
	}
	return `"` + v + `"`
}

type inSel struct {
	k    string
	vals []string
}

func (s inSel) Matches(l map[string]string) bool {
	v, ok := l[s.k]
	if !ok {
		return false
	}
	for _, x := range s.vals {
		if x == v {
			return true
		}
	}
	return false
}

func (s inSel) String() string {
	q := make([]string, len(s.vals))
	for i, v := range s.vals {
		q[i] = quote(v)
	}
	return fmt.Sprintf("%s in {%s}", s.k, strings.Join(q, ", "))
}

type notSel struct{ s Selector }

func (n notSel) Matches(l map[string]string) bool { return !n.s.Matches(l) }
func (n notSel) String() string {
	if e, ok := n.s.(eqSel); ok {
		return e.k + " != " + quote(e.v)
	}
	if s, ok := n.s.(inSel); ok {
		return strings.Replace(s.String(), " in ", " not in ", 1)
	}
	return "!" + wrap(n.s)
}

type andSel []Selector

func (a andSel) Matches(l map[string]string) bool {
	for _, s := range a {
		if !s.Matches(l) {
			return false
		}
	}
	return true
}
func (a andSel) String() string { return joinSelectors(a, " && ") }

type orSel []Selector

func (o orSel) Matches(l map[string]string) bool {
	for _, s := range o {
		if s.Matches(l) {
			return true
		}
	}
	return false
}
func (o orSel) String() string { return joinSelectors(o, " || ") }

func wrap(s Selector) string {
	switch s.(type) {
	case andSel, orSel:
		return "(" + s.String() + ")"
	}
	return s.String()
}

func joinSelectors(ss []Selector, sep string) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = wrap(s)
	}
	return strings.Join(parts, sep)
}

// SelectorKeys returns the label keys sel looks at.
func SelectorKeys(sel Selector) []string {
	var out []string
	var walk func(Selector)
	walk = func(s Selector) {
		switch v := s.(type) {
		case hasSel:
			out = append(out, string(v))
		case eqSel:
			out = append(out, v.k)
		case inSel:
			out = append(out, v.k)
		case notSel:
			walk(v.s)
		case andSel:
			for _, c := range v {
				walk(c)
			}
		case orSel:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(sel)
	return out
}
