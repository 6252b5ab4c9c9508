//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// ---------------------------------------------------------------- helpers

// runWithCmd starts a container on network running cmd (docker run -d) and
// removes it when the test ends.
func runWithCmd(t *testing.T, network string, extra []string, cmd ...string) *container {
	t.Helper()
	name := uniqueName(t, "c")
	t.Cleanup(func() { removeContainer(t, name) })
	args := append([]string{"run", "-d", "--label", labelArg(), "--name", name, "--net", network}, extra...)
	args = append(append(args, Image), cmd...)
	id := docker(t, args...)
	return &container{name: name, id: id}
}

// asNobody runs a command as the unprivileged user nobody.
func asNobody(name string, args ...string) (string, error) {
	full := append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", name}, args...)
	out, err := exec.Command("setpriv", full...).CombinedOutput()
	return string(out), err
}

func etcdSocket() string { return filepath.Join(dmn.dataDir, datastore.SocketFile) }

// etcdctl runs etcdctl as root against the daemon's embedded etcd.
func etcdctl(t *testing.T, args ...string) string {
	t.Helper()
	return runOut(t, "etcdctl", append([]string{"--endpoints", "unix://" + etcdSocket(), "--dial-timeout=3s"}, args...)...)
}

// hostAddress is the address of the host's default-route interface: the
// one containers would reach the host (and an etcd the README puts there) on.
func hostAddress(t *testing.T) string {
	t.Helper()
	var routes []struct {
		Dev string `json:"dev"`
	}
	if err := ipJSON(&routes, "-4", "route", "show", "default"); err != nil || len(routes) == 0 {
		t.Fatalf("no IPv4 default route (%v)", err)
	}
	var links []struct {
		AddrInfo []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
		} `json:"addr_info"`
	}
	if err := ipJSON(&links, "-4", "addr", "show", "dev", routes[0].Dev); err != nil || len(links) == 0 || len(links[0].AddrInfo) == 0 {
		t.Fatalf("no IPv4 address on %s (%v)", routes[0].Dev, err)
	}
	return links[0].AddrInfo[0].Local
}

// serveHello answers "hello" on addr:port (port 0: any) until the test
// ends, and returns the port.
func serveHello(t *testing.T, addr string, port int) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on %s:%d: %v", addr, port, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// hostEtcd runs a real etcd (Debian's etcd-server) whose client port is
// addr:2379, the port the README tells users to run etcd on.
func hostEtcd(t *testing.T, addr string) {
	t.Helper()
	if err := ensureTool("etcd", "etcd-server"); err != nil {
		t.Fatal(err)
	}
	if l, err := net.Listen("tcp", addr+":2379"); err != nil {
		t.Fatalf("%s:2379 is taken on this machine (%v): this test runs an etcd there", addr, err)
	} else {
		l.Close()
	}
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peerURL := "http://" + peer.Addr().String()
	peer.Close()
	dir := t.TempDir()
	cmd := exec.Command("etcd", "--name", "e2e-host-etcd", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "http://"+addr+":2379", "--advertise-client-urls", "http://"+addr+":2379",
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "e2e-host-etcd="+peerURL)
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	})
	eventually(t, 30*time.Second, "the host's etcd answers", func() bool {
		out, err := exec.Command("curl", "-s", "--max-time", "1", "http://"+addr+":2379/version").Output()
		return err == nil && strings.Contains(string(out), "etcdserver")
	})
}

func hostTableExists() bool {
	out, err := exec.Command("nft", "list", "tables").Output()
	return err == nil && strings.Contains(string(out), "inet "+nftpolicy.DefaultHostTable+"\n")
}

func removeHostTable() {
	if err := nftpolicy.NewHostProtection(nftpolicy.HostConfig{}).Remove(); err != nil {
		fmt.Println("e2e: removing the host protection table:", err)
	}
}

