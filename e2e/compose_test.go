//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// composeFile is the project the Compose suite drives: the README's
// example plus a fixed address and a scaled client.
const composeFile = `name: %[1]s
services:
  db:
    image: %[2]s
    command: ["sh", "-c", "echo db > /var/www/index.html && exec httpd -f -p 80 -h /var/www"]
    restart: always
    labels: ["%[3]s"]
    networks:
      back:
        aliases: [database]
  web:
    image: %[2]s
    command: ["sh", "-c", "echo web > /var/www/index.html && exec httpd -f -p 80 -h /var/www"]
    restart: always
    labels: ["%[3]s"]
    networks: [front, back]
  fixed:
    image: %[2]s
    command: ["sleep", "3600"]
    restart: always
    labels: ["%[3]s"]
    networks:
      back:
        ipv4_address: 192.168.79.10
  client:
    image: %[2]s
    command: ["sleep", "3600"]
    restart: always
    labels: ["%[3]s"]
    networks: [front]
networks:
  front:
    driver: calico
    ipam:
      driver: calico-ipam
    labels: ["%[3]s"]
  back:
    driver: calico
    ipam:
      driver: calico-ipam
      config:
        - subnet: 192.168.79.0/24
    labels: ["%[3]s"]
`

type compose struct {
	t       *testing.T
	project string
	file    string
}

func (c *compose) run(args ...string) (string, error) {
	ctx := exec.Command("docker-compose", append([]string{"-p", c.project, "-f", c.file}, args...)...)
	out, err := ctx.CombinedOutput()
	return string(out), err
}

