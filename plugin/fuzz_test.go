package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
	"github.com/calico-libnetwork/calico-libnetwork/docker/ipamdriver"
	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

// The calls each socket serves, as Docker sends them.
var (
	networkCalls = []string{"/Plugin.Activate", "/Calico.Version", "/Calico.Status",
		"/NetworkDriver.GetCapabilities", "/NetworkDriver.CreateNetwork", "/NetworkDriver.AllocateNetwork",
		"/NetworkDriver.DeleteNetwork", "/NetworkDriver.FreeNetwork", "/NetworkDriver.CreateEndpoint",
		"/NetworkDriver.DeleteEndpoint", "/NetworkDriver.EndpointOperInfo", "/NetworkDriver.Join", "/NetworkDriver.Leave",
		"/NetworkDriver.DiscoverNew", "/NetworkDriver.DiscoverDelete", "/NetworkDriver.ProgramExternalConnectivity",
		"/NetworkDriver.RevokeExternalConnectivity"}
	ipamCalls = []string{"/Plugin.Activate", "/IpamDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces",
		"/IpamDriver.RequestPool", "/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress"}
)

const (
	fuzzNet  = "f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1"
	fuzzEP   = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1"
	fuzzCIDR = "10.77.0.0/16"
)

// fuzzMuxes are both sockets' handlers backed by a real etcd (with a pool,
// a network and an endpoint, so that mutated requests reach deep paths) and
// a real data plane in a namespace of the test's own.
func fuzzMuxes(f *testing.F) (netMux, ipamMux http.Handler, do func(*testing.T, func())) {
	n := testns.New(f)
	s := testetcd.Start(f)
	ctx := context.Background()
	if _, err := ipam.PutPool(ctx, s, api.IPPool{Name: "fuzz", CIDR: fuzzCIDR, BlockSize: 26}, ipam.PutCreate, 0); err != nil {
		f.Fatal(err)
	}
	if err := s.Put(ctx, api.NetworkKey(fuzzNet), api.Network{ID: fuzzNet, IPv4Pools: []string{"0.0.0.0/0"}}); err != nil {
		f.Fatal(err)
	}
	if err := s.Put(ctx, api.EndpointKey("fuzz-host", fuzzEP), api.Endpoint{ID: fuzzEP, NetworkID: fuzzNet, Host: "fuzz-host",
		IPv4: netip.MustParsePrefix("10.77.0.9/32"), MAC: "ee:00:00:00:00:09", HostIface: netdriver.HostIfaceName(fuzzEP)}); err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	alloc := ipam.New(s, "fuzz-host", log)
	drv := netdriver.New(netdriver.Config{Store: s, Dataplane: dataplane.New(log, "fuzz-host"), IPAM: alloc, Host: "fuzz-host", Log: log})
	netMux = NetworkMux(drv, nil, log)
	ipamMux = IPAMMux(ipamdriver.New(alloc, log), log)
	return netMux, ipamMux, func(t *testing.T, fn func()) { testns.Do(t, n, fn) }
}

// call serves one request and checks what every answer must be: JSON, an
// "Err" that says what went wrong on every failure, no handler panic, an
// answer within seconds.
func call(t *testing.T, mux http.Handler, path string, body []byte) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	start := time.Now()
	mux.ServeHTTP(rec, req)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("%s took %s", path, d)
	}
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s answered %d with non-JSON %q: %v", path, rec.Code, rec.Body.String(), err)
	}
	switch rec.Code {
	case http.StatusOK:
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusInternalServerError, http.StatusNotFound:
		e, _ := out["Err"].(string)
		if strings.TrimSpace(e) == "" {
			t.Fatalf("%s failed (%d) without saying why: %s", path, rec.Code, rec.Body.String())
		}
		if strings.Contains(e, "internal error in") {
			t.Fatalf("%s panicked: %s", path, e)
		}
		if rec.Code == http.StatusNotFound && path != "/Calico.Status" {
			t.Fatalf("%s answered 404", path)
		}
	default:
		t.Fatalf("%s answered status %d", path, rec.Code)
	}
	return rec.Code, out
}

func jsonSeed(v any) []byte { b, _ := json.Marshal(v); return b }

