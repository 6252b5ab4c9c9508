package api

// Resource documents: the YAML/JSON forms calicoctl reads and prints, the
// kinds it knows, and the conversion of the legacy (Calico v1) form.
//
// A document is {apiVersion, kind, metadata, spec[, status]}. The current
// form is apiVersion projectcalico.org/v3; the legacy form (apiVersion v1,
// kind ipPool, node, profile or policy) from old walkthroughs is converted
// on input and never printed. Every field of a document is checked: an
// unknown field is an error that names it, so a typo never silently does
// nothing.
//
// A new kind plugs in by adding a *Kind to Kinds with its decode and encode
// functions; the CLI's commands, the unknown-field check and the list form
// work for it unchanged.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"sigs.k8s.io/yaml"
)

// API versions of documents.
const (
	APIVersion       = "projectcalico.org/v3"
	LegacyAPIVersion = "v1"
)

// Errors a write of a resource can wrap.
var (
	// ErrExists: a create of a resource that is already there.
	ErrExists = errors.New("already exists")
	// ErrStale: the resourceVersion given is not the record's current one.
	ErrStale = errors.New("changed since it was read")
)

// Mark returns an error whose text is the formatted message alone and which
// errors.Is matches against sentinel: the message stays one clear sentence.
func Mark(sentinel error, format string, args ...any) error {
	return &markedError{msg: fmt.Sprintf(format, args...), sentinel: sentinel}
}

type markedError struct {
	msg      string
	sentinel error
}

func (e *markedError) Error() string { return e.msg }
func (e *markedError) Unwrap() error { return e.sentinel }

// TypeMeta opens every document.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// ObjectMeta is a document's metadata. ResourceVersion is the datastore's
// revision of the record when it was read: given back on apply or replace it
// makes the write fail if someone changed the record since.
// CreationTimestamp and UID are accepted (so output of Calico's own calicoctl
// can be fed back) and ignored.
type ObjectMeta struct {
	Name              string `json:"name,omitempty"`
	ResourceVersion   string `json:"resourceVersion,omitempty"`
	CreationTimestamp string `json:"creationTimestamp,omitempty"`
	UID               string `json:"uid,omitempty"`
}

// Resource is a record in its stored form (*IPPool, *Node, *IPAMConfig).
type Resource interface {
	ResourceKind() *Kind
	ResourceName() string
	// Normalize fills defaults and canonicalises values.
	Normalize()
	// Validate checks the resource on its own (not against the datastore).
	Validate() error
}

// Object is one decoded document.
type Object struct {
	Resource        Resource
	ResourceVersion string // metadata.resourceVersion, "" when not given
	Legacy          bool   // it came in the v1 form
	// NameFromCIDR is set for a legacy pool that had no name: its name was
	// derived from its CIDR, and a pool with the same CIDR should be used
	// instead when one exists.
	NameFromCIDR bool
	// Where names the document in messages ("pools.yaml document 2").
	Where string
	// Invalid says why a stored record is not valid ("" when it is): the
	// daemons do not enforce it as stored. Resource holds what could be
	// read of it.
	Invalid string
}

// Kind describes one resource kind.
type Kind struct {
	Name    string   // the v3 kind: "IPPool"
	Aliases []string // other names accepted, lower case: "ippools", "pool"
	Legacy  string   // the v1 kind, "" when there is none
	decode  func(raw []byte, legacy bool) (Object, error)
	encode  func(r Resource, resourceVersion string) any
}

// ListKind is the kind of a list of k ("IPPoolList").
func (k *Kind) ListKind() string { return k.Name + "List" }

// Names lists every name the kind is known by, lower case.
func (k *Kind) Names() []string {
	out := []string{strings.ToLower(k.Name)}
	if k.Legacy != "" && !strings.EqualFold(k.Legacy, k.Name) {
		out = append(out, strings.ToLower(k.Legacy))
	}
	return append(out, k.Aliases...)
}

// Document returns r's v3 document, ready for JSON or YAML.
func (k *Kind) Document(r Resource, resourceVersion string) any {
	return k.encode(r, resourceVersion)
}

// Kinds are the resource kinds in the order they are listed to users.
var Kinds = []*Kind{IPPoolKind, NodeKind, IPAMConfigKind, ProfileKind, NetworkPolicyKind, GlobalNetworkPolicyKind, FelixConfigKind, BGPConfigKind, BGPPeerKind}

