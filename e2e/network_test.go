//go:build e2e

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

type netInspect struct {
	ID     string
	Driver string
	IPAM   struct {
		Driver string
		Config []struct{ Subnet, IPRange, Gateway string }
	}
	EnableIPv6 bool
}

func inspectNetwork(t testing.TB, name string) netInspect {
	t.Helper()
	var nets []netInspect
	out := docker(t, "network", "inspect", name)
	if err := json.Unmarshal([]byte(out), &nets); err != nil || len(nets) != 1 {
		t.Fatalf("decode docker network inspect %s: %v: %s", name, err, out)
	}
	return nets[0]
}

// TestNetworkCreate: `docker network create` with and without --subnet
// (and with --ip-range) makes a calico network, and a container on it gets
// a /32 from the right pool: the default pool, the --subnet, or the narrower
// --ip-range.
func TestNetworkCreate(t *testing.T) {
	begin(t)
	for _, tc := range []struct {
		name       string
		args       []string
		wantSubnet string // in docker network inspect; "" = not checked
		wantIn     string // where container addresses must come from
	}{
		{name: "default pool, no --subnet", wantIn: defaultPool},
		{name: "--subnet inside the default pool", args: []string{"--subnet", "192.168.201.0/24"}, wantSubnet: "192.168.201.0/24", wantIn: "192.168.201.0/24"},
		{name: "--subnet equal to the pool", args: []string{"--subnet", defaultPool}, wantSubnet: defaultPool, wantIn: defaultPool},
		{name: "--ip-range narrows the subnet", args: []string{"--subnet", "192.168.208.0/20", "--ip-range", "192.168.210.64/28"}, wantSubnet: "192.168.208.0/20", wantIn: "192.168.210.64/28"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := newNetwork(t, tc.args...)
			ni := inspectNetwork(t, net)
			if ni.Driver != "calico" || ni.IPAM.Driver != "calico-ipam" {
				t.Errorf("network %s: driver %q, IPAM driver %q; want calico and calico-ipam", net, ni.Driver, ni.IPAM.Driver)
			}
			if tc.wantSubnet != "" && (len(ni.IPAM.Config) == 0 || ni.IPAM.Config[0].Subnet != tc.wantSubnet) {
				t.Errorf("network %s IPAM config %+v, want subnet %s", net, ni.IPAM.Config, tc.wantSubnet)
			}
			seen := map[string]bool{}
			for i := 0; i < 2; i++ {
				c := runContainer(t, net)
				ep := c.endpoint(t, net)
				if !inPrefix(t, ep.IPAddress, tc.wantIn) {
					t.Errorf("container %s got %s, want an address in %s", c.name, ep.IPAddress, tc.wantIn)
				}
				if seen[ep.IPAddress] {
					t.Errorf("address %s handed out twice", ep.IPAddress)
				}
				seen[ep.IPAddress] = true
				if ep.IPPrefixLen != 32 {
					t.Errorf("docker reports %s/%d, want a /32", ep.IPAddress, ep.IPPrefixLen)
				}
				if got := c.exec(t, "ip", "-o", "-4", "addr", "show", "dev", "cali0"); !strings.Contains(got, "inet "+ep.IPAddress+"/32 ") {
					t.Errorf("inside %s, cali0 is %q; want inet %s/32", c.name, got, ep.IPAddress)
				}
			}
		})
	}
}

// TestNetworkCreateRejected: every flag calico cannot honour is refused at
// `docker network create` with a message that says what to do, and no
// network is left behind.
func TestNetworkCreateRejected(t *testing.T) {
	begin(t)
	calico := calicoNetArgs()
	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of docker's error
	}{
		{"non-calico IPAM driver", []string{"--driver", "calico", "--label", labelArg()},
			[]string{"--ipam-driver calico-ipam"}},
		{"--internal", append(calico, "--internal"),
			[]string{"--internal is not supported"}},
		{"--gateway", append(calico, "--subnet", "192.168.250.0/24", "--gateway", "192.168.250.1"),
			[]string{"--gateway is not supported", "169.254.1.1"}},
		{"--subnet outside every pool", append(calico, "--subnet", "10.123.0.0/16"),
			[]string{"10.123.0.0/16 is not inside any Calico IP pool", defaultPool}},
		{"unknown --ipam-opt", append(calico, "--ipam-opt", "foo=bar"),
			[]string{`unknown --ipam-opt "foo"`}},
		{"unknown -o", append(calico, "-o", "foo=bar"),
			[]string{"unknown network option(s) foo", "remove them"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := uniqueName(t, "net")
			t.Cleanup(func() { removeNetwork(t, name) })
			args := append(append([]string{"network", "create"}, tc.args...), name)
			stderr := dockerFails(t, args...)
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("docker network create %s: error %q does not say %q", strings.Join(tc.args, " "), stderr, w)
				}
			}
			if out, _, err := dockerRun("network", "inspect", name); err == nil {
				t.Errorf("rejected network %s exists anyway: %s", name, out)
			}
		})
	}
}

// TestNetworkRemove: `docker network rm` removes the network (and the
// daemon's record of it) once its containers are gone.
func TestNetworkRemove(t *testing.T) {
	begin(t)
	name := uniqueName(t, "net")
	t.Cleanup(func() { removeNetwork(t, name) })
	id := docker(t, append(append([]string{"network", "create"}, calicoNetArgs()...), "--subnet", "192.168.206.0/24", name)...)
	c := runContainer(t, name)
	ep := c.endpoint(t, name)
	if stderr := dockerFails(t, "network", "rm", name); !strings.Contains(stderr, "active endpoints") {
		t.Errorf("docker network rm with a container attached: %q, want Docker's 'active endpoints' error", stderr)
	}
	removeContainer(t, c.name)
	assertHostSideGone(t, ep)
	before := logSize()
	docker(t, "network", "rm", name)
	if out, _, err := dockerRun("network", "inspect", name); err == nil {
		t.Errorf("network %s still exists after docker network rm: %s", name, out)
	}
	if ls := docker(t, "network", "ls", "--format", "{{.Name}}"); contains(strings.Fields(ls), name) {
		t.Errorf("docker network ls still lists %s", name)
	}
	if log := logSince(before); !strings.Contains(log, `msg="network deleted"`) || !strings.Contains(log, id) {
		t.Errorf("the daemon did not log deleting network %s:\n%s", id, log)
	}
	// The name and subnet are free again.
	newNetworkNamed(t, name, "--subnet", "192.168.206.0/24")
	runContainer(t, name)
}

func newNetworkNamed(t testing.TB, name string, extra ...string) {
	t.Helper()
	args := append(append([]string{"network", "create"}, calicoNetArgs()...), extra...)
	docker(t, append(args, name)...)
	t.Cleanup(func() { removeNetwork(t, name) })
}
