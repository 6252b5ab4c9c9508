// Package engineapi is the few Docker Engine API calls the daemon makes,
// over the engine's unix socket. It is only ever used outside plugin
// handlers: Docker may be waiting on a handler, so a handler that waited on
// Docker could deadlock.
package engineapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one Docker engine.
type Client struct {
	http    *http.Client
	timeout time.Duration
}

// New returns a client for host ("unix:///var/run/docker.sock" or a path).
func New(host string) (*Client, error) {
	path := strings.TrimPrefix(host, "unix://")
	if path == "" || strings.Contains(path, "://") {
		return nil, fmt.Errorf("docker host %q: only unix sockets are supported (unix:///var/run/docker.sock)", host)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}
	return &Client{http: &http.Client{Transport: tr}, timeout: 20 * time.Second}, nil
}

// IPAMConfig is one subnet of a network.
type IPAMConfig struct {
	Subnet  string `json:"Subnet,omitempty"`
	IPRange string `json:"IPRange,omitempty"`
	Gateway string `json:"Gateway,omitempty"`
}

// Network is the part of Docker's network document we use.
type Network struct {
	ID         string            `json:"Id"`
	Name       string            `json:"Name"`
	Driver     string            `json:"Driver"`
	EnableIPv6 bool              `json:"EnableIPv6"`
	Options    map[string]string `json:"Options"`
	Labels     map[string]string `json:"Labels"`
	IPAM       struct {
		Driver  string            `json:"Driver"`
		Config  []IPAMConfig      `json:"Config"`
		Options map[string]string `json:"Options"`
	} `json:"IPAM"`
	Containers map[string]json.RawMessage `json:"Containers"`
}

// CreateNetwork is the body of POST /networks/create.
type CreateNetwork struct {
	Name           string            `json:"Name"`
	CheckDuplicate bool              `json:"CheckDuplicate"`
	Driver         string            `json:"Driver"`
	EnableIPv6     bool              `json:"EnableIPv6"`
	IPAM           IPAM              `json:"IPAM"`
	Options        map[string]string `json:"Options,omitempty"`
	Labels         map[string]string `json:"Labels,omitempty"`
}

// IPAM is the IPAM part of CreateNetwork.
type IPAM struct {
	Driver  string            `json:"Driver"`
	Config  []IPAMConfig      `json:"Config,omitempty"`
	Options map[string]string `json:"Options,omitempty"`
}

// Container is the part of Docker's container document we use.
type Container struct {
	ID     string `json:"Id"`
	Name   string `json:"Name"`
	Config struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	NetworkSettings struct {
		Networks map[string]struct { // by network name
			NetworkID  string `json:"NetworkID"`
			EndpointID string `json:"EndpointID"`
		} `json:"Networks"`
	} `json:"NetworkSettings"`
}

// StatusError is a non-2xx answer from Docker.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("docker: %d: %s", e.Code, e.Message) }

// IsNotFound reports a 404.
func IsNotFound(err error) bool {
	se, ok := err.(*StatusError)
	return ok && se.Code == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("docker API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode/100 != 2 {
		return statusError(resp.StatusCode, data)
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

func statusError(code int, data []byte) error {
	var m struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(data, &m)
	if m.Message == "" {
		m.Message = strings.TrimSpace(string(data))
	}
	return &StatusError{Code: code, Message: m.Message}
}

// Ping checks that the engine answers.
func (c *Client) Ping(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/_ping", nil, nil)
}

// Network inspects one network by ID or name.
func (c *Client) Network(ctx context.Context, idOrName string) (*Network, error) {
	var n Network
	if err := c.do(ctx, http.MethodGet, "/networks/"+url.PathEscape(idOrName), nil, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// Networks lists networks using driver.
func (c *Client) Networks(ctx context.Context, driver string) ([]Network, error) {
	f, _ := json.Marshal(map[string][]string{"driver": {driver}})
	var ns []Network
	if err := c.do(ctx, http.MethodGet, "/networks?filters="+url.QueryEscape(string(f)), nil, &ns); err != nil {
		return nil, err
	}
	// The driver filter matches substrings on some engines: keep exact ones.
	out := ns[:0]
	for _, n := range ns {
		if n.Driver == driver {
			out = append(out, n)
		}
	}
	return out, nil
}

// CreateNetwork creates a network and returns its ID.
func (c *Client) CreateNetwork(ctx context.Context, req CreateNetwork) (string, error) {
	var out struct {
		ID string `json:"Id"`
	}
	if err := c.do(ctx, http.MethodPost, "/networks/create", req, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// RemoveNetwork deletes a network.
func (c *Client) RemoveNetwork(ctx context.Context, idOrName string) error {
	return c.do(ctx, http.MethodDelete, "/networks/"+url.PathEscape(idOrName), nil, nil)
}

// ContainerSummary is one entry of the container list.
type ContainerSummary struct {
	ID              string            `json:"Id"`
	Labels          map[string]string `json:"Labels"`
	NetworkSettings struct {
		Networks map[string]struct {
			NetworkID  string `json:"NetworkID"`
			EndpointID string `json:"EndpointID"`
		} `json:"Networks"`
	} `json:"NetworkSettings"`
}

// ContainersOnNetwork lists the containers (running or not) attached to a
// network.
func (c *Client) ContainersOnNetwork(ctx context.Context, networkID string) ([]ContainerSummary, error) {
	f, _ := json.Marshal(map[string][]string{"network": {networkID}})
	var out []ContainerSummary
	if err := c.do(ctx, http.MethodGet, "/containers/json?all=1&filters="+url.QueryEscape(string(f)), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Container inspects one container.
func (c *Client) Container(ctx context.Context, id string) (*Container, error) {
	var ct Container
	if err := c.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/json", nil, &ct); err != nil {
		return nil, err
	}
	return &ct, nil
}

// Connect is a container attached to a network, from the engine's events.
type Connect struct {
	NetworkID, Network, Driver, Container string
	Time                                  time.Time
}

// NetworkConnects follows the engine's network connect events from since
// on (the engine replays the recent ones it keeps), calling opened once
// the engine accepted the stream and fn for each event, until ctx ends or
// the stream breaks; the error says which.
func (c *Client) NetworkConnects(ctx context.Context, since time.Time, opened func(), fn func(Connect)) error {
	f, _ := json.Marshal(map[string][]string{"type": {"network"}, "event": {"connect"}})
	path := "/events?filters=" + url.QueryEscape(string(f))
	if !since.IsZero() {
		path += "&since=" + strconv.FormatInt(since.Unix(), 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("docker API events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return statusError(resp.StatusCode, data)
	}
	opened()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type, Action string
			Actor        struct {
				ID         string            `json:"ID"`
				Attributes map[string]string `json:"Attributes"`
			} `json:"Actor"`
			TimeNano int64 `json:"timeNano"`
		}
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("docker API events: the stream ended: %w", err)
		}
		if ev.Type == "network" && ev.Action == "connect" && ev.Actor.Attributes["container"] != "" {
			fn(Connect{NetworkID: ev.Actor.ID, Network: ev.Actor.Attributes["name"], Driver: ev.Actor.Attributes["type"],
				Container: ev.Actor.Attributes["container"], Time: time.Unix(0, ev.TimeNano)})
		}
	}
}
