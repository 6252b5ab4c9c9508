//go:build e2e

package multihost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Image is the test image in every host's dockerd: the static busybox with
// its applets.
const Image = "calico-multihost/busybox"

func (h *Host) importImage(rootfs []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := h.dockerCmd(ctx, "import", "--change", `CMD ["sh"]`, "--change", "ENV PATH=/bin", "-", Image)
	c.Stdin = bytes.NewReader(rootfs)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: docker import: %v: %s", h.Name, err, out)
	}
	return nil
}

func (h *Host) dockerCmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + h.DockerSock}, args...)...)
	// Our own CLI config: no user contexts, no credential helpers.
	c.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(h.Dir, "cli"), "DOCKER_HOST=unix://"+h.DockerSock)
	return c
}

// DockerErr runs the docker CLI against the host's dockerd.
func (h *Host) DockerErr(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	c := h.dockerCmd(ctx, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: docker %s: %v: %s", h.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Docker runs the docker CLI and fails the test on error.
func (h *Host) Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := h.DockerErr(2*time.Minute, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// NetworkNames lists the host's Docker networks as "name driver".
func (h *Host) NetworkNames() ([]string, error) {
	out, err := h.DockerErr(20*time.Second, "network", "ls", "--format", "{{.Name}} {{.Driver}}")
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSpace(out), "\n"), nil
}

// HasNetwork reports whether the host's Docker has a network of that name
// and driver.
func (h *Host) HasNetwork(name, driver string) (bool, error) {
	names, err := h.NetworkNames()
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if n == name+" "+driver {
			return true, nil
		}
	}
	return false, nil
}

// Container is a running test container.
type Container struct {
	Host *Host
	Name string
	ID   string
	IP   netip.Addr
	Pid  int
}

func (c *Container) String() string { return fmt.Sprintf("%s@%s(%s)", c.Name, c.Host.Name, c.IP) }

// NSPath is the container's network namespace, for nsenter.
func (c *Container) NSPath() string { return fmt.Sprintf("/proc/%d/ns/net", c.Pid) }

// Run starts a container on network nw that sleeps, and returns it with
// its address on nw.
func (h *Host) Run(t testing.TB, name, nw string, extra ...string) *Container {
	t.Helper()
	c, err := h.RunErr(name, nw, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// RunErr is Run returning the error.
func (h *Host) RunErr(name, nw string, extra ...string) (*Container, error) {
	args := append([]string{"run", "-d", "--name", name, "--net", nw, "--label", LabelKey + "=" + h.tb.ID}, extra...)
	args = append(args, Image, "sleep", "1d")
	if _, err := h.DockerErr(2*time.Minute, args...); err != nil {
		return nil, err
	}
	return h.Inspect(name, nw)
}

// Inspect reads a container's ID, PID and address on nw.
func (h *Host) Inspect(name, nw string) (*Container, error) {
	out, err := h.DockerErr(30*time.Second, "inspect", "-f",
		fmt.Sprintf(`{{.Id}} {{.State.Pid}} {{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, nw), name)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(out)
	if len(f) != 3 {
		return nil, fmt.Errorf("%s: container %s has no address on %s: %q", h.Name, name, nw, out)
	}
	ip, err := netip.ParseAddr(f[2])
	if err != nil {
		return nil, fmt.Errorf("%s: container %s address %q: %v", h.Name, name, f[2], err)
	}
	return &Container{Host: h, Name: name, ID: f[0], Pid: atoi(f[1]), IP: ip}, nil
}

// ExecErr runs a command in the container.
func (c *Container) ExecErr(timeout time.Duration, argv ...string) (string, error) {
	out, err := c.Host.DockerErr(timeout, append([]string{"exec", c.Name}, argv...)...)
	return out, err
}

// Exec runs a command in the container and fails the test on error.
func (c *Container) Exec(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := c.ExecErr(time.Minute, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// PingErr sends count pings to ip and reports an error unless all of them
// are answered.
func (c *Container) PingErr(ip netip.Addr, count int) error {
	out, err := c.ExecErr(time.Duration(count+10)*time.Second, "ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", "-w", strconv.Itoa(count+3), ip.String())
	if err != nil {
		return fmt.Errorf("%s ping %s: %v\n%s", c, ip, err, out)
	}
	sent, recv := PingCounts(out)
	if sent != count || recv != count {
		return fmt.Errorf("%s ping %s: %d sent, %d received\n%s", c, ip, sent, recv, out)
	}
	return nil
}

// MustReach pings ip until a ping succeeds (routes take a moment to
// converge), then requires 3 answered pings in a row.
func (c *Container) MustReach(t testing.TB, ip netip.Addr, within time.Duration) {
	t.Helper()
	var last error
	deadline := time.Now().Add(within)
	for {
		_, last = c.ExecErr(10*time.Second, "ping", "-c", "1", "-W", "1", ip.String())
		if last == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("%s cannot reach %s within %s: %v", c, ip, within, last)
	}
	if err := c.PingErr(ip, 3); err != nil {
		t.Fatal(err)
	}
}

var (
	pingCountsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingRTTRE    = regexp.MustCompile(`min/avg/max(?:/mdev)? = ([\d.]+)/([\d.]+)/([\d.]+)`)
)

// PingCounts parses ping's summary.
func PingCounts(out string) (sent, recv int) {
	m := pingCountsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0
	}
	return atoi(m[1]), atoi(m[2])
}

// PingAvgRTT parses ping's average round trip in milliseconds.
func PingAvgRTT(out string) (float64, bool) {
	m := pingRTTRE.FindStringSubmatch(out)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[2], 64)
	return v, err == nil
}

// Veths lists the host's cali* links.
func (h *Host) Veths() ([]string, error) {
	links, err := h.Links()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "cali") {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// RunWithMACErr is RunErr with a fixed MAC and IPv4 address. A docker CLI
// newer than the engine (CLI >= 25 against API < 1.44, as with Docker 20.10)
// refuses --mac-address with --net; then the container is created through
// the engine API, where the MAC goes in the container config as older CLIs
// sent it.
func (h *Host) RunWithMACErr(name, nw, mac, ip string) (*Container, error) {
	c, err := h.RunErr(name, nw, "--mac-address", mac, "--ip", ip)
	if err == nil || !strings.Contains(err.Error(), "requires API version") {
		return c, err
	}
	_, _ = h.DockerErr(30*time.Second, "rm", "-f", name)
	api := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.DockerSock)
	}}}
	body, _ := json.Marshal(map[string]any{
		"Image": Image, "Cmd": []string{"sleep", "1d"}, "MacAddress": mac,
		"Labels":           map[string]string{LabelKey: h.tb.ID},
		"HostConfig":       map[string]any{"NetworkMode": nw},
		"NetworkingConfig": map[string]any{"EndpointsConfig": map[string]any{nw: map[string]any{"IPAMConfig": map[string]string{"IPv4Address": ip}}}},
	})
	resp, err := api.Post("http://docker/v1.41/containers/create?name="+name, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("%s: engine API container create: HTTP %d: %s", h.Name, resp.StatusCode, out)
	}
	if _, err := h.DockerErr(2*time.Minute, "start", name); err != nil {
		return nil, err
	}
	return h.Inspect(name, nw)
}
