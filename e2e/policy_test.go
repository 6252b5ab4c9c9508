//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildCalicoctl builds calicoctl once per test into the suite's work dir.
func buildCalicoctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(workDir, "calicoctl")
	build := exec.Command("go", "build", "-o", bin, "./cmd/calicoctl")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build calicoctl: %v\n%s", err, out)
	}
	return bin
}

// eventually retries check for up to d: labels and policy apply within a
// second or so of a change, not instantly.
func eventually(t *testing.T, d time.Duration, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// never checks that check stays false over a few tries (a deny must
// not be a timing accident of a rule not yet applied).
func never(t *testing.T, what string, check func() bool) {
	t.Helper()
	for i := 0; i < 3; i++ {
		if check() {
			t.Fatalf("%s", what)
		}
	}
}

// TestPolicyRoles is the role example: only role=frontend may reach
// role=db, on tcp/5432 only, ICMP blocked; a lower-order Deny beats the
// Allow; deleting the policies restores the network profile; a container
// started later gets its labels and the policy applies to it.
func TestPolicyRoles(t *testing.T) {
	begin(t)
	ensureDaemon(t)
	bin := buildCalicoctl(t)
	label := func(role string) []string { return []string{"--label", "org.projectcalico.label.role=" + role} }
	net := newNetwork(t)
	db := runContainer(t, net, label("db")...)
	front := runContainer(t, net, label("frontend")...)
	other := runContainer(t, net, label("other")...)
	dbIP := db.ip(t, net)
	for _, port := range []int{5432, 8080} {
		docker(t, "exec", "-d", db.name, "sh", "-c", fmt.Sprintf("while true; do echo hello | nc -l -p %d; done", port))
	}
	// The network's profile alone: everything on the network may talk.
	eventually(t, 10*time.Second, "frontend reaches db:8080 before any policy", func() bool { return front.tcpReach(dbIP, 8080) })
	front.mustPing(t, dbIP)

	allow := `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata:
  name: db-from-frontend
spec:
  order: 100
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'frontend'
    destination:
      ports: [5432]
`
	mustCalicoctl(t, bin, allow, "apply", "-f", "-")
	t.Cleanup(func() { calicoctl(t, bin, "", "delete", "networkpolicy", "db-from-frontend") })
	eventually(t, 10*time.Second, "frontend loses db:8080 once the policy applies", func() bool { return !front.tcpReach(dbIP, 8080) })
	eventually(t, 10*time.Second, "frontend reaches db:5432 under the policy", func() bool { return front.tcpReach(dbIP, 5432) })
	front.mustNotPing(t, dbIP)
	never(t, "role=other reached db:5432", func() bool { return other.tcpReach(dbIP, 5432) })
	// Egress of db is not selected: it still reaches the others.
	db.mustPing(t, front.ip(t, net))

	// A later container gets its labels from Docker and the policy with them.
	late := runContainer(t, net, label("frontend")...)
	eventually(t, 10*time.Second, "a new role=frontend container reaches db:5432", func() bool { return late.tcpReach(dbIP, 5432) })

	deny := `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: deny-frontend-first
spec:
  order: 10
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
    source:
      selector: role == 'frontend'
`
	mustCalicoctl(t, bin, deny, "apply", "-f", "-")
	t.Cleanup(func() { calicoctl(t, bin, "", "delete", "globalnetworkpolicy", "deny-frontend-first") })
	eventually(t, 10*time.Second, "the lower-order Deny beats the Allow", func() bool { return !front.tcpReach(dbIP, 5432) })

	mustCalicoctl(t, bin, "", "delete", "globalnetworkpolicy", "deny-frontend-first")
	eventually(t, 10*time.Second, "the Allow applies again once the Deny is gone", func() bool { return front.tcpReach(dbIP, 5432) })
	mustCalicoctl(t, bin, "", "delete", "networkpolicy", "db-from-frontend")
	eventually(t, 10*time.Second, "deleting the policy restores the profile (db:8080 reachable)", func() bool { return front.tcpReach(dbIP, 8080) })
	front.mustPing(t, dbIP)
	other.mustPing(t, dbIP)
}
