package engineapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testengine"
)

var versions = []testengine.Version{testengine.Docker2010, testengine.Docker285}

func newClient(t *testing.T, e *testengine.Engine) *Client {
	t.Helper()
	c, err := New(e.Host())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"unix:///var/run/docker.sock", true},
		{"/var/run/docker.sock", true},
		{"tcp://127.0.0.1:2375", false},
		{"unix://", false},
		{"", false},
	} {
		_, err := New(tc.host)
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): err %v, want ok=%v", tc.host, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "unix:///var/run/docker.sock") {
			t.Errorf("New(%q): error does not say what to give: %v", tc.host, err)
		}
	}
}

// Each call, against each engine: what it sends and what it makes of the
// answer.
func TestCalls(t *testing.T) {
	for _, v := range versions {
		t.Run(string(v), func(t *testing.T) {
			e := testengine.Start(t, v)
			c := newClient(t, e)
			netID := e.AddNetwork(testengine.Network{Name: "net1", Driver: "calico", IPAMDriver: "calico-ipam",
				Subnets: []testengine.Subnet{{Subnet: "10.77.0.0/24", IPRange: "10.77.0.128/25"}}, Labels: map[string]string{"a": "b"},
				Options: map[string]string{"open": "true"}})
			e.AddNetwork(testengine.Network{Name: "managed", Driver: "calico-libnetwork:latest", IPAMDriver: "calico-libnetwork:latest"})
			e.AddNetwork(testengine.Network{Name: "bridge", Driver: "bridge", IPAMDriver: "default"})
			e.AddContainer(testengine.Container{ID: "c1", Name: "web", Labels: map[string]string{"org.projectcalico.label.role": "web"},
				Endpoints: map[string]string{netID: "ep1"}})
			e.AddContainer(testengine.Container{ID: "c2", Name: "other", Endpoints: map[string]string{"elsewhere": "ep2"}})

			if err := c.Ping(context.Background()); err != nil {
				t.Fatalf("ping: %v", err)
			}
			checkNetworkCalls(t, e, c, netID)
			checkContainerCalls(t, e, c, netID)
			checkCreateRemove(t, e, c)
		})
	}
}

func checkNetworkCalls(t *testing.T, e *testengine.Engine, c *Client, netID string) {
	t.Helper()
	ctx := context.Background()
	ns, err := c.Networks(ctx, "calico")
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 1 || ns[0].Name != "net1" || ns[0].ID != netID {
		t.Fatalf("Networks(calico) = %+v, want only net1", ns)
	}
	// An engine matching the driver filter loosely lists the managed
	// plugin's network too; the client keeps exact ones.
	e.SetLooseDriverFilter()
	if loose, err := c.Networks(ctx, "calico"); err != nil || len(loose) != 1 || loose[0].Name != "net1" {
		t.Fatalf("Networks(calico) from a loose engine = %+v, %v, want only net1 (not the one of driver calico-libnetwork:latest)", loose, err)
	}
	if ns[0].IPAM.Driver != "calico-ipam" || len(ns[0].IPAM.Config) != 1 || ns[0].IPAM.Config[0].Subnet != "10.77.0.0/24" ||
		ns[0].IPAM.Config[0].IPRange != "10.77.0.128/25" || ns[0].Labels["a"] != "b" || ns[0].Options["open"] != "true" {
		t.Fatalf("net1 as listed: %+v", ns[0])
	}
	ns, err = c.Networks(ctx, "calico-libnetwork:latest")
	if err != nil || len(ns) != 1 || ns[0].Name != "managed" {
		t.Fatalf("Networks(calico-libnetwork:latest) = %+v, %v", ns, err)
	}
	list := lastRequest(t, e, "/networks")
	var f map[string][]string
	if err := json.Unmarshal([]byte(mustQuery(t, list.Query).Get("filters")), &f); err != nil || len(f["driver"]) != 1 || f["driver"][0] != "calico-libnetwork:latest" {
		t.Fatalf("list filters %q (%v)", list.Query, err)
	}

	n, err := c.Network(ctx, "net1")
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != netID || n.Driver != "calico" || len(n.Containers) != 1 {
		t.Fatalf("Network(net1) = %+v", n)
	}
	var att struct{ EndpointID string }
	if err := json.Unmarshal(n.Containers["c1"], &att); err != nil || att.EndpointID != "ep1" {
		t.Fatalf("net1's container c1: %s (%v)", n.Containers["c1"], err)
	}
}

