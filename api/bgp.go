package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// BGP resources in Calico's v3 form: the BGPConfiguration named default
// (the switch: BGP runs only while it exists), BGPPeer (an external peer,
// for every node, one node, or the nodes a selector picks) and the Node's
// spec.bgp (its AS number and route reflector cluster ID).

// BGPConfigName is the one BGPConfiguration's name, as in Calico.
const BGPConfigName = "default"

// DefaultASNumber is Calico's default AS for every node.
const DefaultASNumber ASNumber = 64512

// DefaultBGPPort is BGP's well-known port.
const DefaultBGPPort = 179

// ASNumber is a 4-byte AS number. It reads a number or a string, plain
// ("64512") or in asdot form ("1.10" = 1*65536+10), as Calico does.
type ASNumber uint32

// UnmarshalJSON implements json.Unmarshaler.
func (a *ASNumber) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		return nil
	}
	n, err := ParseASNumber(strings.Trim(s, `"`))
	if err != nil {
		return err
	}
	*a = n
	return nil
}

// ParseASNumber reads "64512" or "1.10".
func ParseASNumber(s string) (ASNumber, error) {
	s = strings.TrimSpace(s)
	if hi, lo, ok := strings.Cut(s, "."); ok {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("AS number %q: give a number from 1 to 4294967295 or asdot form like 1.10", s)
		}
		return ASNumber(h<<16 | l), nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("AS number %q: give a number from 1 to 4294967295 or asdot form like 1.10", s)
	}
	return ASNumber(n), nil
}

// BGPConfig is the cluster's BGP settings, stored at BGPConfigKey. BGP is
// off while the record is absent.
type BGPConfig struct {
	// LogSeverityScreen is how much the speaker logs: Debug, Info (default),
	// Warning, Error or Fatal.
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// NodeToNodeMeshEnabled: every node peers with every other (default true).
	NodeToNodeMeshEnabled *bool `json:"nodeToNodeMeshEnabled,omitempty"`
	// ASNumber is the AS of nodes that do not name their own (default 64512).
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// ListenPort is the port the speaker listens on (default 179).
	ListenPort int `json:"listenPort,omitempty"`
}

// MeshEnabled reports whether the node-to-node mesh is on.
func (c *BGPConfig) MeshEnabled() bool {
	return c.NodeToNodeMeshEnabled == nil || *c.NodeToNodeMeshEnabled
}

// ResourceKind implements Resource.
func (c *BGPConfig) ResourceKind() *Kind { return BGPConfigKind }

// ResourceName implements Resource.
func (c *BGPConfig) ResourceName() string { return BGPConfigName }

// Normalize implements Resource: defaults filled, severity spelled as Calico does.
func (c *BGPConfig) Normalize() {
	if c.ASNumber == 0 {
		c.ASNumber = DefaultASNumber
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultBGPPort
	}
	if c.NodeToNodeMeshEnabled == nil {
		on := true
		c.NodeToNodeMeshEnabled = &on
	}
	switch strings.ToLower(strings.TrimSpace(c.LogSeverityScreen)) {
	case "", "info":
		c.LogSeverityScreen = "Info"
	case "debug":
		c.LogSeverityScreen = "Debug"
	case "warning", "warn":
		c.LogSeverityScreen = "Warning"
	case "error":
		c.LogSeverityScreen = "Error"
	case "fatal":
		c.LogSeverityScreen = "Fatal"
	}
}

// Validate implements Resource.
func (c *BGPConfig) Validate() error {
	switch c.LogSeverityScreen {
	case "Debug", "Info", "Warning", "Error", "Fatal":
	default:
		return fmt.Errorf("spec.logSeverityScreen %q: use Debug, Info, Warning, Error or Fatal", c.LogSeverityScreen)
	}
	if c.ListenPort < 1 || c.ListenPort > 65535 {
		return fmt.Errorf("spec.listenPort %d: give a port between 1 and 65535 (BGP's is 179)", c.ListenPort)
	}
	return nil
}

// BGPConfigKind is the BGPConfiguration resource.
var BGPConfigKind = &Kind{
	Name:    "BGPConfiguration",
	Aliases: []string{"bgpconfigurations", "bgpconfig", "bgpconfigs"},
	decode:  decodeBGPConfig,
	encode: func(r Resource, rv string) any {
		c := r.(*BGPConfig)
		return &BGPConfigDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "BGPConfiguration"},
			Metadata: ObjectMeta{Name: BGPConfigName, ResourceVersion: rv},
			Spec:     *c,
		}
	},
}

// BGPConfigDoc is the v3 document of the BGP configuration.
type BGPConfigDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     BGPConfig  `json:"spec"`
}

