package ipam

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// The stress test runs allocators for many hosts at once against one real
// etcd: some as goroutines in this process, some in child processes (this
// test binary re-run in helper mode), as separate hosts would.
//
// Duplicate detection does not trust the allocator: after every successful
// allocation the worker creates /test/claims/<ip> in etcd only if it does not
// exist. Two holders of one address would collide on that key whichever
// processes they live in. A worker deletes its claim before it releases.

const (
	stressPool      = "10.200.0.0/24" // 16 blocks of 16: fills, forces claims and borrowing
	stressBlockSize = 28
	claimsPrefix    = "/test/claims/"
	readyPrefix     = "/test/ready/"
	goKey           = "/test/go"
	resultMarker    = "STRESS-RESULT "

	envHelper   = "IPAM_STRESS_HELPER" // set in a child: the JSON stressJob to run
	envEndpoint = "IPAM_STRESS_ETCD"
	envOps      = "IPAM_STRESS_OPS" // operations per worker, to run longer than the default

	stressTimeout = 10 * time.Minute
)

// stressJob is what one worker does.
type stressJob struct {
	Host   string `json:"host"`
	Worker string `json:"worker"` // unique per worker; prefixes its handles
	Ops    int    `json:"ops"`    // allocations + releases + assigns to attempt
	Target int    `json:"target"` // most addresses held at once
	Seed   uint64 `json:"seed"`
}

type heldAddr struct {
	IP     netip.Addr `json:"ip"`
	Handle string     `json:"handle"`
}

type stressResult struct {
	Worker     string     `json:"worker"`
	Allocs     int        `json:"allocs"`
	Borrowed   int        `json:"borrowed"`
	Assigns    int        `json:"assigns"`
	AssignBusy int        `json:"assignBusy"`
	Releases   int        `json:"releases"`
	Exhausted  int        `json:"exhausted"`
	Held       []heldAddr `json:"held"`
}

func claimKey(ip netip.Addr) string { return claimsPrefix + ip.String() }

// claim records that handle now holds ip; an existing claim means the
// allocator handed out an address that someone else still holds.
func claim(ctx context.Context, s *datastore.Store, ip netip.Addr, handle string) error {
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	k := claimKey(ip)
	res, err := s.CAS(c, []datastore.Cond{datastore.Absent(k)}, []datastore.Op{datastore.PutRaw(k, handle)}, datastore.Get(k))
	if err != nil {
		return fmt.Errorf("claim %s: %w", ip, err)
	}
	if !res.Succeeded {
		other := "?"
		if rec, ok := res.One(0); ok {
			other = string(rec.Value)
		}
		return fmt.Errorf("DUPLICATE: %s handed to %s while %s still holds it", ip, handle, other)
	}
	return nil
}

