// Package testengine is a stand-in Docker engine for tests of the code that
// calls the Engine API (docker/engineapi and its users): an HTTP server on a
// unix socket in the test's temporary directory, keeping networks and
// containers in memory and answering the calls that client makes as Docker
// 20.10 (API 1.41) and 28.5 (API 1.51) do: the same status codes, error
// messages and document fields, each version's own (testengine_test.go
// checks this against the answers recorded from both engines in
// docker/engineapi/testdata). It is for unit tests, where no dockerd runs;
// the e2e suites run the real engines.
//
// Faults can be set per call (a status and body, or a delay) to test what
// the client and its users do when Docker fails or hangs.
package testengine

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version selects whose documents the engine answers with.
type Version string

const (
	Docker2010 Version = "20.10" // Debian's docker.io on this machine, API 1.41
	Docker285  Version = "28.5"  // Debian forky's docker.io, API 1.51
)

// APIVersion is the Api-Version header the engine sends.
func (v Version) APIVersion() string {
	if v == Docker285 {
		return "1.51"
	}
	return "1.41"
}

// Subnet is one IPAM config entry of a network.
type Subnet struct{ Subnet, IPRange, Gateway string }

// Network is a network the engine holds.
type Network struct {
	ID, Name, Driver, IPAMDriver string
	EnableIPv6                   bool
	Options, Labels, IPAMOptions map[string]string
	Subnets                      []Subnet
}

// Container is a container attached to networks (network ID -> endpoint ID).
type Container struct {
	ID, Name  string
	Labels    map[string]string
	Endpoints map[string]string
}

// Fault replaces one call's answer. A zero Status answers as usual after
// Delay.
type Fault struct {
	Status int
	Body   string
	Delay  time.Duration
}

// Request is a call the engine received.
type Request struct {
	Method, Path, Query, ContentType string
	Body                             []byte
}

// Engine is the stand-in engine.
type Engine struct {
	Version Version
	Socket  string // path of the unix socket

	onCreate, onRemove func(Network) error // SetPlugin
	looseDriverFilter  bool                // SetLooseDriverFilter

	srv        *http.Server
	l          *net.UnixListener
	done       chan struct{} // closed when Serve has returned
	mu         sync.Mutex
	networks   map[string]*Network
	containers map[string]*Container
	faults     map[string]Fault // "METHOD /path" (path without query)
	requests   []Request
	events     []event       // what GET /events streams
	logged     chan struct{} // closed (and replaced) when an event is logged
}

// Start serves an engine of version v until the test ends.
func Start(t testing.TB, v Version) *Engine {
	t.Helper()
	// Not t.TempDir(): its path can pass the 108-byte limit of a unix
	// socket's.
	dir, err := os.MkdirTemp("", "testengine")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e := &Engine{Version: v, Socket: filepath.Join(dir, "docker.sock"),
		networks: map[string]*Network{}, containers: map[string]*Container{}, faults: map[string]Fault{},
		logged: make(chan struct{})}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: e.Socket, Net: "unix"})
	if err != nil {
		t.Fatalf("listen on %s: %v", e.Socket, err)
	}
	// A stopped engine leaves its socket behind, as a dockerd that died
	// does: connecting is then refused.
	l.SetUnlinkOnClose(false)
	e.l = l
	e.srv = &http.Server{Handler: http.HandlerFunc(e.serve), ReadHeaderTimeout: 5 * time.Second}
	e.done = make(chan struct{})
	go func() { defer close(e.done); _ = e.srv.Serve(l) }()
	t.Cleanup(e.Stop)
	return e
}

// Host is the engine's address as the daemon's --docker-host takes it.
func (e *Engine) Host() string { return "unix://" + e.Socket }

// Stop closes the socket and every connection at once: calls then fail as
// against a dead dockerd. It may be called more than once.
func (e *Engine) Stop() {
	_ = e.srv.Close()
	_ = e.l.Close() // Serve may not have taken it yet
	<-e.done
}

// SetPlugin has create and remove called as dockerd calls the network
// plugin (with the engine locked): an error fails the call with a 500 naming
// it, and nothing changes.
func (e *Engine) SetPlugin(create, remove func(Network) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onCreate, e.onRemove = create, remove
}