func decodeBGPConfig(raw []byte, _ bool) (Object, error) {
	var d BGPConfigDoc
	if err := StrictUnmarshal(raw, &d, "a BGPConfiguration"); err != nil {
		return Object{}, err
	}
	if d.Metadata.Name != BGPConfigName {
		if d.Metadata.Name == "" {
			return Object{}, errors.New("metadata.name is missing: the BGPConfiguration is named default")
		}
		return Object{}, fmt.Errorf("metadata.name %q: only the BGPConfiguration named default is supported (per-node ones are not: give a node its AS in the Node's spec.bgp.asNumber)", d.Metadata.Name)
	}
	c := d.Spec
	return Object{Resource: &c, ResourceVersion: d.Metadata.ResourceVersion}, nil
}

// DecodeStoredBGPConfig decodes the record at BGPConfigKey as the daemon
// uses it: every field known and valid.
func DecodeStoredBGPConfig(raw []byte) (BGPConfig, error) {
	var c BGPConfig
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return BGPConfig{}, fmt.Errorf("decode BGPConfiguration: %w", err)
	}
	c.Normalize()
	return c, c.Validate()
}

// SecretKeyRef names a password the way Calico does (a Kubernetes secret
// and key); here it is the file <data dir>/bgp-secrets/<name>/<key>,
// which only root should be able to read.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// BGPPassword is a BGPPeer's MD5 password.
type BGPPassword struct {
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef"`
}

// SecretsDir is where passwords live, below the daemon's data dir.
const SecretsDir = "bgp-secrets"

// File is the password's path below dataDir.
func (p *BGPPassword) File(dataDir string) string {
	return filepath.Join(dataDir, SecretsDir, p.SecretKeyRef.Name, p.SecretKeyRef.Key)
}

var secretSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// BGPPeer is an external BGP peer (a top-of-rack router, a route
// reflector outside the cluster), stored at BGPPeerKey(Name).
type BGPPeer struct {
	Name string `json:"name"`
	// Node limits the peering to one node; NodeSelector to the nodes whose
	// labels it selects; with neither, every node peers ("global").
	Node         string `json:"node,omitempty"`
	NodeSelector string `json:"nodeSelector,omitempty"`
	// PeerIP is the peer's address, optionally with a port ("10.0.0.1:1179",
	// "[fd00::1]:1179").
	PeerIP   string       `json:"peerIP"`
	ASNumber ASNumber     `json:"asNumber"`
	Password *BGPPassword `json:"password,omitempty"`
	// KeepOriginalNextHop: routes sent to this peer keep their next hop
	// (for eBGP, where it would otherwise be this node).
	KeepOriginalNextHop bool `json:"keepOriginalNextHop,omitempty"`
	// KeepaliveTime is the keepalive interval (hold time three times it);
	// default 30s.
	KeepaliveTime string `json:"keepaliveTime,omitempty"`
	// MaxRestartTime is how long the peer keeps our routes while this
	// node's daemon restarts (graceful restart); default 120s.
	MaxRestartTime string `json:"maxRestartTime,omitempty"`
}

// ResourceKind implements Resource.
func (p *BGPPeer) ResourceKind() *Kind { return BGPPeerKind }

// ResourceName implements Resource.
func (p *BGPPeer) ResourceName() string { return p.Name }

// Normalize implements Resource.
func (p *BGPPeer) Normalize() {
	p.Name = strings.TrimSpace(p.Name)
	p.Node = strings.TrimSpace(p.Node)
	p.NodeSelector = strings.TrimSpace(p.NodeSelector)
	p.PeerIP = strings.TrimSpace(p.PeerIP)
	if ap, err := p.AddrPort(); err == nil {
		if ap.Port() == DefaultBGPPort {
			p.PeerIP = ap.Addr().String()
		} else {
			p.PeerIP = ap.String()
		}
	}
}