// LookupKind finds a kind by any of its names, case-insensitively, singular
// or plural.
func LookupKind(name string) (*Kind, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, k := range Kinds {
		for _, a := range k.Names() {
			if n == a {
				return k, nil
			}
		}
	}
	return nil, fmt.Errorf("unknown resource kind %q: use %s", name, KindList())
}

// KindList names the known kinds for messages: "IPPool, Node or IPAMConfiguration".
func KindList() string {
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = k.Name
	}
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// ListDoc is the form of several resources: {apiVersion, kind: XList, items}.
type ListDoc struct {
	TypeMeta `json:",inline"`
	Metadata *struct {
		ResourceVersion string `json:"resourceVersion,omitempty"`
	} `json:"metadata,omitempty"`
	Items []any `json:"items"`
}

// Encode renders objects as "yaml" or "json". One object with asList false
// is printed as a single document; otherwise a list whose kind is the
// objects' kind + "List" (or "List" when kinds are mixed, or given as kind).
func Encode(objs []Object, kind *Kind, asList bool, format string) ([]byte, error) {
	var v any
	if len(objs) == 1 && !asList {
		o := objs[0]
		v = o.Resource.ResourceKind().Document(o.Resource, o.ResourceVersion)
	} else {
		l := ListDoc{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "List"}, Items: []any{}}
		if kind != nil {
			l.Kind = kind.ListKind()
		}
		for _, o := range objs {
			l.Items = append(l.Items, o.Resource.ResourceKind().Document(o.Resource, o.ResourceVersion))
		}
		v = l
	}
	switch format {
	case "json":
		// Not HTML-escaped: selectors print as role == 'db' && has(x).
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case "yaml":
		return yaml.Marshal(v)
	}
	return nil, fmt.Errorf("unknown output format %q: use yaml or json", format)
}

// Decode reads one or many documents, YAML or JSON: several YAML documents
// separated by "---", a YAML or JSON list of documents, concatenated JSON
// objects, or a list document (kind List / IPPoolList with items). Each is
// checked for unknown fields, converted from the legacy form when it is in
// it, normalised and validated on its own. source names the input in
// messages. The first problem is returned, naming the document.
func Decode(data []byte, source string) ([]Object, error) {
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	var out []Object
	n := 0
	for _, d := range docs {
		items, isList, err := expandList(d.json)
		d.list = isList
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", source, d.where(), err)
		}
		for _, it := range items {
			n++
			where := fmt.Sprintf("%s %s", source, d.where())
			if len(items) > 1 || d.list {
				where = fmt.Sprintf("%s item %d", where, n)
			}
			o, err := decodeObject(it)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(where, it), err)
			}
			o.Where = describe(where, it)
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no resources found: give at least one document with apiVersion, kind, metadata and spec", source)
	}
	return out, nil
}

