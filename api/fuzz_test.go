package api

import (
	"bytes"
	"encoding/json"
	"testing"
)

// storedKinds are the records fuzzed, by the first byte of the input.
var storedKinds = []string{"IPPool", "Node", "IPAMConfiguration", "FelixConfiguration", "BGPConfiguration", "BGPPeer"}

func newStored(kind string) Resource {
	switch kind {
	case "IPPool":
		return &IPPool{}
	case "Node":
		return &Node{}
	case "IPAMConfiguration":
		c := DefaultIPAMConfig()
		return &c
	case "BGPConfiguration":
		return &BGPConfig{}
	case "BGPPeer":
		return &BGPPeer{}
	}
	c := DefaultFelixConfig()
	return &c
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzStoredRecords: a stored record, decoded as the daemon and calicoctl
// decode it, either fails or, once normalised, validates, normalises to
// itself, survives being stored again, and prints as a document that
// calicoctl reads back as the same resource (what get prints, apply takes).
func FuzzStoredRecords(f *testing.F) {
	seeds := []struct {
		kind uint8
		raw  string
	}{
		{0, `{"name":"p1","cidr":"10.10.0.0/16","blockSize":26,"ipipMode":"Never","vxlanMode":"CrossSubnet","natOutgoing":true}`},
		{0, `{"name":"p6","cidr":"fd00:10::/48"}`},
		{0, `{"name":"p","cidr":" 10.0.0.1/8 ","blockSize":20}`},
		{1, `{"name":"host1","ipv4Address":"10.0.0.1/24","ipv6Address":"fd00::1/64","lastSeen":"2025-03-01T12:00:00Z","version":"v1"}`},
		{1, `{"name":"h","ipv4Address":"10.0.0.1"}`},
		{2, `{"strictAffinity":true,"autoAllocateBlocks":false,"maxBlocksPerHost":4}`},
		{3, `{"defaultEndpointToHostAction":"Accept","endpointToHostAllowedPorts":[{"protocol":"tcp","port":53},{"protocol":"UDP","port":53}]}`},
		{3, `{"defaultEndpointToHostAction":"return"}`},
		{1, `{"name":"h","ipv4Address":"10.0.0.1/24","asNumber":"1.10","routeReflectorClusterID":"224.0.0.1","labels":{"rack":"a"}}`},
		{4, `{"asNumber":64513,"nodeToNodeMeshEnabled":false,"listenPort":1179,"logSeverityScreen":"debug"}`},
		{4, `{}`},
		{5, `{"name":"tor","peerIP":"10.0.0.254:179","asNumber":65000,"nodeSelector":"rack == 'a'","password":{"secretKeyRef":{"name":"s","key":"k"}},"keepaliveTime":"2s"}`},
		{5, `{"name":"v6","node":"h1","peerIP":"[fd00::1]:1179","asNumber":"1.2","keepOriginalNextHop":true}`},
	}
	for _, s := range seeds {
		f.Add(s.kind, []byte(s.raw))
	}
	f.Fuzz(func(t *testing.T, k uint8, raw []byte) {
		kind := storedKinds[int(k)%len(storedKinds)]
		r := newStored(kind)
		if kind == "FelixConfiguration" {
			c, err := DecodeStoredFelixConfig(raw)
			if err != nil {
				return
			}
			r = &c
		} else if err := json.Unmarshal(raw, r); err != nil {
			return
		}
		r.Normalize()
		if r.Validate() != nil {
			return
		}
		once := mustJSON(t, r)
		r.Normalize()
		if twice := mustJSON(t, r); !bytes.Equal(once, twice) {
			t.Fatalf("%s: Normalize is not idempotent:\n%s\n%s", kind, once, twice)
		}
		stored := newStored(kind)
		if err := json.Unmarshal(once, stored); err != nil {
			t.Fatalf("%s: stored form does not decode: %v\n%s", kind, err, once)
		}
		stored.Normalize()
		if err := stored.Validate(); err != nil {
			t.Fatalf("%s: stored again it is invalid: %v\n%s", kind, err, once)
		}
		if again := mustJSON(t, stored); !bytes.Equal(once, again) {
			t.Fatalf("%s: stored again it changes:\n%s\n%s", kind, once, again)
		}
		if kind == "FelixConfiguration" {
			c, err := DecodeStoredFelixConfig(once)
			if err != nil || !bytes.Equal(mustJSON(t, &c), once) {
				t.Fatalf("the daemon reads the stored FelixConfiguration %s as %+v (%v)", once, c, err)
			}
		}
		for _, format := range []string{"yaml", "json"} {
			doc, err := Encode([]Object{{Resource: r}}, nil, false, format)
			if err != nil {
				t.Fatalf("%s: encode as %s: %v", kind, format, err)
			}
			objs, err := Decode(doc, "fuzz")
			if err != nil {
				t.Fatalf("%s printed as %s does not read back: %v\n%s", kind, format, err, doc)
			}
			got := objs[0].Resource
			if n, ok := got.(*Node); ok { // status is printed, not read back
				n.LastSeen, n.Version = r.(*Node).LastSeen, r.(*Node).Version
			}
			if b := mustJSON(t, got); len(objs) != 1 || !bytes.Equal(b, once) {
				t.Fatalf("%s printed as %s reads back differently:\n%s\n%s\n%s", kind, format, doc, once, b)
			}
		}
	})
}
