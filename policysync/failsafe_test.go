package policysync

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testetcd"
	"github.com/calico-libnetwork/calico-libnetwork/policy"
)

// recorder is an Enforcer that keeps the last desired state.
type recorder struct {
	mu sync.Mutex
	ds *policy.DesiredState
	n  int
}

func (r *recorder) Apply(ds *policy.DesiredState) (fmt.Stringer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ds, r.n = ds, r.n+1
	return ds, nil
}

func (r *recorder) Resync(ds *policy.DesiredState) (fmt.Stringer, error) { return r.Apply(ds) }

func (r *recorder) last() (*policy.DesiredState, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ds, r.n
}

// chainsOf lists the policy chains of iface's ingress in the last state.
func (r *recorder) chainsOf(iface string) ([]string, bool) {
	ds, _ := r.last()
	if ds == nil {
		return nil, false
	}
	for _, e := range ds.Endpoints {
		if e.Iface == iface {
			return append(append([]string(nil), e.Ingress.Policies...), e.Ingress.Profiles...), true
		}
	}
	return nil, false
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func putJSON(t *testing.T, s *datastore.Store, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	putRaw(t, s, key, string(b))
}

func putRaw(t *testing.T, s *datastore.Store, key, raw string) {
	t.Helper()
	if _, err := s.CAS(context.Background(), nil, []datastore.Op{datastore.PutRaw(key, raw)}); err != nil {
		t.Fatal(err)
	}
}

func startSyncer(t *testing.T, s *datastore.Store, opts Options) (*Syncer, *recorder, *logBuf) {
	t.Helper()
	rec := &recorder{}
	lb := &logBuf{}
	ps := New(s, rec, "h1", slog.New(slog.NewTextHandler(lb, nil)), opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ps.Run(ctx, time.Hour) }()
	t.Cleanup(func() { cancel(); <-done })
	<-ps.Ready()
	return ps, rec, lb
}

var denyDB = api.GlobalNetworkPolicy{Name: "deny-db", PolicySpec: api.PolicySpec{
	Selector: "calico/network == 'net1'", Types: []string{"Ingress"}, Ingress: []api.Rule{{Action: api.Deny}}}}

// TestInvalidPolicyFailsSafe: an invalid or undecodable policy record
// never stops other endpoints from being enforced (or joining) and never
// opens anything: a changed resource keeps its last good version in force,
// also across a restart of the daemon; each problem is logged once with the
// resource's name; fixing or deleting the record ends it.
func TestInvalidPolicyFailsSafe(t *testing.T) {
	s := testetcd.Start(t)
	ctx := context.Background()
	putJSON(t, s, api.NetworkKey("n1"), api.Network{ID: "n1", Name: "net1"})
	putJSON(t, s, api.EndpointKey("h1", "a"), api.Endpoint{ID: "a", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.1/32"), HostIface: "calia", LabelsKnown: true})
	key := api.GlobalNetworkPolicyKey("deny-db")
	putJSON(t, s, key, denyDB)
	lastGood := filepath.Join(t.TempDir(), LastGoodFile)
	ps, rec, lb := startSyncer(t, s, Options{LastGoodFile: lastGood})
	denyChain := policy.PolicyChainName("GlobalNetworkPolicy", "deny-db", policy.Ingress)
	enforced := func() bool { c, _ := rec.chainsOf("calia"); return len(c) > 0 && c[0] == denyChain }
	waitFor(t, "deny-db enforced on calia", enforced)

	// A newer calicoctl's field: the change is not enforced, the old deny stays.
	putRaw(t, s, key, `{"name":"deny-db","selector":"calico/network == 'net1'","types":["Ingress"],"ingress":[{"action":"Allow","http":{"paths":["/x"]}}]}`)
	// A brand-new broken policy and an undecodable one: ignored.
	putRaw(t, s, api.GlobalNetworkPolicyKey("broken"), `{"name":"broken","selector":"role == ","ingress":[{"action":"Deny"}]}`)
	putRaw(t, s, api.NetworkPolicyKey("garbage"), `{not json`)
	waitFor(t, "the three problems logged", func() bool {
		return strings.Count(lb.String(), "policy resource is invalid") == 3
	})
	if !enforced() {
		c, _ := rec.chainsOf("calia")
		t.Fatalf("after an invalid change calia's chains are %v: the last good deny-db is not in force", c)
	}
	for _, want := range []string{`resource="GlobalNetworkPolicy deny-db"`, `inForce="its last good version"`, `unknown field \"http\"`,
		`resource="GlobalNetworkPolicy broken"`, `resource="NetworkPolicy garbage"`, `inForce="nothing: it has no earlier good version"`} {
		if !strings.Contains(lb.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, lb.String())
		}
	}
	if got := ps.Invalid(); len(got) != 3 {
		t.Errorf("Invalid() = %v, want the three keys", got)
	}
	// Another endpoint joins and is enforced, with its policy intact.
	ep := api.Endpoint{ID: "b", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.2/32"), HostIface: "calib", LabelsKnown: true}
	putJSON(t, s, api.EndpointKey("h1", "b"), ep)
	jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ps.EndpointJoined(jctx, ep); err != nil {
		t.Fatalf("a new endpoint cannot join while invalid policies are stored: %v", err)
	}
	if c, ok := rec.chainsOf("calib"); !ok || c[0] != denyChain {
		t.Errorf("the new endpoint's chains: %v (present %v), want deny-db first", c, ok)
	}
	// The same problems again (a resync) are not logged again.
	ps.Apply(true)
	putRaw(t, s, api.NetworkPolicyKey("garbage"), `{not json`)
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(lb.String(), "policy resource is invalid"); n != 3 {
		t.Errorf("problems logged %d times, want each once:\n%s", n, lb.String())
	}

	// A restarted daemon still enforces the last good deny-db.
	b, err := os.ReadFile(lastGood)
	if err != nil || !strings.Contains(string(b), "deny-db") {
		t.Fatalf("last good file: %v %s", err, b)
	}
	_, rec2, lb2 := startSyncer(t, s, Options{LastGoodFile: lastGood})
	waitFor(t, "after a restart deny-db's last good version enforced", func() bool {
		c, _ := rec2.chainsOf("calia")
		return len(c) > 0 && c[0] == denyChain
	})
	if !strings.Contains(lb2.String(), `inForce="its last good version"`) {
		t.Errorf("the restarted syncer does not say it keeps the last good version:\n%s", lb2.String())
	}

	// Fixed: enforced as stored, the file forgets it; deleted: gone.
	fixed := denyDB
	fixed.Selector = "calico/network == 'net2'"
	putJSON(t, s, key, fixed)
	waitFor(t, "the fixed deny-db no longer selects calia", func() bool {
		c, _ := rec.chainsOf("calia")
		return len(c) > 0 && c[0] != denyChain
	})
	waitFor(t, "the fixed resource leaves the last good file", func() bool {
		b, _ := os.ReadFile(lastGood)
		return !strings.Contains(string(b), "deny-db")
	})
	if !strings.Contains(lb.String(), "valid again") {
		t.Errorf("the fix is not logged:\n%s", lb.String())
	}
	if err := s.Delete(ctx, api.GlobalNetworkPolicyKey("broken")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a deleted invalid resource is forgotten", func() bool { return len(ps.Invalid()) == 1 })
}

// TestNoLabelWindow: while some selector looks at container labels, an
// endpoint whose labels are not known yet is held (no chains: it passes
// nothing) and is in no selector set; once they are known it gets its
// policy. Without label selectors nothing is held.
func TestNoLabelWindow(t *testing.T) {
	s := testetcd.Start(t)
	putJSON(t, s, api.NetworkKey("n1"), api.Network{ID: "n1", Name: "net1"})
	putJSON(t, s, api.EndpointKey("h1", "a"), api.Endpoint{ID: "a", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.1/32"), HostIface: "calia", LabelsKnown: true})
	ps, rec, _ := startSyncer(t, s, Options{HoldUnlabelled: true})
	ep := api.Endpoint{ID: "b", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.2/32"), HostIface: "calib"}
	putJSON(t, s, api.EndpointKey("h1", "b"), ep)
	ctx := context.Background()
	if err := ps.EndpointJoined(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if c, ok := rec.chainsOf("calib"); !ok || len(c) == 0 {
		t.Fatalf("without label selectors a new endpoint gets its profile at once: %v %v", c, ok)
	}

	deny := api.GlobalNetworkPolicy{Name: "no-untrusted-egress", PolicySpec: api.PolicySpec{
		Selector: "role == 'untrusted'", Types: []string{"Egress"}, Egress: []api.Rule{{Action: api.Deny}}}}
	putJSON(t, s, api.GlobalNetworkPolicyKey(deny.Name), deny)
	waitFor(t, "the label policy seen", func() bool {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		return len(ps.st.gnps) == 1
	})
	ep2 := api.Endpoint{ID: "c", NetworkID: "n1", Host: "h1", IPv4: netip.MustParsePrefix("10.0.0.3/32"), HostIface: "calic"}
	putJSON(t, s, api.EndpointKey("h1", "c"), ep2)
	if err := ps.EndpointJoined(ctx, ep2); err != nil {
		t.Fatal(err)
	}
	if c, ok := rec.chainsOf("calic"); !ok || len(c) != 0 {
		t.Fatalf("an endpoint with unknown labels is not held: chains %v (present %v)", c, ok)
	}
	ds, _ := rec.last()
	for _, set := range ds.Sets {
		for _, a := range set.Addrs {
			if a.String() == "10.0.0.3" {
				t.Errorf("a held endpoint is in set %s (%s)", set.Name, set.Comment)
			}
		}
	}
	// Its labels arrive: its final policy applies.
	ep2.Labels, ep2.LabelsKnown = map[string]string{"role": "untrusted", NetworkLabel: "other"}, true
	putJSON(t, s, api.EndpointKey("h1", "c"), ep2)
	waitFor(t, "the endpoint's policy once its labels are known", func() bool {
		ds, _ := rec.last()
		for _, e := range ds.Endpoints {
			if e.Iface == "calic" {
				return len(e.Egress.Policies) == 1 && len(e.Ingress.Profiles) == 1
			}
		}
		return false
	})
	// A container label cannot claim another network: calic stays out of
	// net "other"'s set and in net1's.
	ds, _ = rec.last()
	for _, set := range ds.Sets {
		for _, a := range set.Addrs {
			if a.String() == "10.0.0.3" && strings.Contains(set.Comment, "other") {
				t.Errorf("a container label put the endpoint in %s", set.Comment)
			}
		}
	}
}
