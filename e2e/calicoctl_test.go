//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// calicoctl runs the calicoctl built for this suite against the daemon's
// embedded datastore (found through the data dir, as on a real host).
func calicoctl(t *testing.T, bin string, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(daemonEnv(), "CALICO_DATA_DIR="+dmn.dataDir)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustCalicoctl(t *testing.T, bin, stdin string, args ...string) string {
	t.Helper()
	out, err := calicoctl(t, bin, stdin, args...)
	if err != nil {
		t.Fatalf("calicoctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestCalicoctlWalkthrough follows the walkthrough users know from Calico:
// a cross-subnet NAT pool from legacy YAML, `get -o wide`, deleting the
// default pool, a network on the new pool, two containers, and `ipam show`
// counting them up and down again.
func TestCalicoctlWalkthrough(t *testing.T) {
	begin(t)
	ensureDaemon(t)
	bin := buildCalicoctl(t)
	const poolCIDR = "10.50.0.0/16"
	legacy := `- apiVersion: v1
  kind: ipPool
  metadata:
    cidr: 10.50.0.0/16
  spec:
    ipip:
      enabled: true
      mode: cross-subnet
    nat-outgoing: true
`
	file := filepath.Join(t.TempDir(), "new-pool-1.yaml")
	if err := os.WriteFile(file, []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	out := mustCalicoctl(t, bin, "", "create", "-f", file)
	if !strings.Contains(out, "Successfully created 1 'IPPool' resource(s)") {
		t.Fatalf("create: %s", out)
	}
	t.Cleanup(func() { calicoctl(t, bin, "", "delete", "ipPool", poolCIDR, "--force") })

	out = mustCalicoctl(t, bin, "", "get", "ipPool", "-o", "wide")
	if !regexp.MustCompile(`(?m)^NAME\s+CIDR\s+NAT\s+IPIPMODE\s+VXLANMODE\s+DISABLED\s+BLOCKSIZE\s+SELECTOR`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^\S+\s+10\.50\.0\.0/16\s+true\s+CrossSubnet\s+Never\s+false\s+26\s+all\(\)\s*$`).MatchString(out) {
		t.Fatalf("get ipPool -o wide:\n%s", out)
	}

	// The walkthrough's order: the default pool goes, then the network is
	// made on the new one. The rest of the suite needs the default pool back.
	out = mustCalicoctl(t, bin, "", "delete", "ipPool", defaultPool)
	if !strings.Contains(out, "Successfully deleted 1 'IPPool' resource(s)") {
		t.Fatalf("delete default pool: %s", out)
	}
	t.Cleanup(func() {
		restore := "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  cidr: " + defaultPool + "\n  natOutgoing: true\n"
		if out, err := calicoctl(t, bin, restore, "apply", "-f", "-"); err != nil {
			t.Errorf("restore the default pool: %v\n%s", err, out)
		}
	})

	net := newNetwork(t, "--subnet", poolCIDR)
	c1 := runContainer(t, net)
	c2 := runContainer(t, net)
	ip1, ip2 := c1.ip(t, net), c2.ip(t, net)
	for _, ip := range []string{ip1, ip2} {
		if !inPrefix(t, ip, poolCIDR) {
			t.Fatalf("container address %s is not from the new pool %s", ip, poolCIDR)
		}
	}
	c1.mustPing(t, ip2)

	inUse := func(n string) *regexp.Regexp {
		return regexp.MustCompile(`\|\s*IP Pool\s*\|\s*10\.50\.0\.0/16\s*\|\s*65536\s*\|\s*` + n + ` \(0%\)`)
	}
	if out := mustCalicoctl(t, bin, "", "ipam", "show"); !inUse("2").MatchString(out) {
		t.Fatalf("ipam show does not count the two containers:\n%s", out)
	}
	out = mustCalicoctl(t, bin, "", "ipam", "show", "--ip", ip1)
	epID := c1.endpoint(t, net).EndpointID
	if !strings.Contains(out, "IP "+ip1+" is in use") || !strings.Contains(out, epID) {
		t.Fatalf("ipam show --ip %s does not name endpoint %s:\n%s", ip1, epID, out)
	}
	out = mustCalicoctl(t, bin, "", "ipam", "show", "--show-blocks")
	if !strings.Contains(out, "10.50.0.0/26") {
		t.Fatalf("ipam show --show-blocks lacks the block in use:\n%s", out)
	}

	removeContainer(t, c1.name)
	removeContainer(t, c2.name)
	if out := mustCalicoctl(t, bin, "", "ipam", "show"); !inUse("0").MatchString(out) {
		t.Fatalf("ipam show still counts removed containers:\n%s", out)
	}
	if out, _ := calicoctl(t, bin, "", "ipam", "show", "--ip", ip1); strings.Contains(out, "is in use") {
		t.Fatalf("released address still shown in use:\n%s", out)
	}
}
