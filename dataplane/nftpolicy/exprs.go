package nftpolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// ruleFormat versions how rules are turned into expressions: bumping it
// makes every rule's hash change, so an upgraded daemon rewrites rules
// written by an older one.
const ruleFormat = "v1"

// rule is one kernel rule: its text (nft syntax, hashed into the rule's
// comment so a later run can tell whether the kernel already holds it) and
// its expressions.
type rule struct {
	text    string
	comment string
	exprs   []expr.Any
}

func (r *rule) hash() string {
	h := sha256.Sum256([]byte(ruleFormat + "|" + r.text))
	return hex.EncodeToString(h[:8])
}

// userData is the rule's comment as nft shows it: the human comment and
// the hash, "#<hash>".
func (r *rule) userData() []byte {
	// No double quotes: nft prints comments in them, and its listing should
	// read back (nft -f).
	c := strings.ReplaceAll(r.comment, `"`, "'")
	if len(c) > 200 {
		c = c[:200]
	}
	return userdataComment(strings.TrimSpace(c + " #" + r.hash()))
}

// hashFromComment extracts the hash from a rule comment written by
// userData ("" when there is none).
func hashFromComment(c string) string {
	i := strings.LastIndex(c, "#")
	if i < 0 || len(c)-i-1 != 16 {
		return ""
	}
	return c[i+1:]
}

// builder accumulates the matches of one rule.
type builder struct {
	text  []string
	exprs []expr.Any
}

func (b *builder) add(text string, ex ...expr.Any) *builder {
	if text != "" {
		b.text = append(b.text, text)
	}
	b.exprs = append(b.exprs, ex...)
	return b
}

func (b *builder) rule(comment string) rule {
	return rule{text: strings.Join(b.text, " "), comment: comment, exprs: b.exprs}
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func cmp(op expr.CmpOp, data []byte) *expr.Cmp {
	return &expr.Cmp{Op: op, Register: 1, Data: data}
}

func eqOp(negate bool) expr.CmpOp {
	if negate {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

func opText(negate bool) string {
	if negate {
		return "!= "
	}
	return ""
}

// ifnameKey is an interface name as the kernel loads it: IFNAMSIZ bytes,
// zero padded.
func ifnameKey(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func (b *builder) nfproto(fam int) *builder {
	switch fam {
	case 4:
		return b.add("meta nfproto ipv4", &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp(expr.CmpOpEq, []byte{unix.NFPROTO_IPV4}))
	case 6:
		return b.add("meta nfproto ipv6", &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp(expr.CmpOpEq, []byte{unix.NFPROTO_IPV6}))
	}
	return b
}

func (b *builder) l4proto(p uint8, negate bool) *builder {
	return b.add(fmt.Sprintf("meta l4proto %s%d", opText(negate), p),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp(eqOp(negate), []byte{p}))
}

// ifnamePrefix matches an interface whose name starts with prefix, as nft's
// iifname "cali*".
func (b *builder) ifnamePrefix(in bool, prefix string) *builder {
	key, word := expr.MetaKeyOIFNAME, "oifname"
	if in {
		key, word = expr.MetaKeyIIFNAME, "iifname"
	}
	return b.add(fmt.Sprintf("%s %q", word, prefix+"*"), &expr.Meta{Key: key, Register: 1}, cmp(expr.CmpOpEq, []byte(prefix)))
}

// ctState matches when any of the bits is set.
func (b *builder) ctState(text string, bits uint32) *builder {
	return b.add("ct state "+text,
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(bits), Xor: native32(0)},
		cmp(expr.CmpOpNeq, native32(0)))
}

// addr loads the source or destination address of family fam.
func addrPayload(fam int, src bool) (*expr.Payload, string) {
	off, l, word := uint32(16), uint32(4), "ip daddr"
	switch {
	case fam == 4 && src:
		off, word = 12, "ip saddr"
	case fam == 6 && src:
		off, l, word = 8, 16, "ip6 saddr"
	case fam == 6:
		off, l, word = 24, 16, "ip6 daddr"
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l}, word
}

func prefixMatch(p netip.Prefix, negate bool) []expr.Any {
	a := p.Masked().Addr().AsSlice()
	var out []expr.Any
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, len(a))
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(a)), Mask: mask, Xor: make([]byte, len(a))})
	}
	return append(out, cmp(eqOp(negate), a))
}

