package api

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"
)

// TestStoredJSONUnchanged: the typed records write byte for byte what the
// string-typed ones wrote, so existing datastores and other hosts' daemons
// read them as before, and read what those wrote.
func TestStoredJSONUnchanged(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"endpoint", &Endpoint{ID: "e1", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.1/32"),
			IPv6: netip.MustParsePrefix("fd00:1::2/128"), MAC: "ee:ee:ee:ee:ee:01", HostIface: "calie1", CreatedAt: at, Handle: "docker.ee"},
			`{"id":"e1","networkID":"n1","host":"h1","ipv4":"10.0.0.1/32","ipv6":"fd00:1::2/128","mac":"ee:ee:ee:ee:ee:01","hostIface":"calie1","createdAt":"2026-01-02T03:04:05Z","handle":"docker.ee"}`},
		{"endpoint without IPv6", &Endpoint{ID: "e1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.1/32"), CreatedAt: at},
			`{"id":"e1","networkID":"","host":"h1","ipv4":"10.0.0.1/32","mac":"","hostIface":"","createdAt":"2026-01-02T03:04:05Z"}`},
		{"node", &Node{Name: "h1", IPv4Address: netip.MustParsePrefix("10.0.1.1/24"), LastSeen: at, Version: "v1"},
			`{"name":"h1","ipv4Address":"10.0.1.1/24","lastSeen":"2026-01-02T03:04:05Z","version":"v1"}`},
		{"node without addresses", &Node{Name: "h1"}, `{"name":"h1"}`},
		{"block", &Block{CIDR: netip.MustParsePrefix("10.0.0.0/31"), Affinity: "h1", Allocations: []*Owner{nil, {Host: "h1", Handle: "docker.1", Seq: 7}}, Unallocated: []int{0}, Seq: 7},
			`{"cidr":"10.0.0.0/31","affinity":"h1","allocations":[null,{"host":"h1","handle":"docker.1","seq":7}],"unallocated":[0],"seq":7}`},
		{"peer", &Peer{Name: "h2", IPv4: netip.MustParsePrefix("10.0.1.2/24"), LastSeen: at},
			`{"name":"h2","ipv4":"10.0.1.2/24","sameSubnet":false,"lastSeen":"2026-01-02T03:04:05Z"}`},
		{"version", VersionInfo{Version: "v1", GitCommit: "abc"}, `{"GitCommit":"abc","Version":"v1"}`},
	}
	for _, tc := range tests {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, b, tc.want)
		}
	}
}

// TestStoredAddressesRead: addresses stored with or without a prefix
// length read back; one that is no address is an error naming the field.
func TestStoredAddressesRead(t *testing.T) {
	var e Endpoint
	if err := json.Unmarshal([]byte(`{"id":"e","ipv4":"10.0.0.1","ipv6":"fd00::1/128"}`), &e); err != nil {
		t.Fatal(err)
	}
	if e.IPv4 != netip.MustParsePrefix("10.0.0.1/32") || e.IPv6 != netip.MustParsePrefix("fd00::1/128") {
		t.Errorf("endpoint addresses %v %v", e.IPv4, e.IPv6)
	}
	if got := e.Addrs(); len(got) != 2 || got[0] != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("Addrs %v", got)
	}
	if err := json.Unmarshal([]byte(`{"id":"e","ipv4":"ten"}`), &e); err == nil {
		t.Error("an endpoint with the address \"ten\" decoded")
	}
	var n Node
	if err := json.Unmarshal([]byte(`{"name":"h","ipv4Address":"10.0.0.1"}`), &n); err != nil || PrefixText(n.IPv4Address) != "10.0.0.1/32" {
		t.Errorf("node %+v: %v", n, err)
	}
	if err := json.Unmarshal([]byte(`{"name":"h","ipv6Address":"x"}`), &n); err == nil {
		t.Error(`a node with the address "x" decoded`)
	}
}