// SetLooseDriverFilter matches the network list's driver filter as a
// substring of the driver's name, as the client allows some engines to;
// 20.10 and 28.5 match it exactly (recorded).
func (e *Engine) SetLooseDriverFilter() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.looseDriverFilter = true
}

// SetFault makes "METHOD /path" answer f until cleared (a zero Fault clears).
func (e *Engine) SetFault(call string, f Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f == (Fault{}) {
		delete(e.faults, call)
		return
	}
	e.faults[call] = f
}

// Requests returns the calls received so far.
func (e *Engine) Requests() []Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Request(nil), e.requests...)
}

// AddNetwork creates (or, with an ID it holds, replaces) a network without
// calling the plugin, and returns its ID.
func (e *Engine) AddNetwork(n Network) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n.ID == "" {
		n.ID = newID()
	}
	e.networks[n.ID] = &n
	return n.ID
}

// AddContainer attaches a container, and logs a network connect event for
// each of its networks.
func (e *Engine) AddContainer(c Container) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.containers[c.ID] = &c
	e.logConnects(&c)
}

// Networks returns the networks by name.
func (e *Engine) Networks() map[string]Network {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]Network{}
	for _, n := range e.networks {
		out[n.Name] = *n
	}
	return out
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e *Engine) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	path := r.URL.Path
	// Docker accepts a version prefix (/v1.41/...); the client sends none.
	e.mu.Lock()
	e.requests = append(e.requests, Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		ContentType: r.Header.Get("Content-Type"), Body: body})
	f, faulty := e.faults[r.Method+" "+path]
	e.mu.Unlock()
	if faulty {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
		if f.Status != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.Status)
			_, _ = io.WriteString(w, f.Body)
			return
		}
	}
	w.Header().Set("Api-Version", e.Version.APIVersion())
	w.Header().Set("Server", "Docker/"+string(e.Version)+" (linux)")
	w.Header().Set("Ostype", "linux")
	switch {
	case r.Method == http.MethodGet && path == "/_ping":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache, no-store, must-revalidate")
		_, _ = io.WriteString(w, "OK")
	case r.Method == http.MethodGet && path == "/networks":
		e.listNetworks(w, r)
	case r.Method == http.MethodPost && path == "/networks/create":
		e.createNetwork(w, body)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/networks/"):
		e.inspectNetwork(w, strings.TrimPrefix(path, "/networks/"))
	case r.Method == http.MethodDelete && strings.HasPrefix(path, "/networks/"):
		e.removeNetwork(w, strings.TrimPrefix(path, "/networks/"))
	case r.Method == http.MethodGet && path == "/events":
		e.streamEvents(w, r)
	case r.Method == http.MethodGet && path == "/containers/json":
		e.listContainers(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/containers/") && strings.HasSuffix(path, "/json"):
		e.inspectContainer(w, strings.TrimSuffix(strings.TrimPrefix(path, "/containers/"), "/json"))
	default:
		// What dockerd answers for a route it does not have.
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "page not found"})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func errorJSON(w http.ResponseWriter, code int, format string, a ...any) {
	writeJSON(w, code, map[string]string{"message": fmt.Sprintf(format, a...)})
}

// filters decodes Docker's filters query parameter ({"key":["v",...]}, or
// the older {"key":{"v":true}}).
func filters(r *http.Request) (map[string][]string, error) {
	raw := r.URL.Query().Get("filters")
	if raw == "" {
		return nil, nil
	}
	var f map[string][]string
	if err := json.Unmarshal([]byte(raw), &f); err == nil {
		return f, nil
	}
	var old map[string]map[string]bool
	if err := json.Unmarshal([]byte(raw), &old); err != nil {
		return nil, err
	}
	f = map[string][]string{}
	for k, vs := range old {
		for v := range vs {
			f[k] = append(f[k], v)
		}
	}
	return f, nil
}

// find looks a network up as dockerd does: full ID, name, then ID prefix.
func (e *Engine) find(idOrName string) *Network {
	if n, ok := e.networks[idOrName]; ok {
		return n
	}
	for _, n := range e.networks {
		if n.Name == idOrName {
			return n
		}
	}
	for id, n := range e.networks {
		if idOrName != "" && strings.HasPrefix(id, idOrName) {
			return n
		}
	}
	return nil
}

