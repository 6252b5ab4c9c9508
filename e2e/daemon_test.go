//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonRestart: with containers running, the daemon is stopped
// (SIGTERM, or kill -9) and started again. The containers keep working
// while it is down and across the restart (a continuous ping loses nothing),
// their veths and routes are untouched, a container started after the
// restart reaches them, and all of them are then removed cleanly. After
// kill -9 the stale socket files are replaced.
func TestDaemonRestart(t *testing.T) {
	begin(t)
	for i, tc := range []struct {
		name string
		sig  syscall.Signal
	}{
		{"graceful SIGTERM", syscall.SIGTERM},
		{"kill -9", syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) { daemonRestart(t, i, tc.name, tc.sig) })
	}
}

// daemonRestart is one case of TestDaemonRestart: the daemon stopped with
// sig (the case's name) while containers of the network 192.168.23<i>.0/24
// run.
func daemonRestart(t *testing.T, i int, name string, sig syscall.Signal) {
	t.Cleanup(ensureDaemon(t))
	subnet := "192.168.23" + strconv.Itoa(i) + ".0/24"
	nw := newNetwork(t, "--subnet", subnet)
	a, b := runContainer(t, nw), runContainer(t, nw)
	epA, epB := a.endpoint(t, nw), b.endpoint(t, nw)
	a.mustPing(t, epB.IPAddress)
	b.mustPing(t, epA.IPAddress)
	// A ping that runs through the whole restart.
	docker(t, "exec", "-d", a.name, "sh", "-c", "ping -i 0.2 "+epB.IPAddress+" >/tmp/ping.log 2>&1")
	// And one from another network, which policy stops before,
	// during and after the restart: isolation never opens.
	outsider := runContainer(t, newNetwork(t))
	docker(t, "exec", "-d", outsider.name, "sh", "-c", "ping -i 0.2 "+epA.IPAddress+" >/tmp/ping.log 2>&1")

	oldPid := dmn.pid()
	stopDaemonChecked(t, sig)

	// While the daemon is down.
	a.mustPing(t, epB.IPAddress)
	b.mustPing(t, epA.IPAddress)
	assertHostSide(t, epA)
	assertHostSide(t, epB)
	time.Sleep(time.Second)

	if err := dmn.start(); err != nil {
		t.Fatalf("restart after %s: %v", name, err)
	}
	if dmn.pid() == oldPid {
		t.Fatalf("daemon pid %d unchanged: the restart did not happen", oldPid)
	}
	assertHostSide(t, epA)
	assertHostSide(t, epB)
	a.mustPing(t, epB.IPAddress)

	// A new container reaches the old ones, and they reach it.
	c := runContainer(t, nw)
	epC := c.endpoint(t, nw)
	if !inPrefix(t, epC.IPAddress, subnet) || epC.IPAddress == epA.IPAddress || epC.IPAddress == epB.IPAddress {
		t.Errorf("container started after the restart got %s (a=%s b=%s, subnet %s)", epC.IPAddress, epA.IPAddress, epB.IPAddress, subnet)
	}
	c.mustPing(t, epA.IPAddress)
	c.mustPing(t, epB.IPAddress)
	a.mustPing(t, epC.IPAddress)
	b.mustPing(t, epC.IPAddress)
	// Isolation held through the restart: a container on a network
	// created after it does not reach them.
	d := runContainer(t, newNetwork(t))
	d.mustNotPing(t, epA.IPAddress)

	// The continuous ping lost nothing (one in flight at the
	// interrupt is allowed).
	sent, recv := a.stopPing(t)
	t.Logf("continuous ping across the restart: %d sent, %d received", sent, recv)
	if sent < 5 || sent-recv > 1 {
		t.Errorf("continuous ping across the restart: %d sent, %d received:\n%s", sent, recv, a.exec(t, "cat", "/tmp/ping.log"))
	}
	oSent, oRecv := outsider.stopPing(t)
	t.Logf("ping from another network across the restart: %d sent, %d received", oSent, oRecv)
	if oSent < 5 || oRecv != 0 {
		t.Errorf("isolation across the restart: %d sent from another network, %d answered (want 0)", oSent, oRecv)
	}

	// Everything is removed cleanly.
	for _, x := range []*container{a, b, c} {
		removeContainer(t, x.name)
	}
	for _, ep := range []endpoint{epA, epB, epC} {
		assertHostSideGone(t, ep)
	}
	// The addresses were released: a's can be taken again.
	e := runContainer(t, nw, "--ip", epA.IPAddress)
	if got := e.ip(t, nw); got != epA.IPAddress {
		t.Errorf("--ip %s after removal gave %s", epA.IPAddress, got)
	}
}