// FuzzNetworkSocket sends arbitrary JSON to every NetworkDriver call.
func FuzzNetworkSocket(f *testing.F) {
	seeds := map[string]any{
		"/NetworkDriver.CreateNetwork": map[string]any{"NetworkID": "n2", "Options": map[string]any{"com.docker.network.generic": map[string]any{"open": "true"}},
			"IPv4Data": []map[string]any{{"AddressSpace": ipamdriver.GlobalAddressSpace, "Pool": "0.0.0.0/0"}}},
		"/NetworkDriver.CreateEndpoint":   map[string]any{"NetworkID": fuzzNet, "EndpointID": "e2e2e2e2e2e2e2e2", "Interface": map[string]any{"Address": "10.77.0.10/32", "MacAddress": "ee:00:00:00:00:0a"}},
		"/NetworkDriver.Join":             map[string]any{"NetworkID": fuzzNet, "EndpointID": fuzzEP, "SandboxKey": "/var/run/docker/netns/x"},
		"/NetworkDriver.Leave":            map[string]any{"NetworkID": fuzzNet, "EndpointID": fuzzEP},
		"/NetworkDriver.DeleteEndpoint":   map[string]any{"NetworkID": fuzzNet, "EndpointID": "e2e2e2e2e2e2e2e2"},
		"/NetworkDriver.DeleteNetwork":    map[string]any{"NetworkID": "n2"},
		"/NetworkDriver.EndpointOperInfo": map[string]any{"NetworkID": fuzzNet, "EndpointID": fuzzEP},
		"/NetworkDriver.ProgramExternalConnectivity": map[string]any{"NetworkID": fuzzNet, "EndpointID": fuzzEP,
			"Options": map[string]any{"com.docker.network.portmap": []any{map[string]any{"Proto": 6, "Port": 80}}}},
	}
	for i, p := range networkCalls {
		if s, ok := seeds[p]; ok {
			f.Add(uint8(i), jsonSeed(s))
		} else {
			f.Add(uint8(i), []byte("{}"))
		}
	}
	f.Add(uint8(4), []byte(`{"NetworkID":"x","IPv4Data":[{"AddressSpace":"other"}]}`))
	f.Add(uint8(8), []byte(`{"NetworkID":"`+fuzzNet+`","EndpointID":"e3","Interface":{"Address":"nope","MacAddress":"zz"}}`))
	netMux, _, do := fuzzMuxes(f)
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := networkCalls[int(which)%len(networkCalls)]
		do(t, func() {
			code, out := call(t, netMux, path, body)
			if code == http.StatusOK && path == "/NetworkDriver.Join" {
				if gw, _ := out["Gateway"].(string); gw != "" && gw != dataplane.GatewayIPv4 {
					t.Fatalf("Join gave gateway %q", gw)
				}
			}
		})
	})
}

// FuzzIPAMSocket sends arbitrary JSON to every IpamDriver call; addresses
// handed out are in the pool and pool IDs given out parse back.
func FuzzIPAMSocket(f *testing.F) {
	seeds := map[string]any{
		"/IpamDriver.RequestPool":    map[string]any{"AddressSpace": ipamdriver.GlobalAddressSpace, "Pool": "10.77.8.0/24", "SubPool": "10.77.8.128/25", "V6": false},
		"/IpamDriver.ReleasePool":    map[string]any{"PoolID": ipamdriver.PoolIDv4},
		"/IpamDriver.RequestAddress": map[string]any{"PoolID": ipamdriver.PoolIDv4, "Options": map[string]string{"com.docker.network.endpoint.macaddress": "ee:00:00:00:00:01"}},
		"/IpamDriver.ReleaseAddress": map[string]any{"PoolID": ipamdriver.PoolIDv4, "Address": "10.77.0.1"},
	}
	for i, p := range ipamCalls {
		if s, ok := seeds[p]; ok {
			f.Add(uint8(i), jsonSeed(s))
		} else {
			f.Add(uint8(i), []byte("{}"))
		}
	}
	f.Add(uint8(5), []byte(`{"PoolID":"CalicoSubnet|10.77.8.0/24|10.77.8.128/25","Address":"10.77.8.200"}`))
	f.Add(uint8(5), []byte(`{"PoolID":"CalicoSubnet|10.77.8.0/24|10.78.0.0/25"}`))
	_, ipamMux, do := fuzzMuxes(f)
	pool := netip.MustParsePrefix(fuzzCIDR)
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := ipamCalls[int(which)%len(ipamCalls)]
		do(t, func() {
			code, out := call(t, ipamMux, path, body)
			if code != http.StatusOK {
				return
			}
			switch path {
			case "/IpamDriver.RequestAddress":
				a, _ := out["Address"].(string)
				p, err := netip.ParsePrefix(a)
				if err != nil || !pool.Contains(p.Addr()) {
					t.Fatalf("RequestAddress %s gave %q, outside pool %s", body, a, pool)
				}
			case "/IpamDriver.RequestPool":
				// Docker hands the pool ID back: it must always be ours to read.
				id, _ := out["PoolID"].(string)
				_, res := call(t, ipamMux, "/IpamDriver.RequestAddress", jsonSeed(map[string]any{"PoolID": id}))
				if e, _ := res["Err"].(string); strings.Contains(e, "pool ID") {
					t.Fatalf("RequestPool %s gave pool ID %q, which RequestAddress refuses: %s", body, id, e)
				}
			}
		})
	})
}