// restartDaemon stops the daemon and starts it again with env set in its
// environment ("KEY=" unsets KEY).
func restartDaemon(t *testing.T, env ...string) {
	t.Helper()
	if err := dmn.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stop the daemon: %v", err)
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
		if v == "" {
			os.Unsetenv(k)
		}
	}
	if err := dmn.start(); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------- tests

// TestDatastoreRootOnly: the running daemon's embedded etcd and plugin
// sockets are root's alone. As the unprivileged user nobody, curl and
// etcdctl can neither read nor write the datastore, the plugin sockets
// refuse connections, and calicoctl says in one line to run it as root;
// the same commands as root work. etcd's HTTP gateway is off.
func TestDatastoreRootOnly(t *testing.T) {
	begin(t)
	ensureDaemon(t)
	for _, tool := range [][2]string{{"etcdctl", "etcd-client"}, {"curl", "curl"}, {"setpriv", "util-linux"}} {
		if err := ensureTool(tool[0], tool[1]); err != nil {
			t.Fatal(err)
		}
	}
	bin := buildCalicoctl(t)
	sock := etcdSocket()
	key := api.Prefix + "e2e-root-only"
	etcdctl(t, "put", key, "root's")
	t.Cleanup(func() { etcdctl(t, "del", key) })
	if got := etcdctl(t, "get", key, "--print-value-only"); strings.TrimSpace(got) != "root's" {
		t.Fatalf("root's etcdctl reads %q", got)
	}
	if out := runOut(t, "curl", "-sS", "--max-time", "5", "--unix-socket", sock, "http://localhost/version"); !strings.Contains(out, "etcdserver") {
		t.Fatalf("root's curl on the socket: %s", out)
	}
	if code := strings.TrimSpace(runOut(t, "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock,
		"-X", "POST", "-d", `{"key":"L2NhbGljbw=="}`, "http://localhost/v3/kv/range")); code != "404" {
		t.Errorf("etcd's HTTP gateway answered /v3/kv/range with %s, want 404 (off)", code)
	}
	if out := mustCalicoctl(t, bin, "", "get", "ippools"); !strings.Contains(out, "default-ipv4-ippool") {
		t.Errorf("root's calicoctl without flags:\n%s", out)
	}
	// Nothing listens for etcd on TCP: the endpoint record names the socket.
	if ep := strings.TrimSpace(readFile(filepath.Join(dmn.dataDir, datastore.EndpointFile))); ep != "unix://"+sock {
		t.Errorf("endpoint record %q, want unix://%s", ep, sock)
	}

	for _, c := range []struct {
		what string
		argv []string
	}{
		{"curl read", []string{"curl", "-sSv", "--max-time", "5", "--unix-socket", sock, "http://localhost/version"}},
		{"curl write", []string{"curl", "-sSv", "--max-time", "5", "--unix-socket", sock, "-X", "POST",
			"-d", `{"key":"L2NhbGljby9saWJuZXR3b3JrL3YxL2UyZS1yb290LW9ubHk=","value":"bm9ib2R5"}`, "http://localhost/v3/kv/put"}},
		{"etcdctl get", []string{"etcdctl", "--endpoints", "unix://" + sock, "--dial-timeout=1s", "--command-timeout=2s", "get", key}},
		{"etcdctl put", []string{"etcdctl", "--endpoints", "unix://" + sock, "--dial-timeout=1s", "--command-timeout=2s", "put", key, "nobody's"}},
		{"plugin socket", []string{"curl", "-sSv", "--max-time", "5", "--unix-socket", dmn.netSock(), "-X", "POST", "http://localhost/NetworkDriver.CreateNetwork", "-d", `{"NetworkID":"x"}`}},
	} {
		out, err := asNobody(c.argv[0], c.argv[1:]...)
		if err == nil || strings.Contains(out, "root's") {
			t.Errorf("%s as nobody: err %v, output:\n%s", c.what, err, out)
		}
		if c.argv[0] == "curl" && !strings.Contains(out, "Permission denied") {
			t.Errorf("%s as nobody failed, but not for want of permission:\n%s", c.what, out)
		}
	}
	if got := etcdctl(t, "get", key, "--print-value-only"); strings.TrimSpace(got) != "root's" {
		t.Errorf("after nobody's attempts the key holds %q", got)
	}
	out, err := asNobody(bin, "--data-dir", dmn.dataDir, "get", "ippools")
	line := strings.TrimSpace(out)
	if err == nil || strings.Contains(line, "\n") || !strings.Contains(line, "permission denied") || !strings.Contains(line, "run calicoctl as root") {
		t.Errorf("calicoctl as nobody: err %v, want one line saying permission denied, run as root:\n%s", err, out)
	}
	t.Logf("calicoctl as nobody: %s", line)
}

