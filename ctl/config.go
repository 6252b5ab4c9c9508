package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Defaults, as in Calico.
const (
	DefaultConfigFile = "/etc/calico/calicoctl.cfg"
	DefaultDataDir    = "/var/lib/calico"
	DefaultPluginDir  = "/run/docker/plugins"
)

// connectTimeout bounds reaching the datastore: a CLI should not hang.
var connectTimeout = 5 * time.Second

// dsConfig is where the datastore is and how the user said so.
type dsConfig struct {
	datastore.Config
	source   string // for messages: "from ETCD_ENDPOINTS"
	embedded bool
}

func (c dsConfig) describe() string {
	return fmt.Sprintf("etcdv3 at %s (%s)", strings.Join(c.Endpoints, ","), c.source)
}

// apiConfigDoc is /etc/calico/calicoctl.cfg, in its current form (kind
// CalicoAPIConfig, apiVersion projectcalico.org/v3) or its legacy one (kind
// calicoApiConfig, apiVersion v1).
type apiConfigDoc struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   *struct {
		Name string `json:"name,omitempty"`
	} `json:"metadata,omitempty"`
	Spec struct {
		DatastoreType  string `json:"datastoreType"`
		EtcdEndpoints  string `json:"etcdEndpoints"`
		EtcdCACertFile string `json:"etcdCACertFile"`
		EtcdCertFile   string `json:"etcdCertFile"`
		EtcdKeyFile    string `json:"etcdKeyFile"`
	} `json:"spec"`
}

// resolveConfig finds the datastore: the config file (--config, or the
// default one when it exists), else the ETCD_* environment variables, else
// the embedded etcd of the local daemon recorded in --data-dir.
func (a *app) resolveConfig() (dsConfig, error) {
	path := a.configFile
	if path == "" {
		path = a.env.DefaultConfigFile
		if _, err := os.Stat(path); err != nil {
			path = ""
		}
	}
	if path != "" {
		c, err := loadConfigFile(path)
		if err != nil {
			return dsConfig{}, err
		}
		if len(c.Endpoints) > 0 {
			return c, nil
		}
	}
	if t := a.env.Getenv("DATASTORE_TYPE"); t != "" && t != "etcdv3" {
		return dsConfig{}, fmt.Errorf("DATASTORE_TYPE=%s is not supported: use etcdv3, or unset it", t)
	}
	if eps := splitList(a.env.Getenv("ETCD_ENDPOINTS")); len(eps) > 0 {
		return dsConfig{Config: datastore.Config{
			Endpoints:  eps,
			CACertFile: a.env.Getenv("ETCD_CA_CERT_FILE"),
			CertFile:   a.env.Getenv("ETCD_CERT_FILE"),
			KeyFile:    a.env.Getenv("ETCD_KEY_FILE"),
		}, source: "from ETCD_ENDPOINTS"}, nil
	}
	rec := filepath.Join(a.dataDir, datastore.EndpointFile)
	ep, err := datastore.ReadEmbeddedEndpoint(a.dataDir)
	if errors.Is(err, datastore.ErrRootOnly) {
		return dsConfig{}, fmt.Errorf("permission denied: the local daemon's datastore (%s) is root's alone: run calicoctl as root (sudo calicoctl ...)", a.dataDir)
	}
	if err != nil {
		return dsConfig{}, err
	}
	if ep == "" {
		return dsConfig{}, fmt.Errorf("no datastore configured: no etcdEndpoints in %s, ETCD_ENDPOINTS is not set, and no local daemon's embedded etcd is recorded in %s (is calico-libnetwork running? give its --data-dir if it is not %s)",
			a.configName(), rec, DefaultDataDir)
	}
	return dsConfig{Config: datastore.Config{Endpoints: []string{ep}}, source: "embedded etcd of the local daemon, recorded in " + rec, embedded: true}, nil
}

func (a *app) configName() string {
	if a.configFile != "" {
		return a.configFile
	}
	return a.env.DefaultConfigFile
}

func loadConfigFile(path string) (dsConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return dsConfig{}, fmt.Errorf("read calicoctl config: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return dsConfig{}, fmt.Errorf("calicoctl config %s is not valid YAML: %v", path, strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	var d apiConfigDoc
	if err := api.StrictUnmarshal(j, &d, "a CalicoAPIConfig"); err != nil {
		return dsConfig{}, fmt.Errorf("calicoctl config %s: %w", path, err)
	}
	switch {
	case d.APIVersion == "projectcalico.org/v3" && d.Kind == "CalicoAPIConfig":
		switch d.Spec.DatastoreType {
		case "", "etcdv3":
		default:
			return dsConfig{}, fmt.Errorf("calicoctl config %s: spec.datastoreType %q is not supported: use etcdv3", path, d.Spec.DatastoreType)
		}
	case d.APIVersion == "v1" && strings.EqualFold(d.Kind, "calicoApiConfig"):
		// The legacy form named the same etcd with etcdv2; this project
		// speaks etcd's v3 API to it.
		switch d.Spec.DatastoreType {
		case "", "etcdv2", "etcdv3":
		default:
			return dsConfig{}, fmt.Errorf("calicoctl config %s: spec.datastoreType %q is not supported: use etcdv3", path, d.Spec.DatastoreType)
		}
	default:
		return dsConfig{}, fmt.Errorf("calicoctl config %s: expected apiVersion projectcalico.org/v3 and kind CalicoAPIConfig, got apiVersion %q kind %q", path, d.APIVersion, d.Kind)
	}
	return dsConfig{Config: datastore.Config{
		Endpoints:  splitList(d.Spec.EtcdEndpoints),
		CACertFile: d.Spec.EtcdCACertFile,
		CertFile:   d.Spec.EtcdCertFile,
		KeyFile:    d.Spec.EtcdKeyFile,
	}, source: "from " + path}, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// open connects to the datastore once per command.
func (a *app) open(ctx context.Context) (*datastore.Store, error) {
	if a.store != nil {
		return a.store, nil
	}
	c, err := a.resolveConfig()
	if err != nil {
		return nil, err
	}
	a.ds = c
	if err := datastore.CheckEndpointSchemes(c.Endpoints, c.CACertFile, c.CertFile, c.KeyFile); err != nil {
		return nil, fmt.Errorf("datastore %s: %w", c.source, err)
	}
	c.Timeout = connectTimeout
	s, err := datastore.Connect(ctx, c.Config)
	if err != nil {
		if strings.HasPrefix(err.Error(), "etcd TLS files") {
			return nil, fmt.Errorf("datastore %s: %s", c.source, strings.TrimPrefix(err.Error(), "etcd TLS files (--etcd-ca-cert-file, --etcd-cert-file, --etcd-key-file): "))
		}
		cause := err
		for errors.Unwrap(cause) != nil {
			cause = errors.Unwrap(cause)
		}
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(cause.Error(), "deadline exceeded") {
			cause = fmt.Errorf("no answer within %s", connectTimeout)
		}
		if c.embedded {
			return nil, fmt.Errorf("cannot reach the datastore: the local daemon's embedded etcd at %s (recorded in %s) does not answer: is calico-libnetwork running? (%v)",
				c.Endpoints[0], filepath.Join(a.dataDir, datastore.EndpointFile), cause)
		}
		return nil, fmt.Errorf("cannot reach the datastore: etcd at %s (%s) does not answer: %v", strings.Join(c.Endpoints, ","), c.source, cause)
	}
	a.store = s
	return s, nil
}