func lookup(set string, negate bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: 1, SetName: set, Invert: negate}
}

func be16(v uint16) []byte { return binaryutil.BigEndian.PutUint16(v) }

// match renders one condition of a policy rule.
func (b *builder) match(fam int, m policy.Match) error {
	switch m.Field {
	case policy.FieldProto:
		b.l4proto(m.Proto, m.Negate)
	case policy.FieldSrcAddr, policy.FieldDstAddr:
		if fam != 4 && fam != 6 {
			return fmt.Errorf("an address match needs a rule tied to IPv4 or IPv6")
		}
		pl, word := addrPayload(fam, m.Field == policy.FieldSrcAddr)
		if m.Set != "" {
			b.add(fmt.Sprintf("%s %s@%s", word, opText(m.Negate), m.Set), pl, lookup(m.Set, m.Negate))
			break
		}
		if !m.Net.IsValid() || (m.Net.Addr().Is4() != (fam == 4)) {
			return fmt.Errorf("net %s does not fit an IPv%d rule", m.Net, fam)
		}
		b.add(fmt.Sprintf("%s %s%s", word, opText(m.Negate), m.Net.Masked()), append([]expr.Any{pl}, prefixMatch(m.Net, m.Negate)...)...)
	case policy.FieldSrcPort, policy.FieldDstPort:
		off, word := uint32(2), "th dport"
		if m.Field == policy.FieldSrcPort {
			off, word = 0, "th sport"
		}
		pl := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
		switch {
		case m.Set != "":
			b.add(fmt.Sprintf("%s %s@%s", word, opText(m.Negate), m.Set), pl, lookup(m.Set, m.Negate))
		case m.Ports.Min == m.Ports.Max:
			b.add(fmt.Sprintf("%s %s%d", word, opText(m.Negate), m.Ports.Min), pl, cmp(eqOp(m.Negate), be16(m.Ports.Min)))
		default:
			b.add(fmt.Sprintf("%s %s%d-%d", word, opText(m.Negate), m.Ports.Min, m.Ports.Max), pl,
				&expr.Range{Op: eqOp(m.Negate), Register: 1, FromData: be16(m.Ports.Min), ToData: be16(m.Ports.Max)})
		}
	default:
		return fmt.Errorf("unknown match field %d", m.Field)
	}
	return nil
}

func verdict(k expr.VerdictKind) *expr.Verdict { return &expr.Verdict{Kind: k} }

func jump(chain string) *expr.Verdict {
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
}

// marks are the two packet-mark bits the table uses while a packet is in
// it: pass (a policy's Pass, on to the profiles) and allow (an egress
// Allow, on to the receiver's ingress policy). Both are cleared before the
// packet leaves the table.
type marks struct{ pass, allow uint32 }

// setMark: meta mark set meta mark | bit.
func setMark(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^bit), Xor: native32(bit)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// clearMark: meta mark set meta mark & ~bit.
func clearMark(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^bit), Xor: native32(0)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// setCTMark: ct mark set ct mark | bit.
func setCTMark(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(^bit), Xor: native32(bit)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}
}

// hasMark: meta mark & bit != 0.
func hasMark(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(bit), Xor: native32(0)},
		cmp(expr.CmpOpNeq, native32(0)),
	}
}

// markOff is the rule clearing bit.
func markOff(bit uint32, comment string) rule {
	return nb().add(fmt.Sprintf("meta mark set meta mark & 0x%08x", ^bit), clearMark(bit)...).rule(comment)
}

// returnIfAllowed returns when an egress Allow has set the allow mark.
func returnIfAllowed(allow uint32) rule {
	return nb().add(fmt.Sprintf("meta mark & 0x%08x != 0 return", allow), append(hasMark(allow), verdict(expr.VerdictReturn))...).rule("allowed")
}