// stopDaemonChecked stops the daemon with sig: after SIGTERM it exits 0
// and removes its sockets; after kill -9 the stale sockets stay but do not
// answer.
func stopDaemonChecked(t *testing.T, sig syscall.Signal) {
	err := dmn.stop(sig)
	if sig == syscall.SIGTERM {
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v, want status 0", err)
		}
		for _, s := range []string{dmn.netSock(), dmn.ipamSock()} {
			if _, err := os.Stat(s); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after SIGTERM the socket %s is still there (%v)", s, err)
			}
		}
	} else {
		for _, s := range []string{dmn.netSock(), dmn.ipamSock()} {
			if _, err := os.Stat(s); err != nil {
				t.Fatalf("after kill -9 the stale socket %s should still be there: %v", s, err)
			}
			if c, err := net.DialTimeout("unix", s, time.Second); err == nil {
				c.Close()
				t.Fatalf("stale socket %s still answers after kill -9", s)
			}
		}
	}
}

// TestGarbageRequests: bad JSON and impossible requests on both sockets get
// a non-200 reply with a JSON body {"Err": "..."}, and the daemon keeps
// serving Docker afterwards.
func TestGarbageRequests(t *testing.T) {
	begin(t)
	nw := newNetwork(t)
	pid := dmn.pid()
	for _, tc := range []struct {
		name       string
		sock, path string
		body       string
	}{
		{"network: broken JSON", dmn.netSock(), "/NetworkDriver.CreateNetwork", `{"NetworkID": "abc",`},
		{"network: wrong types", dmn.netSock(), "/NetworkDriver.CreateNetwork", `{"NetworkID": 42, "Options": "x"}`},
		{"network: binary junk", dmn.netSock(), "/NetworkDriver.CreateEndpoint", "\x00\xff\xfe garbage \x01"},
		{"network: empty CreateNetwork", dmn.netSock(), "/NetworkDriver.CreateNetwork", ``},
		{"network: Join of an unknown endpoint", dmn.netSock(), "/NetworkDriver.Join", `{"NetworkID":"nope","EndpointID":"nope","SandboxKey":"/nope"}`},
		{"network: CreateEndpoint with a bad address", dmn.netSock(), "/NetworkDriver.CreateEndpoint", `{"NetworkID":"x","EndpointID":"y","Interface":{"Address":"not-an-ip"}}`},
		{"network: 512 KiB of junk", dmn.netSock(), "/NetworkDriver.Join", strings.Repeat("{", 512<<10)},
		{"ipam: broken JSON", dmn.ipamSock(), "/IpamDriver.RequestPool", `{"Pool": `},
		{"ipam: JSON array", dmn.ipamSock(), "/IpamDriver.RequestPool", `[1, 2, 3]`},
		{"ipam: pool that is no CIDR", dmn.ipamSock(), "/IpamDriver.RequestPool", `{"Pool": "not-a-cidr"}`},
		{"ipam: unknown pool ID", dmn.ipamSock(), "/IpamDriver.RequestAddress", `{"PoolID": "bogus"}`},
		{"ipam: release of no address", dmn.ipamSock(), "/IpamDriver.ReleaseAddress", `{"PoolID": "CalicoPoolIPv4", "Address": "zzz"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, err := post(tc.sock, tc.path, []byte(tc.body))
			if err != nil {
				t.Fatalf("POST %s: %v", tc.path, err)
			}
			if code == http.StatusOK {
				t.Errorf("POST %s %q: HTTP 200, want an error status; body %s", tc.path, trunc(tc.body), body)
			}
			var reply struct{ Err string }
			if err := json.Unmarshal(body, &reply); err != nil || reply.Err == "" {
				t.Errorf(`POST %s: body %q is not {"Err": "..."} (%v)`, tc.path, body, err)
			}
			t.Logf("HTTP %d: %s", code, bytes.TrimSpace(body))
		})
	}
	// A body over the daemon's 1 MiB limit: the daemon may answer before
	// reading it all and close the connection, so the client can see a
	// broken pipe instead of the reply. Either way it must live on.
	if code, body, err := post(dmn.netSock(), "/NetworkDriver.CreateNetwork", bytes.Repeat([]byte("x"), 8<<20)); err == nil && code == http.StatusOK {
		t.Errorf("8 MiB of junk: HTTP 200: %s", body)
	}
	if !dmn.running() || dmn.pid() != pid {
		t.Fatalf("the daemon died on garbage input; its log ends:\n%s", tail(dmn.logPath, 30))
	}
	for _, s := range []string{dmn.netSock(), dmn.ipamSock()} {
		if err := activate(s); err != nil {
			t.Errorf("after garbage: %v", err)
		}
	}
	// Docker still gets served.
	a, b := runContainer(t, nw), runContainer(t, nw)
	a.mustPing(t, b.ip(t, nw))
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// TestDaemonStartupErrors: a bad flag and an unreachable datastore each make
// the daemon exit non-zero with one line that says what to fix.
func TestDaemonStartupErrors(t *testing.T) {
	begin(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad --veth-mtu", []string{"--veth-mtu", "abc"}, []string{"--veth-mtu", "abc", "576"}},
		{"unknown flag", []string{"--no-such-flag"}, []string{"no-such-flag"}},
		{"unreachable datastore", []string{"--etcd-endpoints", "http://127.0.0.1:1"}, []string{"127.0.0.1:1", "not reachable", "--etcd-endpoints"}},
		{"endpoint without scheme", []string{"--etcd-endpoints", "127.0.0.1:2379"}, []string{"--etcd-endpoints", "http://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			pluginDir := filepath.Join(dir, "plugins")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			args := append([]string{"--data-dir", filepath.Join(dir, "data"), "--plugin-dir", pluginDir}, tc.args...)
			cmd := exec.CommandContext(ctx, dmn.bin, args...)
			cmd.Env = daemonEnv()
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
				t.Fatalf("calico-libnetwork %s: %v, want a non-zero exit; stderr:\n%s", strings.Join(tc.args, " "), err, stderr.String())
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(tc.name, "unknown flag") {
				// The flag package adds the usage after its one-line error.
				msg = strings.SplitN(msg, "\n", 2)[0]
			} else if n := strings.Count(msg, "\n"); n > 0 || msg == "" {
				t.Errorf("want a one-line error, got %d lines:\n%s", n+1, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if _, err := os.Stat(filepath.Join(pluginDir, "calico.sock")); err == nil {
				t.Errorf("a socket was left in %s", pluginDir)
			}
			t.Logf("exit %d after %s: %s", ee.ExitCode(), time.Since(start).Round(time.Millisecond), msg)
		})
	}
}

// stopPing interrupts the background `ping ... >/tmp/ping.log` in c and
// returns its counts.
func (c *container) stopPing(t *testing.T) (sent, recv int) {
	t.Helper()
	c.exec(t, "killall", "-INT", "ping")
	for i := 0; i < 20; i++ {
		m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`).FindStringSubmatch(c.exec(t, "cat", "/tmp/ping.log"))
		if m != nil {
			sent, _ = strconv.Atoi(m[1])
			recv, _ = strconv.Atoi(m[2])
			return sent, recv
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, 0
}
