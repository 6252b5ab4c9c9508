//go:build e2e

package faults

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// etcdOnVeth runs an etcd of the test's own on the host side of a veth pair
// into ns (net is the first three octets of a /30: net.1 the host, net.2
// the namespace), for a daemon in ns to use; it is killed at cleanup.
func etcdOnVeth(t *testing.T, ns, net string) (*exec.Cmd, string) {
	t.Helper()
	hostSide, nsSide := "cfh"+ns[4:], "cfn"+ns[4:]
	for _, args := range [][]string{
		{"link", "add", hostSide, "type", "veth", "peer", "name", nsSide, "netns", ns},
		{"addr", "add", net + ".1/30", "dev", hostSide}, {"link", "set", hostSide, "up"},
		{"-n", ns, "addr", "add", net + ".2/30", "dev", nsSide}, {"-n", ns, "link", "set", nsSide, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostSide).Run() })
	endpoint := "http://" + net + ".1:2379"
	dataDir := t.TempDir()
	start := func() *exec.Cmd {
		peer := "http://" + net + ".1:2380"
		etcd := exec.Command("etcd", "--data-dir", dataDir, "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default="+peer, "--log-level", "error")
		etcd.Stdout, etcd.Stderr = os.Stderr, os.Stderr
		if err := etcd.Start(); err != nil {
			t.Fatal(err)
		}
		return etcd
	}
	etcd := start()
	t.Cleanup(func() { stopEtcd(etcd) })
	return etcd, endpoint
}

// stopEtcd kills an etcd (stopped or not) and waits for it.
func stopEtcd(etcd *exec.Cmd) {
	if etcd.ProcessState != nil {
		return
	}
	_ = etcd.Process.Signal(syscall.SIGCONT)
	_ = etcd.Process.Kill()
	_ = etcd.Wait()
}

// restartEtcd starts etcd again on the data and addresses of one that
// stopped.
func restartEtcd(t *testing.T, old *exec.Cmd) *exec.Cmd {
	t.Helper()
	etcd := exec.Command(old.Path, old.Args[1:]...)
	etcd.Stdout, etcd.Stderr = os.Stderr, os.Stderr
	if err := etcd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopEtcd(etcd) })
	return etcd
}