// describe names a document by where it is and, when it can tell, its kind
// and name: `pools.yaml document 2 (IPPool "p1")`.
func describe(where string, raw []byte) string {
	var h struct {
		Kind     any `json:"kind"`
		Metadata struct {
			Name any `json:"name"`
			CIDR any `json:"cidr"`
		} `json:"metadata"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return where
	}
	kind, _ := h.Kind.(string)
	name, _ := h.Metadata.Name.(string)
	if name == "" {
		name, _ = h.Metadata.CIDR.(string)
	}
	if strings.IndexFunc(kind, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		kind = strconv.Quote(kind) // an error message stays one line
	}
	switch {
	case kind != "" && name != "":
		return fmt.Sprintf("%s (%s %q)", where, kind, name)
	case kind != "":
		return fmt.Sprintf("%s (%s)", where, kind)
	}
	return where
}

type rawDoc struct {
	json  []byte
	index int  // 1-based document number
	line  int  // first line of the document
	list  bool // the document is a list of resources
}

func (d rawDoc) where() string {
	if d.line > 0 {
		return fmt.Sprintf("document %d (line %d)", d.index, d.line)
	}
	return fmt.Sprintf("document %d", d.index)
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// splitDocuments turns the input into JSON documents. JSON input (starting
// with '{' or '[') may hold several concatenated values; anything else is
// YAML, split at "---" lines.
func splitDocuments(data []byte) ([]rawDoc, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		offset := len(data) - len(trimmed)
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		var docs []rawDoc
		for i := 1; ; i++ {
			start := offset + int(dec.InputOffset())
			var raw json.RawMessage
			err := dec.Decode(&raw)
			if err == io.EOF {
				return docs, nil
			}
			if err != nil {
				var se *json.SyntaxError
				if errors.As(err, &se) {
					return nil, fmt.Errorf("invalid JSON at line %d: %v", lineAt(data, offset+int(se.Offset)), err)
				}
				return nil, fmt.Errorf("invalid JSON in document %d: %v", i, err)
			}
			docs = append(docs, rawDoc{json: raw, index: i, line: lineAt(data, start+leadingSpace(data[start:]))})
		}
	}
	var docs []rawDoc
	lines := strings.SplitAfter(string(data), "\n")
	var cur strings.Builder
	startLine, index := 1, 0
	flush := func(next int) error {
		text := cur.String()
		cur.Reset()
		defer func() { startLine = next }()
		if isBlankYAML(text) {
			return nil
		}
		index++
		j, err := yaml.YAMLToJSONStrict([]byte(text))
		if err != nil {
			msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(m string) string {
				n, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
				return fmt.Sprintf("line %d", n+startLine-1)
			})
			msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
			msg = strings.Join(strings.Fields(msg), " ")
			return fmt.Errorf("document %d is not valid YAML: %s", index, msg)
		}
		if string(bytes.TrimSpace(j)) == "null" {
			index--
			return nil
		}
		docs = append(docs, rawDoc{json: j, index: index, line: startLine + firstContentLine(text)})
		return nil
	}
	for i, l := range lines {
		if isDocSeparator(l) {
			if err := flush(i + 2); err != nil {
				return nil, err
			}
			continue
		}
		cur.WriteString(l)
	}
	if err := flush(0); err != nil {
		return nil, err
	}
	return docs, nil
}

func isDocSeparator(line string) bool {
	l := strings.TrimRight(line, "\r\n")
	if l == "---" || l == "..." {
		return true
	}
	return strings.HasPrefix(l, "--- ") || strings.HasPrefix(l, "---\t")
}

func isBlankYAML(text string) bool {
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") && l != "%YAML" && !strings.HasPrefix(l, "%") {
			return false
		}
	}
	return true
}

// firstContentLine is the 0-based line of text's first non-comment line.
func firstContentLine(text string) int {
	for i, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return i
		}
	}
	return 0
}

func lineAt(data []byte, offset int) int {
	if offset > len(data) {
		offset = len(data)
	}
	return bytes.Count(data[:offset], []byte("\n")) + 1
}

func leadingSpace(b []byte) int {
	return len(b) - len(bytes.TrimLeft(b, " \t\r\n"))
}

// expandList returns the resources in one document: itself, the elements of
// a top-level list, or the items of a list document; and whether it was a
// list.
func expandList(raw []byte) ([][]byte, bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, true, err
		}
		out := make([][]byte, len(items))
		for i, it := range items {
			out[i] = it
		}
		return out, true, nil
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false, fmt.Errorf("expected a resource (apiVersion, kind, metadata, spec), got %s", jsonTypeName(raw))
	}
	var head struct {
		Kind  any             `json:"kind"`
		Items json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, false, err
	}
	kind, _ := head.Kind.(string)
	if kind == "List" || (strings.HasSuffix(kind, "List") && head.Items != nil) {
		var l map[string]json.RawMessage
		_ = json.Unmarshal(raw, &l)
		for k := range l {
			switch k {
			case "apiVersion", "kind", "items", "metadata":
			default:
				return nil, true, fmt.Errorf("unknown field %s in the %s: a list has apiVersion, kind, metadata and items", k, kind)
			}
		}
		if head.Items == nil || string(head.Items) == "null" {
			return nil, true, nil
		}
		items, _, err := expandList(head.Items)
		return items, true, err
	}
	return [][]byte{raw}, false, nil
}

func jsonTypeName(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '[':
		return "a list"
	case '{':
		return "a mapping"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func decodeObject(raw []byte) (Object, error) {
	var head struct {
		APIVersion any `json:"apiVersion"`
		Kind       any `json:"kind"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return Object{}, fmt.Errorf("expected a resource (apiVersion, kind, metadata, spec), got %s", jsonTypeName(bytes.TrimSpace(raw)))
	}
	av, ok := head.APIVersion.(string)
	if !ok || av == "" {
		return Object{}, fmt.Errorf("apiVersion is missing: use apiVersion: %s (or %s for the legacy form)", APIVersion, LegacyAPIVersion)
	}
	kindName, ok := head.Kind.(string)
	if !ok || kindName == "" {
		return Object{}, fmt.Errorf("kind is missing: use one of %s", KindList())
	}
	var legacy bool
	switch av {
	case APIVersion:
	case LegacyAPIVersion:
		legacy = true
	default:
		return Object{}, fmt.Errorf("apiVersion %q is not supported: use %s (or %s for the legacy form)", av, APIVersion, LegacyAPIVersion)
	}
	k, err := LookupKind(kindName)
	if err != nil {
		return Object{}, fmt.Errorf("kind %q is not known: use one of %s", kindName, KindList())
	}
	if legacy && k.Legacy == "" {
		return Object{}, fmt.Errorf("kind %s has no legacy (apiVersion %s) form: use apiVersion %s", k.Name, LegacyAPIVersion, APIVersion)
	}
	o, err := k.decode(raw, legacy)
	if err != nil {
		return Object{}, err
	}
	o.Legacy = legacy
	o.Resource.Normalize()
	if err := o.Resource.Validate(); err != nil {
		return Object{}, err
	}
	return o, nil
}