func (e *Engine) sortedNetworks() []*Network {
	out := make([]*Network, 0, len(e.networks))
	for _, n := range e.networks {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (e *Engine) listNetworks(w http.ResponseWriter, r *http.Request) {
	f, err := filters(r)
	if err != nil {
		errorJSON(w, http.StatusBadRequest, "invalid filter: %v", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []map[string]any{}
	for _, n := range e.sortedNetworks() {
		if ds := f["driver"]; len(ds) > 0 && !matchAny(n.Driver, ds, e.looseDriverFilter) {
			continue
		}
		out = append(out, e.networkDoc(n, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func matchAny(s string, subs []string, loose bool) bool {
	for _, sub := range subs {
		if s == sub || (loose && strings.Contains(s, sub)) {
			return true
		}
	}
	return false
}

// networkDoc is Docker's network document; a list leaves Containers empty.
func (e *Engine) networkDoc(n *Network, withContainers bool) map[string]any {
	config := []map[string]string{}
	for _, s := range n.Subnets {
		c := map[string]string{"Subnet": s.Subnet}
		if s.IPRange != "" {
			c["IPRange"] = s.IPRange
		}
		if s.Gateway != "" {
			c["Gateway"] = s.Gateway
		}
		config = append(config, c)
	}
	containers := map[string]any{}
	if withContainers {
		for _, c := range e.containers {
			if ep, ok := c.Endpoints[n.ID]; ok {
				containers[c.ID] = map[string]string{"Name": c.Name, "EndpointID": ep, "MacAddress": "ee:ee:ee:ee:ee:ee",
					"IPv4Address": "", "IPv6Address": ""}
			}
		}
	}
	orEmpty := func(m map[string]string) map[string]string {
		if m == nil {
			return map[string]string{}
		}
		return m
	}
	ipamOpts := n.IPAMOptions // null when none
	doc := map[string]any{
		"Name": n.Name, "Id": n.ID, "Created": "2026-12-01T21:39:00.000000000Z", "Scope": "local", "Driver": n.Driver,
		"EnableIPv6": n.EnableIPv6,
		"IPAM":       map[string]any{"Driver": n.IPAMDriver, "Options": ipamOpts, "Config": config},
		"Internal":   false, "Attachable": false, "Ingress": false, "ConfigFrom": map[string]string{"Network": ""},
		"ConfigOnly": false, "Containers": containers, "Options": orEmpty(n.Options), "Labels": orEmpty(n.Labels),
	}
	if e.Version == Docker285 {
		doc["EnableIPv4"] = true
	}
	return doc
}

func (e *Engine) inspectNetwork(w http.ResponseWriter, idOrName string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.find(idOrName)
	if n == nil {
		errorJSON(w, http.StatusNotFound, "network %s not found", idOrName)
		return
	}
	writeJSON(w, http.StatusOK, e.networkDoc(n, true))
}

func (e *Engine) createNetwork(w http.ResponseWriter, body []byte) {
	var req struct {
		Name       string
		Driver     string
		EnableIPv6 bool
		IPAM       struct {
			Driver  string
			Config  []struct{ Subnet, IPRange, Gateway string }
			Options map[string]string
		}
		Options, Labels map[string]string
	}
	if err := json.Unmarshal(body, &req); err != nil {
		errorJSON(w, http.StatusBadRequest, "invalid JSON: %v", err)
		return
	}
	if req.Name == "" {
		errorJSON(w, http.StatusBadRequest, "invalid name: name is empty")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.networks {
		if n.Name == req.Name {
			errorJSON(w, http.StatusConflict, "network with name %s already exists", req.Name)
			return
		}
	}
	if req.Driver == "" {
		req.Driver = "bridge"
	}
	if req.IPAM.Driver == "" {
		req.IPAM.Driver = "default"
	}
	n := Network{ID: newID(), Name: req.Name, Driver: req.Driver, IPAMDriver: req.IPAM.Driver, EnableIPv6: req.EnableIPv6,
		Options: req.Options, Labels: req.Labels, IPAMOptions: req.IPAM.Options}
	for _, c := range req.IPAM.Config {
		n.Subnets = append(n.Subnets, Subnet{Subnet: c.Subnet, IPRange: c.IPRange, Gateway: c.Gateway})
	}
	if e.onCreate != nil {
		if err := e.onCreate(n); err != nil {
			errorJSON(w, http.StatusInternalServerError, "failed to create network %s: %v", req.Name, err)
			return
		}
	}
	e.networks[n.ID] = &n
	writeJSON(w, http.StatusCreated, map[string]string{"Id": n.ID, "Warning": ""})
}

func (e *Engine) removeNetwork(w http.ResponseWriter, idOrName string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.find(idOrName)
	if n == nil {
		errorJSON(w, http.StatusNotFound, "network %s not found", idOrName)
		return
	}
	for _, c := range e.containers {
		if _, ok := c.Endpoints[n.ID]; ok {
			if e.Version == Docker285 {
				errorJSON(w, http.StatusForbidden, "error while removing network: network %s has active endpoints (name:%q id:%q)", n.Name, c.Name, c.Endpoints[n.ID][:min(12, len(c.Endpoints[n.ID]))])
			} else {
				errorJSON(w, http.StatusForbidden, "error while removing network: network %s id %s has active endpoints", n.Name, n.ID)
			}
			return
		}
	}
	if e.onRemove != nil {
		if err := e.onRemove(*n); err != nil {
			errorJSON(w, http.StatusInternalServerError, "error while removing network: %v", err)
			return
		}
	}
	delete(e.networks, n.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (e *Engine) listContainers(w http.ResponseWriter, r *http.Request) {
	f, err := filters(r)
	if err != nil {
		errorJSON(w, http.StatusBadRequest, "invalid filter: %v", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []map[string]any{}
	ids := make([]string, 0, len(e.containers))
	for id := range e.containers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := e.containers[id]
		nets := map[string]any{}
		keep := len(f["network"]) == 0
		for netID, ep := range c.Endpoints {
			name := netID
			if n := e.networks[netID]; n != nil {
				name = n.Name
			}
			for _, want := range f["network"] {
				keep = keep || want == netID || want == name
			}
			att := map[string]any{"IPAMConfig": nil, "Links": nil, "Aliases": nil, "NetworkID": netID, "EndpointID": ep,
				"Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
				"GlobalIPv6PrefixLen": 0, "MacAddress": "ee:ee:ee:ee:ee:ee", "DriverOpts": nil}
			if e.Version == Docker285 {
				att["GwPriority"], att["DNSNames"] = 0, nil
			}
			nets[name] = att
		}
		if !keep {
			continue
		}
		out = append(out, map[string]any{"Id": c.ID, "Names": []string{"/" + c.Name}, "Image": "busybox", "ImageID": "sha256:" + newID(), "Command": "sleep 1d",
			"Created": 1764625140, "Ports": []any{}, "Labels": orEmptyLabels(c.Labels), "State": "running", "Status": "Up 1 second",
			"HostConfig": map[string]string{"NetworkMode": "default"}, "NetworkSettings": map[string]any{"Networks": nets},
			"Mounts": []any{}})
	}
	writeJSON(w, http.StatusOK, out)
}

func orEmptyLabels(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (e *Engine) inspectContainer(w http.ResponseWriter, id string) {
	id, _ = url.PathUnescape(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.containers[id]
	if !ok {
		for cid, cc := range e.containers {
			if id != "" && (strings.HasPrefix(cid, id) || cc.Name == id) {
				c, ok = cc, true
				break
			}
		}
	}
	if !ok {
		errorJSON(w, http.StatusNotFound, "No such container: %s", id)
		return
	}
	nets := map[string]any{}
	for netID, ep := range c.Endpoints {
		name := netID
		if n := e.networks[netID]; n != nil {
			name = n.Name
		}
		nets[name] = map[string]any{"NetworkID": netID, "EndpointID": ep}
	}
	writeJSON(w, http.StatusOK, map[string]any{"Id": c.ID, "Name": "/" + c.Name, "Created": "2026-12-01T21:39:00.000000000Z",
		"State":           map[string]any{"Status": "running", "Running": true, "Pid": 4242},
		"Config":          map[string]any{"Hostname": c.ID[:min(12, len(c.ID))], "Image": "busybox", "Labels": orEmptyLabels(c.Labels)},
		"NetworkSettings": map[string]any{"Networks": nets}})
}

// RemoveContainer detaches and removes a container.
func (e *Engine) RemoveContainer(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.containers, id)
}
