package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// ready is `calico-libnetwork ready [--metrics-addr ADDR] [--wait D]`: it
// asks the running daemon's /readyz until it says ready (exit 0) or the
// wait is over (exit 1, printing the failing checks). The systemd unit
// runs it before Docker starts.
func ready(args []string) int {
	fs := flag.NewFlagSet("calico-libnetwork ready", flag.ContinueOnError)
	addr := fs.String("metrics-addr", envOr("CALICO_METRICS_ADDR", "127.0.0.1:9091"), "the daemon's --metrics-addr")
	wait := fs.Duration("wait", 90*time.Second, "how long to wait for ready")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	if *addr == "" || strings.EqualFold(*addr, "off") {
		// No /readyz: the sockets being there is all that can be told.
		dir := envOr("CALICO_PLUGIN_DIR", "/run/docker/plugins")
		if err := waitSockets(ctx, dir); err != nil {
			fmt.Fprintf(os.Stderr, "calico-libnetwork ready: %v after %s\n", err, *wait)
			return 1
		}
		fmt.Println("sockets serving in", dir, "(no /readyz: --metrics-addr is off)")
		return 0
	}
	r, err := waitReady(ctx, "http://"+*addr+"/readyz", time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "calico-libnetwork ready: not ready after %s: %v\n", *wait, err)
		return 1
	}
	fmt.Println("ready:", describe(r))
	return 0
}

// waitReady polls url until it answers 200 with a ready Readiness.
func waitReady(ctx context.Context, url string, every time.Duration) (api.Readiness, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	var last api.Readiness
	var why error
	for {
		r, err := askReady(ctx, c, url)
		switch {
		case err == nil && r.Ready:
			return r, nil
		case err == nil:
			last, why = r, fmt.Errorf("%s", describe(r))
		case ctx.Err() == nil || why == nil:
			// A request cut by the deadline says less than the last
			// answer, which names the failing checks: keep that one.
			last, why = r, err
		}
		select {
		case <-ctx.Done():
			return last, why
		case <-time.After(every):
		}
	}
}

func askReady(ctx context.Context, c *http.Client, url string) (api.Readiness, error) {
	var r api.Readiness
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return r, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s answered %d: %.200s", url, resp.StatusCode, b)
	}
	return r, nil
}

// describe lists the checks: "datastore ok, sockets FAILING (...)".
func describe(r api.Readiness) string {
	var parts []string
	for _, c := range r.Checks {
		if c.OK {
			parts = append(parts, c.Name+" ok")
		} else {
			parts = append(parts, c.Name+" FAILING ("+c.Detail+")")
		}
	}
	return strings.Join(parts, ", ")
}

// envOr reads k as the daemon does: empty is the default.
func envOr(k, dflt string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return dflt
}

// waitSockets waits until both plugin sockets exist in dir.
func waitSockets(ctx context.Context, dir string) error {
	for {
		missing := ""
		for _, name := range []string{api.NetworkSocket, api.IPAMSocket} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode()&os.ModeSocket == 0 {
				missing = filepath.Join(dir, name)
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no socket %s", missing)
		case <-time.After(time.Second):
		}
	}
}
