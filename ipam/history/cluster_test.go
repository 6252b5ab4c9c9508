package history

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// The cluster: three etcd members (Debian's etcd binary), each in a network
// namespace of its own with two links into a switch namespace: one to the
// peers' bridge, one to the clients' bridge. The worker processes run in
// the switch namespace and talk to the members directly. Taking a member's
// peer link off its bridge cuts it off from the other members while its
// clients still reach it, as a partition of the leader would.
//
// Nothing is created in the machine's own namespace but one loopback
// listener per member, through which this test process (only it) reaches
// the members for set-up and snapshots.

const (
	peerNet   = "10.213.1." // members' peer addresses: .1 .. .3
	clientNet = "10.213.2." // members' client addresses: .1 .. .3
	switchIP  = "10.213.2.254/24"
)

type cluster struct {
	t       *testing.T
	id      string
	sw      string // the switch namespace
	data    string // members' data, on tmpfs
	logs    string
	etcd    string
	members []*member
	store   *datastore.Store // this process's client, through the proxies
	status  *clientv3.Client // for Status only
	proxies []net.Listener
	faults  faultCounts
}

type member struct {
	c         *cluster
	i         int
	name, ns  string
	clientURL string // as the workers reach it
	proxyURL  string // as this process reaches it
	dataDir   string
	logPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
	isolated  bool
	stopped   bool // SIGSTOP: a process that hangs (a long GC pause, a stuck disk)
}

// faultCounts is what the nemesis did.
type faultCounts struct {
	Kills, Restarts, LeaderKills, Isolations, Pauses, QuorumLosses int
}

func (f faultCounts) String() string {
	return fmt.Sprintf("member kills (-9) %d (of the leader %d), restarts %d, leader isolations %d, leader pauses (SIGSTOP) %d, quorum losses (two members killed) %d",
		f.Kills, f.LeaderKills, f.Restarts, f.Isolations, f.Pauses, f.QuorumLosses)
}

