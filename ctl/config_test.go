package ctl

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

func TestConfigFile(t *testing.T) {
	h := newHarness(t)
	h.addPool("p1", "10.10.0.0/16", 26)
	ep := h.store.Endpoints()[0]
	delete(h.env, "ETCD_ENDPOINTS")

	v3 := "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\nspec:\n  datastoreType: etcdv3\n  etcdEndpoints: " + ep + "\n"
	legacy := "apiVersion: v1\nkind: calicoApiConfig\nmetadata:\nspec:\n  datastoreType: \"etcdv2\"\n  etcdEndpoints: \"" + ep + "\"\n"
	for name, cfg := range map[string]string{"v3": v3, "legacy": legacy} {
		f := writeFile(t, name+".cfg", cfg)
		if out := h.ok("", "--config", f, "get", "ippool"); !strings.Contains(out, "p1") {
			t.Errorf("%s config: %q", name, out)
		}
	}
	// The default file is used when it exists, before the environment.
	if err := os.WriteFile(h.cfgFile, []byte(v3), 0o644); err != nil {
		t.Fatal(err)
	}
	h.env["ETCD_ENDPOINTS"] = "http://127.0.0.1:1"
	if out := h.ok("", "get", "ippool"); !strings.Contains(out, "p1") {
		t.Errorf("default config file not used: %q", out)
	}
	os.Remove(h.cfgFile)
	delete(h.env, "ETCD_ENDPOINTS")

	for _, c := range []struct{ cfg, want string }{
		{strings.Replace(v3, "etcdv3", "kubernetes", 1), `spec.datastoreType "kubernetes" is not supported: use etcdv3`},
		{v3 + "  etcdUsername: me\n", "unknown field spec.etcdUsername: a CalicoAPIConfig spec has only datastoreType, etcdEndpoints, etcdCACertFile, etcdCertFile, etcdKeyFile"},
		{strings.Replace(v3, "CalicoAPIConfig", "IPPool", 1), `expected apiVersion projectcalico.org/v3 and kind CalicoAPIConfig, got apiVersion "projectcalico.org/v3" kind "IPPool"`},
		{v3 + "  etcdCACertFile: /nonexistent/ca.pem\n", "/nonexistent/ca.pem"},
		{"spec: [\n", "is not valid YAML"},
	} {
		f := writeFile(t, "bad.cfg", c.cfg)
		h.fail("", []string{"--config", f, "get", "ippool"}, c.want)
	}
	h.fail("", []string{"--config", "/nonexistent.cfg", "get", "ippool"}, "read calicoctl config: open /nonexistent.cfg")
	h.env["DATASTORE_TYPE"] = "kubernetes"
	h.fail("", []string{"get", "ippool"}, "DATASTORE_TYPE=kubernetes is not supported")
}

// TestEmbeddedDatastore: with no config file and no ETCD_ENDPOINTS the local
// daemon's embedded etcd is found through its data dir.
func TestEmbeddedDatastore(t *testing.T) {
	h := newHarness(t)
	h.addPool("p1", "10.10.0.0/16", 26)
	delete(h.env, "ETCD_ENDPOINTS")
	if err := os.WriteFile(filepath.Join(h.dataDir, datastore.EndpointFile), []byte(h.store.Endpoints()[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := h.ok("", "get", "ippool"); !strings.Contains(out, "p1") {
		t.Errorf("embedded datastore not found: %q", out)
	}
	other := t.TempDir()
	h.env["CALICO_DATA_DIR"] = other
	h.fail("", []string{"get", "ippool"}, "no datastore configured", "no local daemon's embedded etcd is recorded in "+filepath.Join(other, datastore.EndpointFile))
	if out := h.ok("", "--data-dir", h.dataDir, "get", "ippool"); !strings.Contains(out, "p1") {
		t.Errorf("--data-dir not used: %q", out)
	}
}

// TestUnreachableDatastore: one clear line, quickly.
func TestUnreachableDatastore(t *testing.T) {
	h := newHarness(t)
	defer func(d time.Duration) { connectTimeout = d }(connectTimeout)
	connectTimeout = time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	h.env["ETCD_ENDPOINTS"] = dead
	start := time.Now()
	h.fail("", []string{"get", "ippool"}, "cannot reach the datastore: etcd at "+dead+" (from ETCD_ENDPOINTS) does not answer")
	if d := time.Since(start); d > 3*connectTimeout {
		t.Errorf("took %s to give up", d)
	}
	// A recorded embedded etcd that is gone points at the daemon.
	delete(h.env, "ETCD_ENDPOINTS")
	if err := os.WriteFile(filepath.Join(h.dataDir, datastore.EndpointFile), []byte(dead+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.fail("", []string{"ipam", "show"}, "the local daemon's embedded etcd at "+dead, "is calico-libnetwork running?")
}