func (c *compose) must(args ...string) string {
	c.t.Helper()
	start := time.Now()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.t.Logf("docker-compose %s (%s)", strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
	return out
}

// containers lists the project's containers of a service, by name.
func (c *compose) containers(service string) []*container {
	c.t.Helper()
	out := docker(c.t, "ps", "-q", "--filter", "label=com.docker.compose.project="+c.project, "--filter", "label=com.docker.compose.service="+service)
	var cs []*container
	for _, id := range strings.Fields(out) {
		name := strings.TrimPrefix(docker(c.t, "inspect", "-f", "{{.Name}}", id), "/")
		cs = append(cs, &container{name: name, id: id})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	return cs
}

func (c *compose) one(service string) *container {
	c.t.Helper()
	cs := c.containers(service)
	if len(cs) != 1 {
		c.t.Fatalf("service %s has %d running containers, want 1", service, len(cs))
	}
	return cs[0]
}

// resolve asks Docker's embedded DNS (the container's resolver) for name's
// IPv4 address, with busybox's own DNS client (the static busybox cannot
// use glibc's resolver).
func resolve(ct *container, name string) (string, error) {
	out, errOut, err := dockerRun("exec", ct.name, "nslookup", "-type=a", name)
	if err != nil {
		return "", fmt.Errorf("%s: nslookup %s: %v: %s %s", ct.name, name, err, out, errOut)
	}
	named := false
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "Name:":
			named = true
		case named && len(f) >= 2 && f[0] == "Address:":
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s: nslookup %s gave no address:\n%s", ct.name, name, out)
}

// fetch GETs http://host/ from inside ct; a name is
// resolved through the embedded DNS first.
func fetch(ct *container, host string) (string, error) {
	if !strings.ContainsAny(host, ".:") {
		ip, err := resolve(ct, host)
		if err != nil {
			return "", err
		}
		host = ip
	}
	// nc, not wget: the static busybox's wget crashes in glibc's resolver.
	out, errOut, err := dockerRun("exec", ct.name, "sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 %s 80`, host))
	if err != nil {
		return "", fmt.Errorf("%s: GET http://%s/: %v: %s", ct.name, host, err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "HTTP/1.") {
		return "", fmt.Errorf("%s: GET http://%s/: no HTTP answer: %q", ct.name, host, out)
	}
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

func eventuallyFetch(t *testing.T, ct *container, host, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := fetch(ct, host)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s cannot fetch %q from %s: got %q, %v", ct.name, want, host, got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCompose is the Compose suite (Compose v2 from Debian forky, on Docker
// 28.5): two calico networks (back with a subnet inside the default pool),
// services reached by name and by alias through Docker's embedded DNS, a
// fixed ipv4_address, a service on both networks, --scale, restart, an
// engine restart with restart: always, and down leaving no network, veth,
// route, address or record. With CALICO_E2E_COMPOSE_MARKER it writes a
// marker when it passed.
func TestCompose(t *testing.T) {
	begin(t)
	needEngine(t, 28, "the Compose suite (Compose v2 from Docker 28.5's packages)")
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose (Compose v2) is not in PATH: %v", err)
	}
	started := time.Now()
	ver, _ := exec.Command("docker-compose", "version", "--short").Output()
	project := "e2e" + runID + "cmp"
	file := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(composeFile, project, Image, labelArg())), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &compose{t: t, project: project, file: file}
	t.Cleanup(func() {
		if out, err := c.run("down", "--timeout", "1"); err != nil {
			t.Logf("docker-compose down: %v\n%s", err, out)
		}
	})
	c.must("up", "-d", "--scale", "client=3")

	c.checkLayout(t)
	t.Run("up", c.checkReach)
	t.Run("restart", func(t *testing.T) {
		c.must("restart", "web")
		c.checkReach(t)
	})
	t.Run("engine restart with restart: always", c.engineRestart)
	t.Run("down", c.checkDown)

	if marker := os.Getenv("CALICO_E2E_COMPOSE_MARKER"); marker != "" && !t.Failed() {
		body := fmt.Sprintf("Compose suite passed with Compose %s on Docker %s in %s\n", strings.TrimSpace(string(ver)), engineVersion(), time.Since(started).Round(time.Second))
		if err := os.WriteFile(marker, []byte(body), 0o644); err != nil {
			t.Errorf("write the Compose marker: %v", err)
		}
	}
}

// checkLayout checks what up made: three clients with their own
// addresses, web on two interfaces, back's addresses in its subnet and
// fixed's ipv4_address.
func (c *compose) checkLayout(t *testing.T) {
	project := c.project
	db, web, fixed := c.one("db"), c.one("web"), c.one("fixed")
	clients := c.containers("client")
	if len(clients) != 3 {
		t.Fatalf("--scale client=3 gave %d clients", len(clients))
	}
	front, back := project+"_front", project+"_back"
	wf, wb := web.endpoint(t, front), web.endpoint(t, back)
	if ifaceWith(t, web, wf.IPAddress) == ifaceWith(t, web, wb.IPAddress) {
		t.Fatal("web's two networks share an interface")
	}
	if got := fixed.ip(t, back); got != "192.168.79.10" {
		t.Errorf("fixed's ipv4_address: %s, want 192.168.79.10", got)
	}
	for _, ct := range []*container{db, web, fixed} {
		if ip := ct.ip(t, back); !inPrefix(t, ip, "192.168.79.0/24") {
			t.Errorf("%s has %s on back, outside its subnet", ct.name, ip)
		}
	}
	seen := map[string]bool{}
	for _, cl := range clients {
		seen[cl.ip(t, front)] = true
	}
	if len(seen) != 3 {
		t.Errorf("the 3 clients have %d distinct addresses", len(seen))
	}
}

// checkReach checks names, aliases and routes between the services, and
// that front's clients reach neither db's name nor its address.
func (c *compose) checkReach(t *testing.T) {
	t.Helper()
	back := c.project + "_back"
	db, web := c.one("db"), c.one("web")
	// By service name and by alias, through the embedded DNS; web
	// reaches db through its back interface, clients reach web on front.
	eventuallyFetch(t, web, "db", "db")
	eventuallyFetch(t, web, "database", "db")
	waitRouteDev(t, web, db.ip(t, back), ifaceWith(t, web, web.ip(t, back)))
	for _, cl := range c.containers("client") {
		eventuallyFetch(t, cl, "web", "web")
	}
	// The client is only on front: no name for db, and policy stops
	// it at db's address.
	cl := c.containers("client")[0]
	if _, errOut, err := dockerRun("exec", cl.name, "nslookup", "db"); err == nil {
		t.Errorf("%s (front only) resolved db (back only): %s", cl.name, errOut)
	}
	if got, err := fetch(cl, db.ip(t, back)); err == nil {
		t.Errorf("%s (front) fetched %q from db (back) by address: networks must be isolated", cl.name, got)
	}
	c.one("fixed").mustPing(t, db.ip(t, back))
}

// engineRestart restarts the engine: every container (restart: always)
// comes back, reaches the others, and the engine logs no endpoint error.
func (c *compose) engineRestart(t *testing.T) {
	project := c.project
	logOff := len(engineLog())
	restartEngine(t, "")
	deadline := time.Now().Add(90 * time.Second)
	for {
		n := len(strings.Fields(docker(t, "ps", "-q", "--filter", "label=com.docker.compose.project="+project)))
		if n == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 6 containers running %s after the engine restart:\n%s", n, 90*time.Second, docker(t, "ps", "-a"))
		}
		time.Sleep(time.Second)
	}
	c.checkReach(t)
	if after := engineLog()[logOff:]; strings.Contains(after, "endpoint already exists") || strings.Contains(after, "failed to create endpoint") {
		t.Errorf("the engine logged endpoint errors after its restart:\n%s", grepLines(after, "endpoint"))
	}
}

// checkDown removes the project: no network, host side or record of any of
// its endpoints is left.
func (c *compose) checkDown(t *testing.T) {
	project := c.project
	var eps []endpoint
	for _, svc := range []string{"db", "web", "fixed", "client"} {
		for _, ct := range c.containers(svc) {
			var nets map[string]endpoint
			_ = json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .NetworkSettings.Networks}}", ct.name)), &nets)
			for _, ep := range nets {
				eps = append(eps, ep)
			}
		}
	}
	if len(eps) != 7 {
		t.Fatalf("%d endpoints before down, want 7 (web has two)", len(eps))
	}
	c.must("down", "--timeout", "1")
	if out := docker(t, "network", "ls", "-q", "--filter", "label=com.docker.compose.project="+project); out != "" {
		t.Errorf("networks left after down: %s", out)
	}
	for _, ep := range eps {
		assertHostSideGone(t, ep)
		assertNoRecord(t, ep)
	}
}
