package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"github.com/docker/go-plugins-helpers/sdk"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// errorBody is Docker's error reply. A non-200 status with {"Err": ...} is
// understood by both the network and the IPAM plugin clients.
type errorBody struct {
	Err string
}

const maxBody = 1 << 20

// route registers one plugin call. It decodes the request itself (the
// helpers' decoder answers bad JSON with plain text), recovers from panics
// and always answers errors as {"Err": ...}.
func route[Req any, Resp any](mux *http.ServeMux, log *slog.Logger, path string, fn func(*Req) (Resp, error)) {
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				log.Error("handler panicked", "call", path, "panic", p)
				reply(w, http.StatusInternalServerError, errorBody{Err: fmt.Sprintf("internal error in %s: %v", path, p)})
			}
		}()
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			reply(w, http.StatusBadRequest, errorBody{Err: fmt.Sprintf("read request to %s: %v", path, err)})
			return
		}
		if len(body) > maxBody {
			// Read the rest so the client gets this answer, not a reset.
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64*maxBody))
			reply(w, http.StatusRequestEntityTooLarge, errorBody{Err: fmt.Sprintf("request to %s is larger than %d bytes", path, maxBody)})
			return
		}
		req := new(Req)
		if len(bytes.TrimSpace(body)) > 0 {
			if err := json.Unmarshal(body, req); err != nil {
				log.Warn("bad request", "call", path, "err", err)
				reply(w, http.StatusBadRequest, errorBody{Err: fmt.Sprintf("invalid JSON in request to %s: %v", path, err)})
				return
			}
		}
		resp, err := fn(req)
		if err != nil {
			log.Warn("call failed", "call", path, "err", err, "took", time.Since(start))
			reply(w, http.StatusInternalServerError, errorBody{Err: err.Error()})
			return
		}
		log.Debug("call", "call", path, "took", time.Since(start))
		reply(w, http.StatusOK, resp)
	})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", sdk.DefaultContentTypeV1_1)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type empty struct{}

func noReply[Req any](fn func(*Req) error) func(*Req) (empty, error) {
	return func(r *Req) (empty, error) { return empty{}, fn(r) }
}

func noArgs[Resp any](fn func() (Resp, error)) func(*empty) (Resp, error) {
	return func(*empty) (Resp, error) { return fn() }
}

func activate(mux *http.ServeMux, implements string) {
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string][]string{"Implements": {implements}})
	})
}

// versionInfo answers /Calico.Version, which calicoctl asks.
func versionInfo(mux *http.ServeMux) {
	mux.HandleFunc("/Calico.Version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, api.VersionInfo{Version: api.Version, GitCommit: api.BuildCommit()})
	})
}

func statusInfo(mux *http.ServeMux, status func() api.DaemonStatus) {
	mux.HandleFunc("/Calico.Status", func(w http.ResponseWriter, r *http.Request) {
		if status == nil {
			reply(w, http.StatusNotFound, errorBody{Err: "this daemon reports no status"})
			return
		}
		reply(w, http.StatusOK, status())
	})
}

// NetworkMux serves the NetworkDriver protocol for d, plus the daemon's
// version and status (status may be nil).
func NetworkMux(d network.Driver, status func() api.DaemonStatus, log *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	activate(mux, "NetworkDriver")
	versionInfo(mux)
	statusInfo(mux, status)
	if _, ok := d.(gwAllocChecker); !ok {
		route(mux, log, "/NetworkDriver.GetCapabilities", noArgs(d.GetCapabilities))
	}
	route(mux, log, "/NetworkDriver.CreateNetwork", noReply(d.CreateNetwork))
	route(mux, log, "/NetworkDriver.AllocateNetwork", d.AllocateNetwork)
	route(mux, log, "/NetworkDriver.DeleteNetwork", noReply(d.DeleteNetwork))
	route(mux, log, "/NetworkDriver.FreeNetwork", noReply(d.FreeNetwork))
	route(mux, log, "/NetworkDriver.CreateEndpoint", d.CreateEndpoint)
	route(mux, log, "/NetworkDriver.DeleteEndpoint", noReply(d.DeleteEndpoint))
	route(mux, log, "/NetworkDriver.EndpointOperInfo", d.EndpointInfo)
	route(mux, log, "/NetworkDriver.Join", d.Join)
	route(mux, log, "/NetworkDriver.Leave", noReply(d.Leave))
	route(mux, log, "/NetworkDriver.DiscoverNew", noReply(d.DiscoverNew))
	route(mux, log, "/NetworkDriver.DiscoverDelete", noReply(d.DiscoverDelete))
	route(mux, log, "/NetworkDriver.ProgramExternalConnectivity", noReply(d.ProgramExternalConnectivity))
	route(mux, log, "/NetworkDriver.RevokeExternalConnectivity", noReply(d.RevokeExternalConnectivity))
	if g, ok := d.(gwAllocChecker); ok {
		// Docker 28's additions, which the helpers' Driver does not know.
		route(mux, log, "/NetworkDriver.GetCapabilities", noArgs(g.Capabilities))
		route(mux, log, "/NetworkDriver.GwAllocCheck", g.GwAllocCheck)
	}
	return mux
}

// gwAllocChecker is a driver that answers Docker 28's GwAllocCheck (and
// says so in its capabilities).
type gwAllocChecker interface {
	Capabilities() (*api.Capabilities, error)
	GwAllocCheck(*api.GwAllocCheckRequest) (*api.GwAllocCheckResponse, error)
}

// IPAMMux serves the IpamDriver protocol for d.
func IPAMMux(d ipam.Ipam, log *slog.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	activate(mux, "IpamDriver")
	route(mux, log, "/IpamDriver.GetCapabilities", noArgs(d.GetCapabilities))
	route(mux, log, "/IpamDriver.GetDefaultAddressSpaces", noArgs(d.GetDefaultAddressSpaces))
	route(mux, log, "/IpamDriver.RequestPool", d.RequestPool)
	route(mux, log, "/IpamDriver.ReleasePool", noReply(d.ReleasePool))
	route(mux, log, "/IpamDriver.RequestAddress", d.RequestAddress)
	route(mux, log, "/IpamDriver.ReleaseAddress", noReply(d.ReleaseAddress))
	return mux
}

// listenUnix listens on path, replacing a stale socket file left by a crash
// but refusing to steal the socket of a daemon that still answers.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create plugin dir: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is served by another running daemon: stop it first or use another --plugin-dir", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Whoever can connect can create networks and endpoints: Docker (root)
	// only.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("make %s private: %w", path, err)
	}
	return l, nil
}