func checkContainerCalls(t *testing.T, e *testengine.Engine, c *Client, netID string) {
	t.Helper()
	ctx := context.Background()
	cs, err := c.ContainersOnNetwork(ctx, netID)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].ID != "c1" || cs[0].Labels["org.projectcalico.label.role"] != "web" ||
		cs[0].NetworkSettings.Networks["net1"].EndpointID != "ep1" || cs[0].NetworkSettings.Networks["net1"].NetworkID != netID {
		t.Fatalf("ContainersOnNetwork = %+v", cs)
	}
	q := mustQuery(t, lastRequest(t, e, "/containers/json").Query)
	if q.Get("all") != "1" {
		t.Fatalf("container list without all=1 would miss stopped containers: %v", q)
	}
	ct, err := c.Container(ctx, "c1")
	if err != nil || ct.ID != "c1" || ct.Name != "/web" || ct.Config.Labels["org.projectcalico.label.role"] != "web" {
		t.Fatalf("Container(c1) = %+v, %v", ct, err)
	}
}

func checkCreateRemove(t *testing.T, e *testengine.Engine, c *Client) {
	t.Helper()
	ctx := context.Background()
	req := CreateNetwork{Name: "net2", CheckDuplicate: true, Driver: "calico", EnableIPv6: true,
		IPAM:    IPAM{Driver: "calico-ipam", Config: []IPAMConfig{{Subnet: "fd00:77::/64"}}},
		Options: map[string]string{"open": "false"}, Labels: map[string]string{"org.projectcalico.shared": "true"}}
	id, err := c.CreateNetwork(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := e.Networks()["net2"]
	if !ok || got.ID != id || got.Driver != "calico" || got.IPAMDriver != "calico-ipam" || !got.EnableIPv6 ||
		len(got.Subnets) != 1 || got.Subnets[0].Subnet != "fd00:77::/64" || got.Labels["org.projectcalico.shared"] != "true" {
		t.Fatalf("engine holds %+v after CreateNetwork (id %q)", got, id)
	}
	if cr := lastRequest(t, e, "/networks/create"); cr.Method != http.MethodPost || cr.ContentType != "application/json" {
		t.Fatalf("create sent as %s with Content-Type %q", cr.Method, cr.ContentType)
	}
	if err := c.RemoveNetwork(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.Networks()["net2"]; ok {
		t.Fatal("net2 still there after RemoveNetwork")
	}
}

// Names and IDs go into the path escaped: a name cannot reach another
// route.
func TestPathEscaping(t *testing.T) {
	e := testengine.Start(t, testengine.Docker285)
	c := newClient(t, e)
	_, err := c.Network(context.Background(), "../containers/x")
	if !IsNotFound(err) {
		t.Fatalf("Network(../containers/x): %v, want a 404", err)
	}
	if r := lastRequest(t, e, ""); r.Path != "/networks/..%2Fcontainers%2Fx" {
		t.Fatalf("sent path %q", r.Path)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		fault    testengine.Fault
		call     string
		do       func(*Client) error
		code     int
		notFound bool
		msg      string
	}{
		{name: "network 404", do: func(c *Client) error { _, err := c.Network(ctx, "nope"); return err },
			code: 404, notFound: true, msg: "network nope not found"},
		{name: "container 404", do: func(c *Client) error { _, err := c.Container(ctx, "nope"); return err },
			code: 404, notFound: true, msg: "No such container: nope"},
		{name: "remove 404", do: func(c *Client) error { return c.RemoveNetwork(ctx, "nope") },
			code: 404, notFound: true, msg: "network nope not found"},
		{name: "remove in use", do: func(c *Client) error { return c.RemoveNetwork(ctx, "busy") },
			code: 403, msg: "has active endpoints"},
		{name: "create duplicate", do: func(c *Client) error {
			_, err := c.CreateNetwork(ctx, CreateNetwork{Name: "busy", Driver: "calico", IPAM: IPAM{Driver: "calico-ipam"}})
			return err
		}, code: 409, msg: "network with name busy already exists"},
		{name: "500 with a message", call: "GET /networks", fault: testengine.Fault{Status: 500, Body: `{"message":"plugin calico not found"}`},
			do: func(c *Client) error { _, err := c.Networks(ctx, "calico"); return err }, code: 500, msg: "plugin calico not found"},
		{name: "500 as plain text", call: "GET /_ping", fault: testengine.Fault{Status: 500, Body: "engine is shutting down\n"},
			do: func(c *Client) error { return c.Ping(ctx) }, code: 500, msg: "engine is shutting down"},
		{name: "503 empty body", call: "GET /containers/json", fault: testengine.Fault{Status: 503},
			do: func(c *Client) error { _, err := c.ContainersOnNetwork(ctx, "x"); return err }, code: 503, msg: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testengine.Start(t, testengine.Docker2010)
			id := e.AddNetwork(testengine.Network{Name: "busy", Driver: "calico"})
			e.AddContainer(testengine.Container{ID: "c1", Endpoints: map[string]string{id: "ep1"}})
			if tc.call != "" {
				e.SetFault(tc.call, tc.fault)
			}
			err := tc.do(newClient(t, e))
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("error %v (%T), want a StatusError", err, err)
			}
			if se.Code != tc.code || !strings.Contains(se.Message, tc.msg) || IsNotFound(err) != tc.notFound {
				t.Fatalf("got %d %q (not found %v), want %d containing %q (not found %v)", se.Code, se.Message, IsNotFound(err), tc.code, tc.msg, tc.notFound)
			}
			if !strings.HasPrefix(err.Error(), "docker: ") {
				t.Fatalf("error %q does not say it came from Docker", err)
			}
		})
	}
}