// TestHostProtection: from a container, a service on its host's address
// and an etcd there (port 2379) cannot be reached by default, while the
// host reaches the container and gets its replies; Accept opens the host
// but not the etcd port; listing a port in endpointToHostAllowedPorts opens
// that port, and only the listed etcd port opens etcd.
func TestHostProtection(t *testing.T) {
	begin(t)
	ensureDaemon(t)
	bin := buildCalicoctl(t)
	addr := hostAddress(t)
	svc := serveHello(t, addr, 0)
	hostEtcd(t, addr)
	nw := newNetwork(t)
	c := runWithCmd(t, nw, nil, "sh", "-c", "while true; do echo hello | nc -l -p 8080; done")
	cIP := c.ip(t, nw)
	toService := func() bool { return c.tcpReach(addr, svc) }
	toEtcd := func() bool { // HTTP by hand: the static busybox's wget crashes resolving
		out, _, _ := dockerRun("exec", c.name, "sh", "-c", fmt.Sprintf(`printf 'GET /version HTTP/1.0\r\n\r\n' | nc -w 2 %s 2379`, addr))
		return strings.Contains(out, "etcdserver")
	}
	hostToContainer := func() bool {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(cIP, "8080"), 2*time.Second)
		if err != nil {
			return false
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return line == "hello\n"
	}
	apply := func(spec string) {
		t.Helper()
		mustCalicoctl(t, bin, "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec: "+spec+"\n", "apply", "-f", "-")
	}
	t.Cleanup(func() { calicoctl(t, bin, "", "delete", "felixconfiguration", "default") })
	check := func(what string, service, etcd bool) {
		t.Helper()
		eventually(t, 10*time.Second, what+": the host reaches the container", hostToContainer)
		eventually(t, 10*time.Second, fmt.Sprintf("%s: the host's service reachable=%v", what, service), func() bool { return toService() == service })
		eventually(t, 10*time.Second, fmt.Sprintf("%s: the host's etcd reachable=%v", what, etcd), func() bool { return toEtcd() == etcd })
		// A closed port stays closed over a few tries (not a timing accident
		// of a rule not yet applied); the tries run side by side.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var leaks []string
		for i := 0; i < 3; i++ {
			for _, p := range []struct {
				name  string
				want  bool
				probe func() bool
			}{{"service", service, toService}, {"etcd", etcd, toEtcd}} {
				if p.want {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if p.probe() {
						mu.Lock()
						leaks = append(leaks, p.name)
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		if len(leaks) > 0 {
			t.Fatalf("%s: the container reached the host's %v", what, leaks)
		}
	}
	check("default (Drop)", false, false)
	if out := mustCalicoctl(t, bin, "", "get", "felixconfiguration", "-o", "wide"); !strings.Contains(out, "Drop") {
		t.Errorf("get felixconfiguration shows:\n%s", out)
	}
	apply("{defaultEndpointToHostAction: Accept}")
	check("Accept", true, false)
	apply(fmt.Sprintf("{endpointToHostAllowedPorts: [{protocol: TCP, port: %d}]}", svc))
	check("Drop, the service's port allowed", true, false)
	apply("{endpointToHostAllowedPorts: [{protocol: TCP, port: 2379}]}")
	check("Drop, etcd's port allowed explicitly", false, true)
	mustCalicoctl(t, bin, "", "delete", "felixconfiguration", "default")
	check("deleted: the defaults again", false, false)
}

// TestInvalidPolicyFailsSafe: policy records written straight into etcd
// that the daemon cannot enforce (a newer field in a changed Deny, a
// record that does not decode, a bad selector) block nothing else and open
// nothing: other containers start, the Deny's last good version keeps
// holding (also after a daemon restart), `calicoctl get` shows the records
// as invalid with why, and the daemon logs each problem once by name.
func TestInvalidPolicyFailsSafe(t *testing.T) {
	begin(t)
	ensureDaemon(t)
	bin := buildCalicoctl(t)
	label := func(role string) []string { return []string{"--label", "org.projectcalico.label.role=" + role} }
	nw := newNetwork(t)
	db := runWithCmd(t, nw, label("db"), "sh", "-c", "while true; do echo hello | nc -l -p 5432; done")
	fe := runContainer(t, nw, label("frontend")...)
	dbIP := db.ip(t, nw)
	eventually(t, 10*time.Second, "frontend reaches db before any policy", func() bool { return fe.tcpReach(dbIP, 5432) })
	deny := `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: e2e-fe-not-db}
spec:
  order: 10
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: role == 'frontend'}
  - action: Allow
`
	mustCalicoctl(t, bin, deny, "apply", "-f", "-")
	gnp := api.GlobalNetworkPoliciesPrefix
	t.Cleanup(func() {
		for _, n := range []string{"e2e-fe-not-db", "e2e-broken", "e2e-bad-selector"} {
			etcdctl(t, "del", gnp+n)
		}
	})
	eventually(t, 10*time.Second, "the Deny holds", func() bool { return !fe.tcpReach(dbIP, 5432) })

	offset := logSize()
	etcdctl(t, "put", gnp+"e2e-fe-not-db", `{"name":"e2e-fe-not-db","order":10,"selector":"role == 'db'","types":["Ingress"],"ingress":[{"action":"Allow","http":{"paths":["/"]}}]}`)
	etcdctl(t, "put", gnp+"e2e-broken", `{"name":"e2e-broken",`)
	etcdctl(t, "put", gnp+"e2e-bad-selector", `{"name":"e2e-bad-selector","selector":"role ==","types":["Ingress"],"ingress":[{"action":"Deny"}]}`)
	eventually(t, 10*time.Second, "the daemon logs the three invalid records", func() bool {
		return strings.Count(logSince(offset), "policy resource is invalid") >= 3
	})
	fe2 := runContainer(t, nw, label("frontend")...)
	other := newNetwork(t)
	o1, o2 := runContainer(t, other), runContainer(t, other)
	o1.mustPing(t, o2.ip(t, other))
	never(t, "the changed Deny opened db to the frontend", func() bool { return fe.tcpReach(dbIP, 5432) })
	eventually(t, 10*time.Second, "the new frontend container gets its labels", func() bool { return strings.Contains(logSince(offset), "endpoint labels learnt") })
	never(t, "a new frontend container reached db past the Deny", func() bool { return fe2.tcpReach(dbIP, 5432) })
	fe2.mustPing(t, fe.ip(t, nw))

	log := logSince(offset)
	for _, n := range []string{"e2e-fe-not-db", "e2e-broken", "e2e-bad-selector"} {
		if c := strings.Count(log, `resource="GlobalNetworkPolicy `+n+`"`); c != 1 {
			t.Errorf("GlobalNetworkPolicy %s is logged %d times as invalid, want once", n, c)
		}
	}
	if !strings.Contains(log, `inForce="its last good version"`) {
		t.Errorf("the log does not say the last good version stays in force:\n%s", log)
	}
	out, err := calicoctl(t, bin, "", "get", "globalnetworkpolicies", "-o", "wide")
	if err != nil {
		t.Fatalf("calicoctl get: %v\n%s", err, out)
	}
	for _, want := range []string{"STATUS", `Invalid: undecodable: json: unknown field "http"`, "e2e-broken", "Invalid: undecodable: unexpected EOF", "spec.selector", "Warning:"} {
		if !strings.Contains(out, want) {
			t.Errorf("calicoctl get globalnetworkpolicies -o wide lacks %q:\n%s", want, out)
		}
	}
	t.Logf("calicoctl get globalnetworkpolicies -o wide:\n%s", out)

	restartDaemon(t)
	never(t, "after a daemon restart the changed Deny opened db", func() bool { return fe.tcpReach(dbIP, 5432) })
	// Fixed: enforced as stored again (here: Allow everything).
	mustCalicoctl(t, bin, strings.Replace(deny, "  - action: Deny\n    source: {selector: role == 'frontend'}\n", "", 1), "apply", "-f", "-")
	eventually(t, 10*time.Second, "the fixed policy applies", func() bool { return fe.tcpReach(dbIP, 5432) })
}

// TestNoLabelWindow: a policy that denies by label holds from the first
// packet a new container sends or is sent: a container labelled
// role=untrusted whose command starts probing a peer at once never gets
// through, nor does a prober hammering the fixed address of a new role=db
// container while it starts. The same probes without the label get
// through (so the probe works), once the labels are known, within a second
// of the start.
func TestNoLabelWindow(t *testing.T) {
	begin(t)
	ensureDaemon(t)
	bin := buildCalicoctl(t)
	pols := `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: e2e-no-untrusted-egress}
spec:
  selector: role == 'untrusted'
  types: [Egress]
  egress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: e2e-db-no-ingress}
spec:
  selector: role == 'db'
  types: [Ingress]
  ingress: [{action: Deny}]
`
	mustCalicoctl(t, bin, pols, "apply", "-f", "-")
	t.Cleanup(func() { calicoctl(t, bin, pols, "delete", "-f", "-") })
	nw := newNetwork(t, "--subnet", "192.168.211.0/24")
	target := runWithCmd(t, nw, nil, "sh", "-c", "while true; do echo hello | nc -l -p 8080; done")
	tIP := target.ip(t, nw)
	// 30 connection attempts in the first 1.5 s of the container's life,
	// each waiting up to 1 s: "OPEN n" for each that got through.
	probe := func(ip string) []string {
		return []string{"sh", "-c", fmt.Sprintf("i=0; while [ $i -lt 30 ]; do (echo | nc -w 1 %s 8080 | grep -q hello && echo OPEN $i) & i=$((i+1)); sleep 0.05; done; wait; echo DONE; sleep 3600", ip)}
	}
	checker := runContainer(t, nw)
	eventually(t, 10*time.Second, "the target answers", func() bool { return checker.tcpReach(tIP, 8080) })

	offset := logSize()
	untrusted := runWithCmd(t, nw, []string{"--label", "org.projectcalico.label.role=untrusted"}, probe(tIP)...)
	control := runWithCmd(t, nw, []string{"--label", "org.projectcalico.label.role=trusted"}, probe(tIP)...)
	done := func(c *container) string {
		var logs string
		eventually(t, 20*time.Second, c.name+" finishes probing", func() bool {
			logs, _, _ = dockerRun("logs", c.name)
			return strings.Contains(logs, "DONE")
		})
		return logs
	}
	if logs := done(untrusted); strings.Contains(logs, "OPEN") {
		t.Errorf("a role=untrusted container got through the Deny while it started:\n%s", logs)
	}
	if logs := done(control); !strings.Contains(logs, "OPEN") {
		t.Errorf("the same probe without the label never got through (the test proves nothing):\n%s", logs)
	} else {
		t.Logf("without the label the probes got through from %s", firstLine(logs))
	}

	// Ingress: a prober hammers a fixed address before its container exists.
	dbIP, webIP := "192.168.211.50", "192.168.211.51"
	hammer := func(ip string) *container {
		return runWithCmd(t, nw, nil, "sh", "-c", fmt.Sprintf("while true; do (echo | nc -w 1 %s 8080 | grep -q hello && echo OPEN) & sleep 0.05; done", ip))
	}
	hDB, hWeb := hammer(dbIP), hammer(webIP)
	listen := []string{"sh", "-c", "while true; do echo hello | nc -l -p 8080; done"}
	db := runWithCmd(t, nw, []string{"--ip", dbIP, "--label", "org.projectcalico.label.role=db"}, listen...)
	web := runWithCmd(t, nw, []string{"--ip", webIP, "--label", "org.projectcalico.label.role=web"}, listen...)
	eventually(t, 10*time.Second, "the prober reaches the unrestricted role=web container", func() bool {
		logs, _, _ := dockerRun("logs", hWeb.name)
		return strings.Contains(logs, "OPEN")
	})
	time.Sleep(2 * time.Second)
	if logs, _, _ := dockerRun("logs", hDB.name); strings.Contains(logs, "OPEN") {
		t.Errorf("the prober reached the new role=db container past its ingress Deny while it started:\n%s", logs)
	}

	// How long after its start each container's labels were known.
	log := logSince(offset)
	for _, c := range []*container{untrusted, control, db, web} {
		d, ok := labelsKnownAfterStart(t, log, c)
		if !ok {
			t.Errorf("%s: no 'endpoint labels learnt' line in the daemon log", c.name)
			continue
		}
		t.Logf("%s: labels known %s after the container started", c.name, d.Round(time.Millisecond))
		if d > 5*time.Second {
			t.Errorf("%s: labels known only %s after the container started (the target is 1 s)", c.name, d)
		}
	}
}

var learntRE = regexp.MustCompile(`time=(\S+) level=INFO msg="endpoint labels learnt" part=labels endpoint=(\S+)`)

// labelsKnownAfterStart is the time from the container's start (Docker's
// State.StartedAt) to the daemon's log line saying its labels are known.
func labelsKnownAfterStart(t *testing.T, log string, c *container) (time.Duration, bool) {
	t.Helper()
	var st struct{ State struct{ StartedAt time.Time } }
	if err := json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .}}", c.name)), &st); err != nil {
		t.Fatal(err)
	}
	var nets map[string]struct{ EndpointID string }
	if err := json.Unmarshal([]byte(docker(t, "inspect", "-f", "{{json .NetworkSettings.Networks}}", c.name)), &nets); err != nil {
		t.Fatal(err)
	}
	for _, m := range learntRE.FindAllStringSubmatch(log, -1) {
		for _, n := range nets {
			if m[2] == n.EndpointID {
				at, err := time.Parse(time.RFC3339Nano, m[1])
				if err != nil {
					t.Fatal(err)
				}
				return at.Sub(st.State.StartedAt), true
			}
		}
	}
	return 0, false
}

// TestPolicyOffAndOn: --policy=off removes the daemon's policy table, and
// only it, and says so: containers on different networks reach each other
// and new ones start reachable; host protection stays. Back on, the table
// is complete before the daemon serves: the networks are isolated again
// from the first probe, and same-network traffic flows.
func TestPolicyOffAndOn(t *testing.T) {
	begin(t)
	ensureDaemon(t)
	policyOff := false
	t.Cleanup(func() { // whatever happened, the suite goes on with policy on
		if policyOff {
			_ = dmn.stop(syscall.SIGTERM)
			os.Unsetenv("CALICO_POLICY")
			if err := dmn.start(); err != nil {
				t.Errorf("restart the daemon with policy on: %v", err)
			}
		}
	})
	canary := "calico-e2e-canary-" + runID
	runOut(t, "nft", "add", "table", "inet", canary)
	t.Cleanup(func() { _ = exec.Command("nft", "delete", "table", "inet", canary).Run() })
	net1, net2 := newNetwork(t), newNetwork(t)
	a := runWithCmd(t, net1, nil, "sh", "-c", "while true; do echo hello | nc -l -p 8080; done")
	b := runContainer(t, net2)
	aIP := a.ip(t, net1)
	b.mustNotPing(t, aIP)
	if !policyTableExists() || !hostTableExists() {
		t.Fatal("with policy on, both tables should exist")
	}

	offset := logSize()
	policyOff = true
	restartDaemon(t, "CALICO_POLICY=off")
	log := logSince(offset)
	if !strings.Contains(log, "removed nftables table inet "+nftpolicy.DefaultTable) {
		t.Errorf("the daemon does not say it removed the policy table:\n%s", log)
	}
	tables := runOut(t, "nft", "list", "tables")
	if policyTableExists() || !hostTableExists() || !strings.Contains(tables, canary) {
		t.Errorf("with policy off: want the policy table gone, the host protection table and the canary kept; nft list tables:\n%s", tables)
	}
	b.mustPing(t, aIP)
	d := runWithCmd(t, net1, nil, "sh", "-c", "while true; do echo hello | nc -l -p 8080; done")
	dIP := d.ip(t, net1)
	eventually(t, 10*time.Second, "a container started with policy off is reachable from another network", func() bool { return b.tcpReach(dIP, 8080) })

	restartDaemon(t, "CALICO_POLICY=")
	policyOff = false
	// From the moment the daemon serves: isolated, and the network's own
	// traffic flows.
	if b.tcpReach(aIP, 8080) || b.tcpReach(dIP, 8080) {
		t.Errorf("right after policy came back on, another network reached the containers")
	}
	b.mustNotPing(t, aIP)
	eventually(t, 10*time.Second, "same-network traffic flows with policy back on", func() bool { return a.ping(dIP) == nil })
	if !policyTableExists() || !strings.Contains(runOut(t, "nft", "list", "tables"), canary) {
		t.Errorf("policy on again: the policy table should be back and the canary kept")
	}
}

// TestDaemonInOwnNamespace runs a second daemon, without Docker, in a
// network namespace of the test's own whose LAN is 192.168.77.0/24: its
// default IPv4 pool avoids the LAN and the log says why; calicoctl as root
// sees it, as nobody is told to use root; its nftables tables are there,
// and --policy=off removes its policy table and nothing else.
func TestDaemonInOwnNamespace(t *testing.T) {
	begin(t)
	bin := buildCalicoctl(t)
	ns := "cale2e-" + runID
	lan := "cale2e-r-" + runID
	makeLANNamespace(t, ns, lan)
	canary := "calico-e2e-canary"
	runOut(t, "ip", "netns", "exec", ns, "nft", "add", "table", "inet", canary)

	dir, err := os.MkdirTemp("", "cale2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dataDir, pluginDir := filepath.Join(dir, "d"), filepath.Join(dir, "p")
	logPath := filepath.Join(workDir, "ns-daemon.log")
	d := &nsDaemon{t: t, ns: ns, dir: dir, dataDir: dataDir, pluginDir: pluginDir, logPath: logPath}
	start := d.start
	ctl := func(args ...string) string {
		t.Helper()
		return runOut(t, bin, append([]string{"--data-dir", dataDir}, args...)...)
	}
	nsTables := func() string { return runOut(t, "ip", "netns", "exec", ns, "nft", "list", "tables") }

	stop := start()
	log := readFile(logPath)
	want := regexp.MustCompile(`created default IP pool.*pool=default-ipv4-ippool cidr=172\.16\.0\.0/16 reason=".*192\.168\.0\.0/16 overlaps 192\.168\.77\.0/24`)
	if !want.MatchString(log) {
		t.Errorf("the daemon's log does not show the default pool moved off the LAN:\n%s", log)
	}
	if out := ctl("get", "ippools", "-o", "wide"); !strings.Contains(out, "172.16.0.0/16") || strings.Contains(out, "192.168.0.0/16") {
		t.Errorf("calicoctl get ippools:\n%s", out)
	}
	out, err := asNobody(bin, "--data-dir", dataDir, "get", "ippools")
	if err == nil || !strings.Contains(out, "permission denied") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("calicoctl as nobody: %v\n%s", err, out)
	}
	if out, err := asNobody("etcdctl", "--endpoints", "unix://"+filepath.Join(dataDir, datastore.SocketFile), "--dial-timeout=1s", "--command-timeout=2s", "put", "/x", "y"); err == nil {
		t.Errorf("etcdctl put as nobody succeeded: %s", out)
	}
	if tb := nsTables(); !strings.Contains(tb, "inet "+nftpolicy.DefaultTable+"\n") || !strings.Contains(tb, nftpolicy.DefaultHostTable) {
		t.Errorf("tables in the namespace:\n%s", tb)
	}
	stop()

	offset := len(readFile(logPath))
	stop = start("--policy=off")
	if l := readFile(logPath)[offset:]; !strings.Contains(l, "removed nftables table inet "+nftpolicy.DefaultTable) {
		t.Errorf("--policy=off does not say it removed the policy table:\n%s", l)
	}
	if tb := nsTables(); strings.Contains(tb, "inet "+nftpolicy.DefaultTable+"\n") || !strings.Contains(tb, nftpolicy.DefaultHostTable) || !strings.Contains(tb, canary) {
		t.Errorf("with --policy=off, tables in the namespace:\n%s", tb)
	}
	stop()
	start()
	if tb := nsTables(); !strings.Contains(tb, "inet "+nftpolicy.DefaultTable+"\n") || !strings.Contains(tb, canary) {
		t.Errorf("policy back on, tables in the namespace:\n%s", tb)
	}
}

// makeLANNamespace makes the namespaces ns (the daemon's host) and lan
// (its router), joined on 192.168.77.0/24 with lan as the default gateway.
func makeLANNamespace(t *testing.T, ns, lan string) {
	for _, n := range []string{ns, lan} {
		runOut(t, "ip", "netns", "add", n)
		n := n
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n).Run() })
	}
	in := func(n string, args ...string) string { return runOut(t, "ip", append([]string{"-n", n}, args...)...) }
	runOut(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "lan", "netns", lan)
	in(ns, "addr", "add", "192.168.77.2/24", "dev", "eth0")
	in(ns, "link", "set", "eth0", "up")
	in(ns, "link", "set", "lo", "up")
	in(lan, "addr", "add", "192.168.77.1/24", "dev", "lan")
	in(lan, "link", "set", "lan", "up")
	in(ns, "route", "add", "default", "via", "192.168.77.1")
}

// nsDaemon is a daemon without Docker in a namespace of the test's own.
type nsDaemon struct {
	t                                    *testing.T
	ns, dir, dataDir, pluginDir, logPath string
	mu                                   sync.Mutex
}

// start starts the daemon with extra flags, appending to its log, and
// waits until it serves; stop (also run at the test's end) stops it.
func (d *nsDaemon) start(extra ...string) (stop func()) {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	args := append([]string{"netns", "exec", d.ns, dmn.bin, "--data-dir", d.dataDir, "--plugin-dir", d.pluginDir, "--nodename", "e2e-ns-node",
		"--docker-host", "unix://" + filepath.Join(d.dir, "no-docker.sock"), "--log-level", "debug"}, extra...)
	cmd := exec.Command("ip", args...)
	cmd.Env = daemonEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	d.t.Cleanup(stop)
	eventually(d.t, 60*time.Second, "the namespace's daemon serves", func() bool {
		return activate(filepath.Join(d.pluginDir, "calico.sock")) == nil
	})
	return stop
}