// policyRule renders a rule of a policy chain (pass sets the pass mark and
// returns to the endpoint's policy group) or of a profile chain (pass
// returns: the next profile is tried). Allow accepts in an ingress chain;
// in an egress chain it sets the allow mark and returns, so that a packet
// between two endpoints still meets the receiver's ingress policy in the
// same base chain.
func policyRule(r policy.RenderedRule, inProfile, egress bool, m marks) (rule, error) {
	var b builder
	b.nfproto(r.Family)
	for _, mt := range r.Matches {
		if err := b.match(r.Family, mt); err != nil {
			return rule{}, fmt.Errorf("%s: %w", r.Comment, err)
		}
	}
	switch r.Action {
	case api.Allow:
		if egress {
			b.add(fmt.Sprintf("meta mark set meta mark | 0x%08x return", m.allow), append(setMark(m.allow), verdict(expr.VerdictReturn))...)
		} else {
			b.add("accept", verdict(expr.VerdictAccept))
		}
	case api.Deny:
		b.add("drop", verdict(expr.VerdictDrop))
	case api.Log:
		b.add(fmt.Sprintf("log prefix %q", r.LogPrefix), &expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte(r.LogPrefix)})
	case api.Pass:
		if inProfile {
			b.add("return", verdict(expr.VerdictReturn))
		} else {
			b.add(fmt.Sprintf("meta mark set meta mark | 0x%08x return", m.pass), append(setMark(m.pass), verdict(expr.VerdictReturn))...)
		}
	default:
		return rule{}, fmt.Errorf("%s: unknown action %q", r.Comment, r.Action)
	}
	return b.rule(r.Comment), nil
}

// Set element helpers.

func addrElems(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: a.Unmap().AsSlice()})
	}
	return out
}

// interval is an inclusive range of big-endian keys.
type interval struct{ lo, hi []byte }

func incr(b []byte) ([]byte, bool) {
	out := append([]byte(nil), b...)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return out, false // overflowed: b was all ones
}

func lastAddr(p netip.Prefix) []byte {
	a := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return a
}

func lessBytes(a, b []byte) bool { return string(a) < string(b) }

// mergeIntervals sorts and merges overlapping or adjacent ranges.
func mergeIntervals(in []interval) []interval {
	for i := 1; i < len(in); i++ {
		for j := i; j > 0 && lessBytes(in[j].lo, in[j-1].lo); j-- {
			in[j], in[j-1] = in[j-1], in[j]
		}
	}
	var out []interval
	for _, iv := range in {
		if n := len(out); n > 0 {
			next, ok := incr(out[n-1].hi)
			if !ok || !lessBytes(next, iv.lo) { // overlaps or touches
				if lessBytes(out[n-1].hi, iv.hi) {
					out[n-1].hi = iv.hi
				}
				continue
			}
		}
		out = append(out, iv)
	}
	return out
}

// intervalElems encodes ranges the way nft does for an interval set: a
// start element, and an end element (flagged) one past the range, left out
// when the range reaches the top of the key space.
func intervalElems(ivs []interval) []nftables.SetElement {
	var out []nftables.SetElement
	for _, iv := range mergeIntervals(ivs) {
		out = append(out, nftables.SetElement{Key: iv.lo})
		if end, ok := incr(iv.hi); ok {
			out = append(out, nftables.SetElement{Key: end, IntervalEnd: true})
		}
	}
	return out
}

func netElems(nets []netip.Prefix) []nftables.SetElement {
	var ivs []interval
	for _, n := range nets {
		ivs = append(ivs, interval{n.Masked().Addr().AsSlice(), lastAddr(n)})
	}
	return intervalElems(ivs)
}

func portElems(ports []api.PortRange) []nftables.SetElement {
	var ivs []interval
	for _, p := range ports {
		ivs = append(ivs, interval{be16(p.Min), be16(p.Max)})
	}
	return intervalElems(ivs)
}
