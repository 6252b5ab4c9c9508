package engineapi

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// recording is what a real dockerd answered, recorded by testdata/record.sh.
type recording struct {
	Engine string
	Calls  map[string]struct {
		Method, Path, ContentType, Body string
		Status                          int
	}
}

func loadRecording(t *testing.T, version string) recording {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "docker-"+version+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r recording
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("testdata/docker-%s.json: %v", version, err)
	}
	return r
}

// replay answers every request with one recorded answer and keeps the
// request.
type replay struct {
	mu     sync.Mutex
	answer struct {
		status      int
		contentType string
		body        string
	}
	got *http.Request
}

func (rp *replay) set(status int, contentType, body string) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.answer.status, rp.answer.contentType, rp.answer.body = status, contentType, body
}

func (rp *replay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.got = r
	if rp.answer.contentType != "" {
		w.Header().Set("Content-Type", rp.answer.contentType)
	}
	w.WriteHeader(rp.answer.status)
	_, _ = io.WriteString(w, rp.answer.body)
}

func serveReplay(t *testing.T) (*replay, *Client) {
	t.Helper()
	dir, err := os.MkdirTemp("", "replay")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rp := &replay{}
	srv := &http.Server{Handler: rp}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	c, err := New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return rp, c
}

// recordedField reads one value out of a recorded JSON body.
func recordedField(t *testing.T, body string, path ...string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("recorded body: %v", err)
	}
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			v = x[0]
			if m, ok := v.(map[string]any); ok {
				v = m[p]
			}
		}
	}
	s, _ := v.(string)
	return s
}

// The client against what Docker 20.10 and 28.5 really answered: each call
// sends what the engine was sent, and reads from the answer what the
// daemon relies on.
func TestRecordedAnswers(t *testing.T) {
	for _, v := range []string{"20.10", "28.5"} {
		rec := loadRecording(t, v)
		t.Run(v, func(t *testing.T) {
			rp, c := serveReplay(t)
			r := &replayRun{t: t, ctx: context.Background(), rec: rec, rp: rp, c: c}
			id := r.createAndList()
			cid, endpointID := r.inspect(id)
			r.containers(id, cid, endpointID)
			r.errors()
		})
	}
}

// replayRun drives the client against one engine's recorded answers.
type replayRun struct {
	t   *testing.T
	ctx context.Context
	rec recording
	rp  *replay
	c   *Client
}

// call makes the replay answer what the engine answered to name.
func (r *replayRun) call(name string) (body string) {
	r.t.Helper()
	a, ok := r.rec.Calls[name]
	if !ok {
		r.t.Fatalf("no recorded %q", name)
	}
	r.rp.set(a.Status, a.ContentType, a.Body)
	return a.Body
}

// sent checks the client sent what the engine was sent.
func (r *replayRun) sent(method, path string) {
	r.t.Helper()
	r.rp.mu.Lock()
	defer r.rp.mu.Unlock()
	got := r.rp.got.Method + " " + r.rp.got.URL.Path
	if q, _ := url.QueryUnescape(r.rp.got.URL.RawQuery); q != "" {
		got += "?" + q
	}
	if got != method+" "+path {
		r.t.Fatalf("sent %q, want %q", got, method+" "+path)
	}
}

func (r *replayRun) createAndList() (id string) {
	t, ctx, c := r.t, r.ctx, r.c
	r.call("ping")
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	r.sent("GET", "/_ping")

	body := r.call("create")
	id, err := c.CreateNetwork(ctx, CreateNetwork{Name: "rec-net", CheckDuplicate: true, Driver: "bridge"})
	if err != nil || id == "" || id != recordedField(t, body, "Id") {
		t.Fatalf("CreateNetwork = %q, %v; recorded %s", id, err, body)
	}
	r.sent("POST", "/networks/create")

	for _, name := range []string{"list-bridge", "list-bri"} {
		body := r.call(name)
		ns, err := c.Networks(ctx, "bridge")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := 0
		if name == "list-bridge" {
			want = 1
		}
		if len(ns) != want {
			t.Fatalf("%s: %d networks from %s", name, len(ns), body)
		}
		if want == 1 && (ns[0].ID != id || ns[0].Name != "rec-net" || ns[0].Labels["org.projectcalico.shared"] != "true" ||
			ns[0].IPAM.Config[0].Subnet != "10.213.77.0/24" || ns[0].IPAM.Config[0].IPRange != "10.213.77.128/25") {
			t.Fatalf("listed %+v", ns[0])
		}
	}
	r.sent("GET", `/networks?filters={"driver":["bridge"]}`)
	return id
}

