package api

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// AppendJSON appends b's stored JSON to dst: byte for byte what
// json.Marshal writes (TestAppendJSONMatchesMarshal, FuzzBlockJSON), without
// its reflection. Every allocation and release writes a block, so this is
// on the IPAM hot path.
func (b *Block) AppendJSON(dst []byte) ([]byte, error) {
	if !b.CIDR.IsValid() { // json.Marshal's own text for it
		out, err := json.Marshal(b)
		return append(dst, out...), err
	}
	// Room for the usual record in one allocation: an ordinal's free-queue
	// entry and its null cost about 9 bytes, an owner about 50.
	dst = slices.Grow(dst, 96+len(b.Affinity)+9*len(b.Allocations)+50*max(0, b.InUse()))
	dst = append(dst, `{"cidr":"`...)
	dst = b.CIDR.AppendTo(dst) // digits, '.', ':' and '/': nothing to escape
	dst = append(dst, '"')
	if b.Affinity != "" {
		dst = append(dst, `,"affinity":`...)
		dst = appendJSONString(dst, b.Affinity)
	}
	dst = append(dst, `,"allocations":`...)
	dst = appendJSONArray(dst, b.Allocations, func(dst []byte, o *Owner) []byte { return o.appendJSON(dst) })
	dst = append(dst, `,"unallocated":`...)
	dst = appendJSONArray(dst, b.Unallocated, func(dst []byte, o int) []byte { return strconv.AppendInt(dst, int64(o), 10) })
	if b.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, b.Seq, 10)
	}
	return append(dst, '}'), nil
}

// appendJSONArray appends xs as json.Marshal writes a slice (null for
// nil), each element by elem.
func appendJSONArray[T any](dst []byte, xs []T, elem func([]byte, T) []byte) []byte {
	if xs == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, x := range xs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = elem(dst, x)
	}
	return append(dst, ']')
}

// appendJSON appends o as json.Marshal writes it (null for nil).
func (o *Owner) appendJSON(dst []byte) []byte {
	if o == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '{')
	if o.Host != "" {
		dst = append(dst, `"host":`...)
		dst = appendJSONString(dst, o.Host)
		dst = append(dst, ',')
	}
	dst = append(dst, `"handle":`...)
	dst = appendJSONString(dst, o.Handle)
	if o.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, o.Seq, 10)
	}
	return append(dst, '}')
}

// AppendJSON appends r's stored JSON to dst, byte for byte what
// json.Marshal writes, and fails where it fails.
func (r HandleRecord) AppendJSON(dst []byte) ([]byte, error) {
	_, off := r.Since.Zone()
	if y := r.Since.Year(); y < 0 || y > 9999 || off/3600 >= 24 || off/3600 <= -24 { // time refuses these
		out, err := json.Marshal(r)
		return append(dst, out...), err
	}
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"state":`...)
	dst = appendJSONString(dst, string(r.State))
	if r.Endpoint != "" {
		dst = append(dst, `,"endpoint":`...)
		dst = appendJSONString(dst, r.Endpoint)
	}
	dst = append(dst, `,"since":"`...)
	dst = r.Since.AppendFormat(dst, time.RFC3339Nano) // what time.Time.MarshalJSON writes for years 0-9999
	return append(dst, `"}`...), nil
}

// appendJSONString appends s quoted as encoding/json quotes it. Names and
// handles are plain ASCII; anything else goes through encoding/json, so
// that its escaping (HTML characters, invalid UTF-8, U+2028) stays its own.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			out, _ := json.Marshal(s) // a string always marshals
			return append(dst, out...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