func (m *member) running() bool {
	if m.exited == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newCluster builds the namespaces and starts the members; everything is
// removed when the test ends.
func newCluster(t *testing.T, logs, etcdPath string) *cluster {
	id := fmt.Sprintf("chist%d", os.Getpid())
	c := &cluster{t: t, id: id, sw: id + "-sw", logs: logs, etcd: etcdPath, data: filepath.Join("/dev/shm", id)}
	t.Cleanup(c.close)
	if err := c.topology(); err != nil {
		t.Fatalf("network namespaces for the etcd cluster: %v", err)
	}
	var initial []string
	for i := 1; i <= 3; i++ {
		m := &member{c: c, i: i, name: fmt.Sprintf("m%d", i), ns: fmt.Sprintf("%s-m%d", id, i)}
		m.clientURL = fmt.Sprintf("http://%s%d:2379", clientNet, i)
		m.dataDir = filepath.Join(c.data, m.name)
		m.logPath = filepath.Join(logs, "etcd-"+m.name+".log")
		c.members = append(c.members, m)
		initial = append(initial, fmt.Sprintf("%s=http://%s%d:2380", m.name, peerNet, i))
		l, err := c.proxy(fmt.Sprintf("%s%d:2379", clientNet, i))
		if err != nil {
			t.Fatal(err)
		}
		m.proxyURL = "http://" + l.Addr().String()
	}
	for _, m := range c.members {
		if err := m.start(strings.Join(initial, ",")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var err error
	c.status, err = clientv3.New(clientv3.Config{Endpoints: c.proxyURLs(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatalf("etcd cluster did not come up: %v\n%s", err, c.logTails())
	}
	c.store, err = datastore.Connect(ctx, datastore.Config{Endpoints: c.proxyURLs()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) topology() error {
	sw := c.sw
	steps := [][]string{
		{"netns", "add", sw},
		{"-n", sw, "link", "set", "lo", "up"},
		{"-n", sw, "link", "add", "brp", "type", "bridge"},
		{"-n", sw, "link", "add", "brc", "type", "bridge"},
		{"-n", sw, "link", "set", "brp", "up"},
		{"-n", sw, "link", "set", "brc", "up"},
		{"-n", sw, "addr", "add", switchIP, "dev", "brc"},
	}
	for i := 1; i <= 3; i++ {
		ns := fmt.Sprintf("%s-m%d", c.id, i)
		p, cl := fmt.Sprintf("m%dp", i), fmt.Sprintf("m%dc", i)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", sw, "link", "add", p, "type", "veth", "peer", "name", "peer", "netns", ns},
			[]string{"-n", sw, "link", "add", cl, "type", "veth", "peer", "name", "client", "netns", ns},
			[]string{"-n", sw, "link", "set", p, "master", "brp", "up"},
			[]string{"-n", sw, "link", "set", cl, "master", "brc", "up"},
			[]string{"-n", ns, "addr", "add", fmt.Sprintf("%s%d/24", peerNet, i), "dev", "peer"},
			[]string{"-n", ns, "addr", "add", fmt.Sprintf("%s%d/24", clientNet, i), "dev", "client"},
			[]string{"-n", ns, "link", "set", "peer", "up"},
			[]string{"-n", ns, "link", "set", "client", "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) proxyURLs() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.proxyURL)
	}
	return out
}

func (c *cluster) clientURLs() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.clientURL)
	}
	return out
}

// start runs the member's etcd (again, on its data, after a kill).
func (m *member) start(initialCluster string) error {
	if err := os.MkdirAll(filepath.Dir(m.dataDir), 0o700); err != nil {
		return err
	}
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "==== start %s\n", time.Now().Format(time.RFC3339Nano))
	peer := fmt.Sprintf("http://%s%d:2380", peerNet, m.i)
	cmd := exec.Command("nsenter", "--net=/run/netns/"+m.ns, "--", m.c.etcd,
		"--name", m.name, "--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", initialCluster, "--initial-cluster-token", m.c.id, "--initial-cluster-state", "new",
		// Compaction and frequent snapshots as a long-lived cluster is
		// run: a restarted member replays a short log.
		"--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000", "--snapshot-count", "5000",
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	// nsenter execs etcd, so the PID is etcd's; it dies with this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd %s: %w", m.name, err)
	}
	m.cmd, m.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(m.exited)
	return nil
}

func (m *member) restart() error {
	var initial []string
	for _, o := range m.c.members {
		initial = append(initial, fmt.Sprintf("%s=http://%s%d:2380", o.name, peerNet, o.i))
	}
	if err := m.start(strings.Join(initial, ",")); err != nil {
		return err
	}
	m.c.faults.Restarts++
	return nil
}

// kill sends SIGKILL to the member's etcd and waits until it is gone.
func (m *member) kill() {
	if !m.running() {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
	m.stopped = false
	m.c.faults.Kills++
}

// isolate takes the member's peer link off the peers' bridge: its peers
// no longer hear it, its clients still do.
func (m *member) isolate() error {
	if err := ipCmd("-n", m.c.sw, "link", "set", fmt.Sprintf("m%dp", m.i), "nomaster"); err != nil {
		return err
	}
	m.isolated = true
	m.c.faults.Isolations++
	return nil
}

// pause stops the member's process (SIGSTOP): it keeps its connections but
// answers nothing until resumed.
func (m *member) pause() {
	if m.running() && m.cmd.Process.Signal(syscall.SIGSTOP) == nil {
		m.stopped = true
		m.c.faults.Pauses++
	}
}

func (m *member) resume() {
	if m.stopped {
		_ = m.cmd.Process.Signal(syscall.SIGCONT)
		m.stopped = false
	}
}

func (m *member) rejoin() error {
	if !m.isolated {
		return nil
	}
	if err := ipCmd("-n", m.c.sw, "link", "set", fmt.Sprintf("m%dp", m.i), "master", "brp"); err != nil {
		return err
	}
	m.isolated = false
	return nil
}

// healAll restarts every dead member and rejoins every isolated one.
func (c *cluster) healAll() error {
	for _, m := range c.members {
		m.resume()
		if err := m.rejoin(); err != nil {
			return err
		}
		if !m.running() {
			if err := m.restart(); err != nil {
				return err
			}
		}
	}
	return nil
}

// leader returns the member that says it leads (the highest term wins,
// for an isolated leader that has not stepped down yet), or nil.
func (c *cluster) leader(ctx context.Context) *member {
	var best *member
	var term uint64
	for _, m := range c.members {
		if !m.running() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := c.status.Status(cctx, m.proxyURL)
		cancel()
		if err == nil && resp.Header.MemberId == resp.Leader && resp.RaftTerm >= term {
			best, term = m, resp.RaftTerm
		}
	}
	return best
}

// waitHealthy waits until every member runs, answers and names the same
// leader, and a linearizable read succeeds.
func (c *cluster) waitHealthy(ctx context.Context) error {
	var last error
	for {
		if last = c.healthy(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *cluster) healthy(ctx context.Context) error {
	var leader uint64
	for _, m := range c.members {
		if !m.running() {
			return fmt.Errorf("%s is not running", m.name)
		}
		if m.isolated || m.stopped {
			return fmt.Errorf("%s is isolated or stopped", m.name)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := c.status.Status(cctx, m.proxyURL)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		if resp.Leader == 0 || (leader != 0 && resp.Leader != leader) {
			return fmt.Errorf("%s names leader %x, others %x", m.name, resp.Leader, leader)
		}
		leader = resp.Leader
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := c.status.Get(cctx, "health")
	return err
}

func (c *cluster) logTails() string {
	var b strings.Builder
	for _, m := range c.members {
		data, _ := os.ReadFile(m.logPath)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", m.name, m.logPath, strings.Join(lines, "\n"))
	}
	return b.String()
}

func (c *cluster) close() {
	if c.store != nil {
		c.store.Close()
	}
	if c.status != nil {
		c.status.Close()
	}
	for _, l := range c.proxies {
		l.Close()
	}
	for _, m := range c.members {
		if m.running() {
			_ = m.cmd.Process.Signal(syscall.SIGKILL)
			<-m.exited
		}
	}
	for i := 1; i <= 3; i++ {
		_ = ipCmd("netns", "del", fmt.Sprintf("%s-m%d", c.id, i))
	}
	_ = ipCmd("netns", "del", c.sw)
	_ = os.RemoveAll(c.data)
}

// proxy listens on loopback in this process's namespace and forwards each
// connection to addr as seen from the switch namespace.
func (c *cluster) proxy(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.proxies = append(c.proxies, l)
	nsPath := "/run/netns/" + c.sw
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go forward(conn, nsPath, addr)
		}
	}()
	return l, nil
}

func forward(conn net.Conn, nsPath, addr string) {
	defer conn.Close()
	up, err := dialInNetNS(nsPath, addr)
	if err != nil {
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(up, conn); up.Close() }()
	go func() { defer wg.Done(); _, _ = io.Copy(conn, up); conn.Close() }()
	wg.Wait()
}

// dialInNetNS connects to addr from the namespace at nsPath: the socket is
// made on a thread switched into it and stays there.
func dialInNetNS(nsPath, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		conn, derr := net.DialTimeout("tcp", addr, 2*time.Second)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and is discarded when this goroutine ends.
			ch <- result{conn, errors.Join(derr, fmt.Errorf("setns back: %w", err))}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{conn, derr}
	}()
	r := <-ch
	if r.err != nil && r.c != nil {
		r.c.Close()
		return nil, r.err
	}
	return r.c, r.err
}