// StrictUnmarshal decodes raw into v, first refusing any field v's type does
// not have (matching names exactly, unlike encoding/json), and turning type
// errors into messages that name the field.
func StrictUnmarshal(raw []byte, v any, what string) error {
	var generic any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return err
	}
	if err := checkFields(generic, reflect.TypeOf(v), "", what); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s: expected %s, got %s", te.Field, typeWord(te.Type), valueWord(te.Value))
		}
		return err
	}
	return nil
}

func typeWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Pointer:
		return typeWord(t.Elem())
	}
	return t.String()
}

// valueWord describes json.UnmarshalTypeError's Value ("string", "number 1.5").
func valueWord(v string) string {
	switch v {
	case "string":
		return "a string"
	case "array":
		return "a list"
	case "object":
		return "a mapping"
	case "bool":
		return "true or false"
	}
	if strings.HasPrefix(v, "number") {
		return "a " + v
	}
	return v
}

// checkFields walks a decoded JSON value alongside the Go type it will be
// decoded into and reports the first key that type does not have.
func checkFields(v any, t reflect.Type, path, what string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return nil // a type error, reported by the typed decode
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				return unknownField(join(path, k), k, t, what, path)
			}
			if err := checkFields(m[k], f, join(path, k), what); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		l, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, e := range l {
			if err := checkFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), what); err != nil {
				return err
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		for k, e := range m {
			if err := checkFields(e, t.Elem(), join(path, k), what); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func unknownField(full, key string, t reflect.Type, what, parent string) error {
	names := jsonFieldNames(t)
	for _, n := range names {
		if strings.EqualFold(n, key) {
			return fmt.Errorf("unknown field %s: did you mean %s? (field names are case-sensitive)", full, join(parent, n))
		}
	}
	where := what
	if parent != "" {
		where = what + " " + parent
	}
	if len(names) == 0 {
		return fmt.Errorf("unknown field %s: %s takes no fields", full, where)
	}
	return fmt.Errorf("unknown field %s: %s has only %s", full, where, strings.Join(names, ", "))
}

// jsonFields maps the JSON names of t's fields (embedded structs inlined) to
// their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// jsonFieldNames lists t's JSON field names in declaration order.
func jsonFieldNames(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFieldNames(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// ---- IPPool ----

// IPPoolKind is the IPPool resource.
var IPPoolKind = &Kind{
	Name:    "IPPool",
	Aliases: []string{"ippools", "ipp", "ipps", "pool", "pools"},
	Legacy:  "ipPool",
	decode:  decodeIPPool,
	encode: func(r Resource, rv string) any {
		p := r.(*IPPool)
		return &IPPoolDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "IPPool"},
			Metadata: ObjectMeta{Name: p.Name, ResourceVersion: rv},
			Spec: IPPoolSpec{
				CIDR: p.CIDR, BlockSize: p.BlockSize, IPIPMode: p.IPIPMode, VXLANMode: p.VXLANMode,
				NATOutgoing: p.NATOutgoing, Disabled: p.Disabled, NodeSelector: p.NodeSelector,
			},
		}
	},
}

// IPPoolDoc is the v3 document of an IPPool.
type IPPoolDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     IPPoolSpec `json:"spec"`
}

// IPPoolSpec is the spec of an IPPool document.
type IPPoolSpec struct {
	CIDR         string    `json:"cidr"`
	BlockSize    int       `json:"blockSize,omitempty"`
	IPIPMode     EncapMode `json:"ipipMode,omitempty"`
	VXLANMode    EncapMode `json:"vxlanMode,omitempty"`
	NATOutgoing  bool      `json:"natOutgoing,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	NodeSelector string    `json:"nodeSelector,omitempty"`
}

// LegacyIPPoolDoc is the v1 (Calico 2.x) form of an IP pool.
type LegacyIPPoolDoc struct {
	TypeMeta `json:",inline"`
	Metadata struct {
		CIDR string `json:"cidr"`
		Name string `json:"name,omitempty"`
	} `json:"metadata"`
	Spec struct {
		IPIP *struct {
			Enabled *bool  `json:"enabled,omitempty"`
			Mode    string `json:"mode,omitempty"`
		} `json:"ipip,omitempty"`
		NATOutgoing bool `json:"nat-outgoing,omitempty"`
		Disabled    bool `json:"disabled,omitempty"`
	} `json:"spec"`
}

func decodeIPPool(raw []byte, legacy bool) (Object, error) {
	if legacy {
		var d LegacyIPPoolDoc
		if err := StrictUnmarshal(raw, &d, "a legacy (v1) ipPool"); err != nil {
			return Object{}, err
		}
		p := &IPPool{Name: d.Metadata.Name, CIDR: d.Metadata.CIDR, NATOutgoing: d.Spec.NATOutgoing, Disabled: d.Spec.Disabled, IPIPMode: EncapNever}
		if p.CIDR == "" {
			return Object{}, errors.New("metadata.cidr is missing: a legacy ipPool is named by its CIDR, e.g. metadata: {cidr: 10.10.0.0/16}")
		}
		pfx, err := netip.ParsePrefix(strings.TrimSpace(p.CIDR))
		if err != nil {
			return Object{}, fmt.Errorf("metadata.cidr %q is not a valid CIDR (e.g. 10.10.0.0/16 or fd00:10::/48)", p.CIDR)
		}
		if ipip := d.Spec.IPIP; ipip != nil && (ipip.Enabled == nil || *ipip.Enabled) {
			switch strings.ToLower(ipip.Mode) {
			case "", "always":
				p.IPIPMode = EncapAlways
			case "cross-subnet", "crosssubnet":
				p.IPIPMode = EncapCrossSubnet
			default:
				return Object{}, fmt.Errorf("spec.ipip.mode %q: use always or cross-subnet", ipip.Mode)
			}
		}
		o := Object{Resource: p}
		if p.Name == "" {
			p.Name = PoolNameFromCIDR(pfx)
			o.NameFromCIDR = true
		}
		return o, nil
	}
	var d IPPoolDoc
	if err := StrictUnmarshal(raw, &d, "an IPPool"); err != nil {
		return Object{}, err
	}
	if d.Spec.CIDR == "" {
		return Object{}, errors.New("spec.cidr is missing: give the pool's range, e.g. 10.10.0.0/16")
	}
	for field, m := range map[string]*EncapMode{"spec.ipipMode": &d.Spec.IPIPMode, "spec.vxlanMode": &d.Spec.VXLANMode} {
		if norm, ok := parseEncap(string(*m)); ok {
			*m = norm
		} else {
			return Object{}, fmt.Errorf("%s %q: use Always, CrossSubnet or Never", field, *m)
		}
	}
	s := d.Spec
	return Object{
		Resource: &IPPool{Name: d.Metadata.Name, CIDR: s.CIDR, BlockSize: s.BlockSize, IPIPMode: s.IPIPMode,
			VXLANMode: s.VXLANMode, NATOutgoing: s.NATOutgoing, Disabled: s.Disabled, NodeSelector: s.NodeSelector},
		ResourceVersion: d.Metadata.ResourceVersion,
	}, nil
}

// parseEncap accepts an encapsulation mode in any case ("always",
// "crossSubnet") and returns its canonical spelling.
func parseEncap(s string) (EncapMode, bool) {
	switch strings.ToLower(s) {
	case "":
		return "", true
	case "never":
		return EncapNever, true
	case "always":
		return EncapAlways, true
	case "crosssubnet", "cross-subnet":
		return EncapCrossSubnet, true
	}
	return EncapMode(s), false
}

// PoolNameFromCIDR derives a pool name from its CIDR the way Calico's
// upgrade did: "192.168.0.0/16" -> "192-168-0-0-16".
func PoolNameFromCIDR(p netip.Prefix) string {
	return strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(p.Masked().String())
}

// ResourceKind implements Resource.
func (p *IPPool) ResourceKind() *Kind { return IPPoolKind }

// ResourceName implements Resource.
func (p *IPPool) ResourceName() string { return p.Name }