func (r *replayRun) inspect(id string) (cid, endpointID string) {
	t := r.t
	body := r.call("inspect-with")
	n, err := r.c.Network(r.ctx, "rec-net")
	if err != nil {
		t.Fatal(err)
	}
	r.sent("GET", "/networks/rec-net")
	if n.ID != id || n.Driver != "bridge" || n.Options["com.docker.network.bridge.name"] != "recbr0" || len(n.Containers) != 1 {
		t.Fatalf("Network = %+v from %s", n, body)
	}
	var att struct{ EndpointID, MacAddress string }
	for k, raw := range n.Containers {
		cid = k
		if err := json.Unmarshal(raw, &att); err != nil || att.EndpointID == "" || att.MacAddress == "" {
			t.Fatalf("attachment %s: %+v %v", raw, att, err)
		}
	}
	return cid, att.EndpointID
}

func (r *replayRun) containers(id, cid, endpointID string) {
	t, ctx, c := r.t, r.ctx, r.c
	r.call("containers")
	cs, err := c.ContainersOnNetwork(ctx, "rec-net")
	if err != nil {
		t.Fatal(err)
	}
	r.sent("GET", `/containers/json?all=1&filters={"network":["rec-net"]}`)
	if len(cs) != 1 || cs[0].ID != cid || cs[0].Labels["org.projectcalico.label.role"] != "web" ||
		cs[0].NetworkSettings.Networks["rec-net"].EndpointID != endpointID || cs[0].NetworkSettings.Networks["rec-net"].NetworkID != id {
		t.Fatalf("ContainersOnNetwork = %+v", cs)
	}

	r.call("container")
	ct, err := c.Container(ctx, cid)
	if err != nil || ct.ID != cid || ct.Name != "/rec-c" || ct.Config.Labels["other"] != "x" {
		t.Fatalf("Container = %+v, %v", ct, err)
	}
	r.sent("GET", "/containers/"+cid+"/json")

	r.call("rm")
	if err := c.RemoveNetwork(ctx, "rec-net"); err != nil {
		t.Fatalf("remove: %v", err)
	}
	r.sent("DELETE", "/networks/rec-net")
}

// errors: each recorded error answer reaches the caller as a StatusError
// with the engine's code and message.
func (r *replayRun) errors() {
	ctx, c := r.ctx, r.c
	for _, tc := range []struct {
		name     string
		do       func() error
		code     int
		notFound bool
		msg      string
	}{
		{"create-dup", func() error { _, err := c.CreateNetwork(ctx, CreateNetwork{Name: "rec-net"}); return err }, 409, false, "network with name rec-net already exists"},
		{"create-badipam", func() error { _, err := c.CreateNetwork(ctx, CreateNetwork{Name: "rec-bad"}); return err }, 404, true, `plugin "no-such-ipam" not found`},
		{"inspect-404", func() error { _, err := c.Network(ctx, "nope"); return err }, 404, true, "network nope not found"},
		{"container-404", func() error { _, err := c.Container(ctx, "nope"); return err }, 404, true, "No such container: nope"},
		{"rm-404", func() error { return c.RemoveNetwork(ctx, "nope") }, 404, true, "network nope not found"},
		{"rm-busy", func() error { return c.RemoveNetwork(ctx, "rec-net") }, 403, false, "has active endpoints"},
		{"unknown", func() error { return c.Ping(ctx) }, 404, true, "page not found"},
	} {
		r.call(tc.name)
		err := tc.do()
		se, ok := err.(*StatusError)
		if !ok || se.Code != tc.code || IsNotFound(err) != tc.notFound || !strings.Contains(se.Message, tc.msg) {
			r.t.Errorf("%s: %v, want %d %q", tc.name, err, tc.code, tc.msg)
		}
	}
}