func unclaim(ctx context.Context, s *datastore.Store, ip netip.Addr, handle string) error {
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	k := claimKey(ip)
	res, err := s.Read(c, datastore.Get(k))
	if err != nil {
		return fmt.Errorf("unclaim %s: %w", ip, err)
	}
	rec, ok := res.One(0)
	if !ok || string(rec.Value) != handle {
		return fmt.Errorf("claim on %s by %s was changed by someone else", ip, handle)
	}
	tr, err := s.CAS(c, []datastore.Cond{datastore.Unchanged(k, rec.ModRevision)}, []datastore.Op{datastore.Delete(k)})
	if err != nil {
		return fmt.Errorf("unclaim %s: %w", ip, err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("claim on %s by %s was changed by someone else", ip, handle)
	}
	return nil
}

// runStressWorker allocates and releases at random, keeping at most
// job.Target addresses, and returns what it still holds at the end.
func runStressWorker(ctx context.Context, s *datastore.Store, a *Allocator, job stressJob) (stressResult, error) {
	rng := rand.New(rand.NewPCG(job.Seed, 0x5eed))
	res := stressResult{Worker: job.Worker}
	pool := netip.MustParsePrefix(stressPool)
	var held []heldAddr
	drop := func(i int) { held[i] = held[len(held)-1]; held = held[:len(held)-1] }
	// Fill up to Target first, so that the pool runs out of free blocks early
	// and borrowing and exhaustion happen even in a short run; then churn.
	filling := true

	for op := 0; op < job.Ops; op++ {
		handle := fmt.Sprintf("%s.%d", job.Worker, op)
		r := rng.IntN(100)
		switch {
		case r < 5: // a specific address, as with docker run --ip
			ip := netip.AddrFrom4([4]byte{10, 200, 0, byte(rng.IntN(256))})
			err := a.Assign(ctx, ip, handle)
			if errors.Is(err, ErrInUse) {
				res.AssignBusy++
				continue
			}
			if err != nil {
				return res, fmt.Errorf("%s: Assign(%s): %w", job.Worker, ip, err)
			}
			if err := claim(ctx, s, ip, handle); err != nil {
				return res, err
			}
			res.Assigns++
			held = append(held, heldAddr{ip, handle})

		case len(held) < job.Target && (filling || len(held) == 0 || r < 60):
			ip, err := a.Allocate(ctx, handle, Selection{Family: 4})
			if err != nil && strings.Contains(err.Error(), "exhausted") {
				res.Exhausted++
				filling = false
				continue
			}
			if err != nil {
				return res, fmt.Errorf("%s: Allocate: %w", job.Worker, err)
			}
			if !pool.Contains(ip) {
				return res, fmt.Errorf("%s: Allocate gave %s, outside pool %s", job.Worker, ip, pool)
			}
			if err := claim(ctx, s, ip, handle); err != nil {
				return res, err
			}
			a.mu.Lock()
			_, own := a.own[netip.PrefixFrom(ip, stressBlockSize).Masked()]
			a.mu.Unlock()
			if !own {
				res.Borrowed++
			}
			res.Allocs++
			held = append(held, heldAddr{ip, handle})
			filling = filling && len(held) < job.Target

		default:
			if len(held) == 0 {
				continue
			}
			i := rng.IntN(len(held))
			h := held[i]
			if err := unclaim(ctx, s, h.IP, h.Handle); err != nil {
				return res, fmt.Errorf("%s: %w", job.Worker, err)
			}
			if rng.IntN(2) == 0 {
				ok, err := a.Release(ctx, h.IP)
				if err != nil || !ok {
					return res, fmt.Errorf("%s: Release(%s) held by %s = %v, %v; want true", job.Worker, h.IP, h.Handle, ok, err)
				}
			} else {
				n, err := a.ReleaseByHandle(ctx, h.Handle)
				if err != nil || n != 1 {
					return res, fmt.Errorf("%s: ReleaseByHandle(%s) = %d, %v; want 1", job.Worker, h.Handle, n, err)
				}
			}
			if rng.IntN(10) == 0 { // Docker retries: a second release must be harmless
				if n, err := a.ReleaseByHandle(ctx, h.Handle); err != nil || n != 0 {
					return res, fmt.Errorf("%s: repeated ReleaseByHandle(%s) = %d, %v; want 0", job.Worker, h.Handle, n, err)
				}
			}
			res.Releases++
			drop(i)
		}
	}
	res.Held = held
	return res, nil
}

// TestStressHelperProcess is not a test: TestStressNoDuplicates runs this
// binary again with envHelper set, and this function is then one host.
func TestStressHelperProcess(t *testing.T) {
	spec := os.Getenv(envHelper)
	if spec == "" {
		t.Skip("helper process for TestStressNoDuplicates")
	}
	var job stressJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stressTimeout)
	defer cancel()
	s, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{os.Getenv(envEndpoint)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := New(s, job.Host, quietLog())
	if _, err := s.CAS(ctx, nil, []datastore.Op{datastore.PutRaw(readyPrefix+job.Worker, "")}); err != nil {
		t.Fatal(err)
	}
	if err := waitForKey(ctx, s, goKey); err != nil {
		t.Fatal(err)
	}
	res, err := runStressWorker(ctx, s, a, job)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", resultMarker, out)
}

func waitForKey(ctx context.Context, s *datastore.Store, key string) error {
	for {
		_, err := datastore.GetRaw(ctx, s, key)
		if err == nil {
			return nil
		}
		if !errors.Is(err, datastore.ErrNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", key, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestStressNoDuplicates(t *testing.T) {
	if os.Getenv(envHelper) != "" {
		t.Skip("in a helper process")
	}
	const (
		inProcHosts = 4 // goroutines, one allocator (host) each
		procHosts   = 4 // child processes, one host each
		target      = 32
	)
	ops := stressOps(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d ops per worker", seed, ops)

	s := setup(t, api.IPPool{Name: "stress", CIDR: stressPool, BlockSize: stressBlockSize})
	ctx, cancel := context.WithTimeout(context.Background(), stressTimeout)
	t.Cleanup(cancel)
	start := time.Now()

	// Child processes first: they take a moment to start. They wait for goKey.
	children := startStressChildren(t, ctx, s, procHosts, ops, target, seed)
	jobs, allocs := inProcessJobs(s, inProcHosts, ops, target, seed)
	waitChildrenReady(t, ctx, s, children)
	if _, err := s.CAS(ctx, nil, []datastore.Op{datastore.PutRaw(goKey, "")}); err != nil {
		t.Fatal(err)
	}
	results := runStressWorkers(t, ctx, s, jobs, allocs, children)
	churn := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}

	// What the workers say they hold.
	held, total := heldByWorkers(t, results)
	t.Logf("%d workers (%d hosts in this process, %d in child processes, 1 shared by %d goroutines): "+
		"%d allocations (%d borrowed), %d assigns, %d releases, %d exhausted, in %v",
		len(results), inProcHosts, procHosts, sharedWorkers, total.Allocs, total.Borrowed, total.Assigns, total.Releases, total.Exhausted, churn.Round(time.Millisecond))
	if len(results) != len(jobs)+len(children) {
		t.Fatalf("%d results from %d workers", len(results), len(jobs)+len(children))
	}
	if min := 8 * ops / 3; total.Allocs+total.Assigns < min || total.Releases < min/2 {
		t.Errorf("only %d allocations and %d releases: the workload did not run", total.Allocs+total.Assigns, total.Releases)
	}
	if total.Borrowed == 0 {
		t.Errorf("no allocation borrowed from another host's block: the pool never ran out of free blocks")
	}
	if total.Exhausted == 0 {
		t.Errorf("the pool never ran out: the test did not exercise exhaustion")
	}

	// etcd must agree with the workers: claims, blocks, handles, affinities.
	verifyAgainstEtcd(t, s, held)
	releaseAllOwned(t, ctx, s, held)
	verifyAgainstEtcd(t, s, map[netip.Addr]string{})
	fillPoolOnce(t, ctx, allocs["host-0"])
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// stressOps is the number of operations per worker: fewer with -short,
// IPAM_STRESS_OPS for a longer soak.
func stressOps(t *testing.T) int {
	ops := 500 // per worker: 10 workers make about 2400 allocations and 2200 releases
	if testing.Short() {
		ops = 150
	}
	if v := os.Getenv(envOps); v != "" { // a longer soak: IPAM_STRESS_OPS=5000
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number of operations per worker", envOps, v)
		}
		ops = n
	}
	return ops
}

// stressChild is one worker in a child process (one host each).
type stressChild struct {
	job    stressJob
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
}

// startStressChildren starts n child processes, each a host running one
// worker once goKey is written; they are killed at the test's end if they
// still run.
func startStressChildren(t *testing.T, ctx context.Context, s *datastore.Store, n, ops, target int, seed uint64) []*stressChild {
	var children []*stressChild
	for i := 0; i < n; i++ {
		job := stressJob{Host: fmt.Sprintf("host-p%d", i), Worker: fmt.Sprintf("host-p%d", i), Ops: ops, Target: target, Seed: seed + uint64(100+i)}
		spec, _ := json.Marshal(job)
		c := &stressChild{job: job}
		c.cmd = exec.CommandContext(ctx, os.Args[0], "-test.run=^TestStressHelperProcess$", "-test.count=1", "-test.timeout="+stressTimeout.String())
		c.cmd.Env = append(os.Environ(), envHelper+"="+string(spec), envEndpoint+"="+s.Endpoints()[0])
		c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
		if err := c.cmd.Start(); err != nil {
			t.Fatalf("start helper process: %v", err)
		}
		t.Cleanup(func() {
			if c.cmd.ProcessState == nil {
				_ = c.cmd.Process.Kill()
				_ = c.cmd.Wait()
			}
		})
		children = append(children, c)
	}
	return children
}

// inProcessJobs makes n in-process hosts with a worker each, plus one host
// whose allocator two workers share.
// sharedWorkers is how many goroutines share the one allocator of host-shared.
const sharedWorkers = 4

func inProcessJobs(s *datastore.Store, n, ops, target int, seed uint64) ([]stressJob, map[string]*Allocator) {
	var jobs []stressJob
	allocs := map[string]*Allocator{}
	for i := 0; i < n; i++ {
		h := fmt.Sprintf("host-%d", i)
		jobs = append(jobs, stressJob{Host: h, Worker: h, Ops: ops, Target: target, Seed: seed + uint64(i)})
		allocs[h] = New(s, h, quietLog())
	}
	// Several goroutines on one allocator: its calls in different blocks
	// run in parallel, those in one block take turns.
	allocs["host-shared"] = New(s, "host-shared", quietLog())
	for i := 0; i < sharedWorkers; i++ {
		jobs = append(jobs, stressJob{Host: "host-shared", Worker: fmt.Sprintf("host-shared-%d", i), Ops: ops, Target: target / sharedWorkers, Seed: seed + uint64(50+i)})
	}
	return jobs, allocs
}

// waitChildrenReady waits (a minute at most) until every child process has
// written its ready key.
func waitChildrenReady(t *testing.T, ctx context.Context, s *datastore.Store, children []*stressChild) {
	readyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		ready, err := s.Keys(readyCtx, readyPrefix)
		if err != nil {
			for _, c := range children {
				t.Logf("%s stderr:\n%s", c.job.Worker, c.stderr.String())
			}
			t.Fatalf("waiting for helper processes: %v", err)
		}
		if len(ready) == len(children) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runStressWorkers runs the in-process workers and waits for them and the
// child processes, returning every worker's result.
func runStressWorkers(t *testing.T, ctx context.Context, s *datastore.Store, jobs []stressJob, allocs map[string]*Allocator, children []*stressChild) []stressResult {
	var (
		mu      sync.Mutex
		results []stressResult
		wg      sync.WaitGroup
	)
	for _, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := runStressWorker(ctx, s, allocs[job.Host], job)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			results = append(results, res)
			mu.Unlock()
		}()
	}
	for _, c := range children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, ok := c.result(t)
			if !ok {
				return
			}
			mu.Lock()
			results = append(results, res)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return results
}

// result waits for the child process and reads the result it printed; a
// child that failed or printed none is an error of the test.
func (c *stressChild) result(t *testing.T) (stressResult, bool) {
	err := c.cmd.Wait()
	var res stressResult
	found := false
	sc := bufio.NewScanner(bytes.NewReader(c.stdout.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), resultMarker); ok {
			found = json.Unmarshal([]byte(line), &res) == nil
		}
	}
	if err != nil || !found {
		t.Errorf("helper process %s: %v (result found: %v)\nstdout:\n%s\nstderr:\n%s",
			c.job.Worker, err, found, lastLines(c.stdout.String(), 40), lastLines(c.stderr.String(), 40))
		return res, false
	}
	return res, true
}

// heldByWorkers logs each worker's counts and returns the addresses the
// workers say they hold (ip -> handle; none twice) and the totals.
func heldByWorkers(t *testing.T, results []stressResult) (map[netip.Addr]string, stressResult) {
	held := map[netip.Addr]string{}
	var total stressResult
	for _, r := range results {
		t.Logf("%-14s allocs %4d (borrowed %3d)  assigns %3d (busy %3d)  releases %4d  exhausted %4d  holding %2d",
			r.Worker, r.Allocs, r.Borrowed, r.Assigns, r.AssignBusy, r.Releases, r.Exhausted, len(r.Held))
		total.Allocs += r.Allocs
		total.Borrowed += r.Borrowed
		total.Assigns += r.Assigns
		total.Releases += r.Releases
		total.Exhausted += r.Exhausted
		for _, h := range r.Held {
			if other, dup := held[h.IP]; dup {
				t.Fatalf("DUPLICATE: %s held by %s and %s", h.IP, other, h.Handle)
			}
			held[h.IP] = h.Handle
		}
	}
	return held, total
}

// releaseAllOwned releases everything through another host's allocator,
// naming each allocation exactly (as the garbage collector does); a second
// release of the same allocation does nothing.
func releaseAllOwned(t *testing.T, ctx context.Context, s *datastore.Store, held map[netip.Addr]string) {
	cleaner := New(s, "host-cleaner", quietLog())
	snap, err := LoadSnapshot(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for ip, h := range held {
		owner := snap.Lookup(ip).Owner
		if owner == nil || owner.Handle != h {
			t.Fatalf("%s: etcd says held by %v, worker by %s", ip, owner, h)
		}
		if ok, err := cleaner.ReleaseOwned(ctx, ip, *owner, "test"); err != nil || !ok {
			t.Fatalf("ReleaseOwned(%s, %v) = %v, %v; want true", ip, owner, ok, err)
		}
		if ok, err := cleaner.ReleaseOwned(ctx, ip, *owner, "test"); err != nil || ok {
			t.Fatalf("second ReleaseOwned(%s, %v) = %v, %v; want false", ip, owner, ok, err)
		}
		if err := s.Delete(ctx, claimKey(ip)); err != nil {
			t.Fatal(err)
		}
	}
}

// fillPoolOnce checks that a host that took part (its caches went stale as
// others borrowed and released in its blocks) can now take every address
// of the pool, once, and then no more.
func fillPoolOnce(t *testing.T, ctx context.Context, a *Allocator) {
	seen := map[netip.Addr]bool{}
	for i := 0; i < 256; i++ {
		ip, err := a.Allocate(ctx, fmt.Sprintf("final.%d", i), Selection{Family: 4})
		if err != nil {
			t.Fatalf("after releasing everything, allocation %d of 256 failed: %v", i, err)
		}
		if seen[ip] {
			t.Fatalf("DUPLICATE: %s handed out twice while filling the pool", ip)
		}
		seen[ip] = true
	}
	if _, err := a.Allocate(ctx, "final.extra", Selection{Family: 4}); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Fatalf("allocation 257 from a /24: err = %v, want exhausted", err)
	}
}

// verifyAgainstEtcd checks that etcd records exactly the allocations in held
// (ip -> handle), with a handle key each, and that blocks and affinities match.
func verifyAgainstEtcd(t *testing.T, s *datastore.Store, held map[netip.Addr]string) {
	t.Helper()
	ctx := testCtx(t)
	items, err := datastore.ListRaw(ctx, s, claimsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[netip.Addr]string{}
	for _, kv := range items {
		claims[netip.MustParseAddr(strings.TrimPrefix(kv.Key, claimsPrefix))] = string(kv.Value)
	}
	if len(claims) != len(held) {
		t.Errorf("%d claim keys, %d held addresses", len(claims), len(held))
	}
	for ip, h := range held {
		if claims[ip] != h {
			t.Errorf("claim on %s is %q, worker holds it as %q", ip, claims[ip], h)
		}
	}

	blocks, err := datastore.List[api.Block](ctx, s, api.BlocksPrefix)
	if err != nil {
		t.Fatal(err)
	}
	inUse := 0
	perHost := map[string]int{}
	for _, it := range blocks {
		b := it.Value
		checkBlock(t, &b)
		perHost[b.Affinity]++
		if it.Key != api.BlockKey(b.CIDR) {
			t.Errorf("block %s stored under %s", b.CIDR, it.Key)
		}
		if n := len(b.Allocations); n != 1<<(32-stressBlockSize) {
			t.Errorf("block %s has %d slots", b.CIDR, n)
		}
		for o, h := range b.Allocations {
			if h == nil {
				continue
			}
			inUse++
			ip := b.Addr(o)
			if held[ip] != h.Handle {
				t.Errorf("etcd: %s held by %q, workers: %q", ip, h.Handle, held[ip])
			}
		}
	}
	if inUse != len(held) {
		t.Errorf("etcd blocks have %d addresses in use, workers hold %d", inUse, len(held))
	}
	if len(blocks) != 16 {
		t.Errorf("%d blocks claimed, want all 16 of the pool", len(blocks))
	}
	multi := false
	for _, n := range perHost {
		multi = multi || n > 1
	}
	if !multi {
		t.Errorf("no host claimed a second block: %v", perHost)
	}

	var wantHandles []string
	for ip, h := range held {
		wantHandles = append(wantHandles, h+"/"+ip.String())
	}
	var gotHandles []string
	for _, k := range keysUnder(t, s, api.HandlesPrefix) {
		ref, ok := api.ParseHandleKey(api.HandlesPrefix + k)
		if !ok || ref.Host == "" || !strings.HasPrefix(ref.Handle, ref.Host) {
			t.Errorf("handle key %s does not name the host that made it", k)
		}
		gotHandles = append(gotHandles, ref.Handle+"/"+ref.IP.String())
	}
	if !sameSet(gotHandles, wantHandles) {
		t.Errorf("handle keys do not match what is held: %d keys, %d held; extra %v, missing %v",
			len(gotHandles), len(wantHandles), minus(gotHandles, wantHandles), minus(wantHandles, gotHandles))
	}

	var wantAff []string
	for _, it := range blocks {
		wantAff = append(wantAff, strings.TrimPrefix(api.AffinityKey(it.Value.Affinity, it.Value.CIDR), api.AffinityPrefix))
	}
	if got := keysUnder(t, s, api.AffinityPrefix); !sameSet(got, wantAff) {
		t.Errorf("affinity keys %v do not match blocks' affinities %v", got, wantAff)
	}
}

func sameSet(a, b []string) bool {
	return len(minus(a, b)) == 0 && len(minus(b, a)) == 0 && len(a) == len(b)
}

func minus(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..." + strconv.Itoa(len(lines)-n) + " lines omitted"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