// AddrPort is the peer's address and port (179 when none is given).
func (p *BGPPeer) AddrPort() (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(p.PeerIP); err == nil {
		return netip.AddrPortFrom(a.Unmap(), DefaultBGPPort), nil
	}
	ap, err := netip.ParseAddrPort(p.PeerIP)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("spec.peerIP %q: give the peer's address, optionally with a port (10.0.0.1, 10.0.0.1:1179, [fd00::1]:1179)", p.PeerIP)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Keepalive and RestartTime are the peer's timers (their defaults when unset).
func (p *BGPPeer) Keepalive() time.Duration   { return durationOr(p.KeepaliveTime, 30*time.Second) }
func (p *BGPPeer) RestartTime() time.Duration { return durationOr(p.MaxRestartTime, 120*time.Second) }

func durationOr(s string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return def
}

// Selects reports whether the peering applies to node with labels.
func (p *BGPPeer) Selects(node string, labels map[string]string) bool {
	switch {
	case p.Node != "":
		return p.Node == node
	case p.NodeSelector != "":
		sel, err := ParseSelector(p.NodeSelector)
		return err == nil && sel.Matches(labels)
	}
	return true
}

// Scope is how calicoctl node status names the peering: "global" or
// "node specific".
func (p *BGPPeer) Scope() string {
	if p.Node == "" && p.NodeSelector == "" {
		return "global"
	}
	return "node specific"
}

// Validate implements Resource.
func (p *BGPPeer) Validate() error {
	if p.Name == "" {
		return errors.New("metadata.name: a BGPPeer needs a name")
	}
	if len(p.Name) > 253 || strings.ContainsAny(p.Name, "/ \t\n") {
		return fmt.Errorf("metadata.name %q: use a name without '/' or spaces", p.Name)
	}
	if p.PeerIP == "" {
		return errors.New("spec.peerIP is missing: give the peer's address (e.g. 10.0.0.1)")
	}
	if _, err := p.AddrPort(); err != nil {
		return err
	}
	if p.ASNumber == 0 {
		return errors.New("spec.asNumber is missing: give the peer's AS number (e.g. 64512 for iBGP with the default AS)")
	}
	if p.Node != "" && p.NodeSelector != "" {
		return errors.New("spec.node and spec.nodeSelector both given: use one (node for one node, nodeSelector for several, neither for all)")
	}
	if p.NodeSelector != "" {
		if _, err := ParseSelector(p.NodeSelector); err != nil {
			return fmt.Errorf("spec.nodeSelector: %w", err)
		}
	}
	for _, t := range []struct{ field, val string }{{"spec.keepaliveTime", p.KeepaliveTime}, {"spec.maxRestartTime", p.MaxRestartTime}} {
		if t.val == "" {
			continue
		}
		if d, err := time.ParseDuration(t.val); err != nil || d < time.Second || d > 65535*time.Second {
			return fmt.Errorf("%s %q: give a duration from 1s to 18h (e.g. 30s)", t.field, t.val)
		}
	}
	if pw := p.Password; pw != nil {
		ref := pw.SecretKeyRef
		if ref == nil {
			return errors.New("spec.password: give secretKeyRef {name, key}: the password is read from <data dir>/bgp-secrets/<name>/<key>")
		}
		if !secretSegment.MatchString(ref.Name) || !secretSegment.MatchString(ref.Key) || ref.Name == ".." || ref.Key == ".." {
			return fmt.Errorf("spec.password.secretKeyRef {name: %q, key: %q}: name and key are file names (letters, digits, '.', '_', '-'): the password is read from <data dir>/bgp-secrets/<name>/<key>", ref.Name, ref.Key)
		}
	}
	return nil
}

// BGPPeerKind is the BGPPeer resource.
var BGPPeerKind = &Kind{
	Name:    "BGPPeer",
	Aliases: []string{"bgppeers", "bgpp", "bgpps", "bp", "bps"},
	decode:  decodeBGPPeer,
	encode: func(r Resource, rv string) any {
		p := r.(*BGPPeer)
		return &BGPPeerDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "BGPPeer"},
			Metadata: ObjectMeta{Name: p.Name, ResourceVersion: rv},
			Spec: BGPPeerSpec{Node: p.Node, NodeSelector: p.NodeSelector, PeerIP: p.PeerIP, ASNumber: p.ASNumber, Password: p.Password,
				KeepOriginalNextHop: p.KeepOriginalNextHop, KeepaliveTime: p.KeepaliveTime, MaxRestartTime: p.MaxRestartTime},
		}
	},
}

// BGPPeerDoc is the v3 document of a BGPPeer.
type BGPPeerDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec is its spec: the record without its name.
type BGPPeerSpec struct {
	Node                string       `json:"node,omitempty"`
	NodeSelector        string       `json:"nodeSelector,omitempty"`
	PeerIP              string       `json:"peerIP"`
	ASNumber            ASNumber     `json:"asNumber"`
	Password            *BGPPassword `json:"password,omitempty"`
	KeepOriginalNextHop bool         `json:"keepOriginalNextHop,omitempty"`
	KeepaliveTime       string       `json:"keepaliveTime,omitempty"`
	MaxRestartTime      string       `json:"maxRestartTime,omitempty"`
}

func decodeBGPPeer(raw []byte, _ bool) (Object, error) {
	var d BGPPeerDoc
	if err := StrictUnmarshal(raw, &d, "a BGPPeer"); err != nil {
		return Object{}, err
	}
	s := d.Spec
	return Object{Resource: &BGPPeer{Name: d.Metadata.Name, Node: s.Node, NodeSelector: s.NodeSelector, PeerIP: s.PeerIP, ASNumber: s.ASNumber,
		Password: s.Password, KeepOriginalNextHop: s.KeepOriginalNextHop, KeepaliveTime: s.KeepaliveTime, MaxRestartTime: s.MaxRestartTime},
		ResourceVersion: d.Metadata.ResourceVersion}, nil
}

// validateNodeBGP checks a Node's BGP settings.
func validateNodeBGP(n *Node) error {
	if n.RouteReflectorClusterID != "" {
		a, err := netip.ParseAddr(n.RouteReflectorClusterID)
		if err != nil || !a.Is4() {
			return fmt.Errorf("spec.bgp.routeReflectorClusterID %q: give a cluster ID in IPv4 address form (e.g. 224.0.0.1)", n.RouteReflectorClusterID)
		}
	}
	if err := ValidateLabels("metadata.labels", n.Labels); err != nil {
		return err
	}
	return nil
}
