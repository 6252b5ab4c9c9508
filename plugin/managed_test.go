package plugin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tagged answers every request with its own name, to show where a request went.
type tagged string

func (h tagged) ServeHTTP(w http.ResponseWriter, r *http.Request) { io.WriteString(w, string(h)) }

func TestCombinedMux(t *testing.T) {
	_, c := serveOn(t, CombinedMux(tagged("network"), tagged("ipam")))
	resp, err := c.Post("http://plugin/Plugin.Activate", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string][]string
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || !slices.Equal(m["Implements"], []string{"NetworkDriver", "IpamDriver"}) {
		t.Fatalf("Activate = %v (%v), want both drivers", m, err)
	}
	for path, want := range map[string]string{
		"/IpamDriver.RequestPool":      "ipam",
		"/IpamDriver.GetCapabilities":  "ipam",
		"/NetworkDriver.CreateNetwork": "network",
		"/Calico.Version":              "network",
	} {
		resp, err := c.Post("http://plugin"+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("%s went to %q, want %q", path, b, want)
		}
	}
}

func TestCombinedMuxServesRealHandlers(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, c := serveOn(t, CombinedMux(http.NotFoundHandler(), IPAMMux(fakeIPAM{}, log)))
	resp, err := c.Post("http://plugin/IpamDriver.RequestPool", "application/json", strings.NewReader(`{"Pool":"10.0.0.0/24"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || body["PoolID"] != "p" {
		t.Fatalf("RequestPool through the combined socket: %d %v %v", resp.StatusCode, body, err)
	}
}

func TestSocketPlan(t *testing.T) {
	net, ipam := tagged("network"), tagged("ipam")
	paths := func(p []socketSpec) []string {
		var out []string
		for _, s := range p {
			out = append(out, s.Path+"="+string(s.Handler.(tagged)))
		}
		return out
	}
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"legacy daemon", Config{PluginDir: "/p"}, []string{"/p/calico.sock=network", "/p/calico-ipam.sock=ipam"}},
		{"legacy daemon with an extra dir", Config{PluginDir: "/p", LegacyDir: "/h"},
			[]string{"/h/calico.sock=network", "/h/calico-ipam.sock=ipam", "/p/calico.sock=network", "/p/calico-ipam.sock=ipam"}},
	}
	for _, tc := range tests {
		if got := paths(socketPlan(&tc.cfg, net, ipam)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: plan = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Managed plugin: the legacy names first, then one combined socket.
	plan := socketPlan(&Config{PluginDir: "/p", LegacyDir: "/h", SingleSocket: true}, net, ipam)
	if len(plan) != 3 || plan[0].Path != "/h/calico.sock" || plan[1].Path != "/h/calico-ipam.sock" || plan[2].Path != "/p/calico.sock" {
		t.Fatalf("managed plan = %+v", plan)
	}
	if _, ok := plan[2].Handler.(tagged); ok {
		t.Fatalf("the managed socket serves one driver only, want the combined mux")
	}
}

func TestListenAllCleansUpOnFailure(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "a.sock")
	plan := []socketSpec{{good, tagged("a")}, {filepath.Join(dir, "missing", strings.Repeat("x", 120), "b.sock"), tagged("b")}}
	if _, err := listenAll(plan); err == nil {
		t.Fatal("listenAll succeeded with an impossible socket path")
	}
	if _, err := listenAll([]socketSpec{{good, tagged("a")}}); err != nil {
		t.Fatalf("the first socket was left behind after the failure: %v", err)
	}
}

func TestManagedFlags(t *testing.T) {
	getenv := func(string) string { return "" }
	c, err := ParseFlags([]string{"--single-socket", "--legacy-plugin-dir=/run/docker/host-plugins", "--nodename=n"}, getenv, io.Discard)
	if err != nil || !c.SingleSocket || c.LegacyDir != "/run/docker/host-plugins" {
		t.Fatalf("ParseFlags = %+v, %v", c, err)
	}
	if _, err := ParseFlags([]string{"--legacy-plugin-dir=/run/docker/plugins/", "--nodename=n"}, getenv, io.Discard); err == nil || !strings.Contains(err.Error(), "--legacy-plugin-dir") {
		t.Fatalf("--legacy-plugin-dir equal to --plugin-dir: err = %v, want a refusal naming the flag", err)
	}
}