// A dockerd that is not there: the error names the call and the socket's
// failure, at once.
func TestDeadSocket(t *testing.T) {
	e := testengine.Start(t, testengine.Docker2010)
	c := newClient(t, e)
	e.Stop()
	start := time.Now()
	err := c.Ping(context.Background())
	if err == nil {
		t.Fatal("ping of a stopped engine succeeded")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("error %v does not carry the socket's failure", err)
	}
	if !strings.Contains(err.Error(), "docker API GET /_ping") {
		t.Fatalf("error %q does not name the call", err)
	}
	if IsNotFound(err) {
		t.Fatal("a dead socket taken for a 404")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s", d)
	}
}

// A dockerd that hangs: the call gives up at the client's timeout, or
// sooner when the caller's context ends.
func TestSlowAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		ctx     time.Duration
	}{
		{"client timeout", 200 * time.Millisecond, time.Minute},
		{"caller's deadline", time.Minute, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testengine.Start(t, testengine.Docker285)
			e.SetFault("GET /networks", testengine.Fault{Delay: 30 * time.Second})
			c := newClient(t, e)
			c.timeout = tc.timeout
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctx)
			defer cancel()
			start := time.Now()
			_, err := c.Networks(ctx, "calico")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("error %v, want a deadline exceeded", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("gave up after %s", d)
			}
			// Once the engine answers again, so does the client.
			e.SetFault("GET /networks", testengine.Fault{})
			if _, err := c.Networks(context.Background(), "calico"); err != nil {
				t.Fatalf("after the engine recovered: %v", err)
			}
		})
	}
}

func lastRequest(t *testing.T, e *testengine.Engine, path string) testengine.Request {
	t.Helper()
	rs := e.Requests()
	for i := len(rs) - 1; i >= 0; i-- {
		if path == "" || rs[i].Path == path {
			return rs[i]
		}
	}
	t.Fatalf("no request to %q", path)
	return testengine.Request{}
}

func mustQuery(t *testing.T, raw string) url.Values {
	t.Helper()
	q, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
