package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// FelixConfigName is the one host-protection configuration's name, as
// Calico names its cluster-wide FelixConfiguration.
const FelixConfigName = "default"

// EndpointToHostAction is what happens to a connection a container opens to
// its own host (Calico's DefaultEndpointToHostAction).
type EndpointToHostAction string

// The actions. Drop is the default. Accept and Return both leave the
// packet to the endpoint's egress policy (as in Calico, it is applied
// first) and to the host's own firewall: in nftables every table judges a
// packet, so there is no difference between them here.
const (
	ActionDrop   EndpointToHostAction = "Drop"
	ActionAccept EndpointToHostAction = "Accept"
	ActionReturn EndpointToHostAction = "Return"
)

// ProtoPort is one port of one protocol, Calico's form ({protocol: TCP, port: 22}).
type ProtoPort struct {
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
}

func (p ProtoPort) String() string { return fmt.Sprintf("%s/%d", strings.ToLower(p.Protocol), p.Port) }

// FelixConfig holds the datastore-wide host-protection settings, stored at
// datastore.FelixConfigKey (calicoctl kind FelixConfiguration, name
// default). When the key is absent DefaultFelixConfig applies.
type FelixConfig struct {
	// DefaultEndpointToHostAction: Drop (default), Accept or Return.
	DefaultEndpointToHostAction EndpointToHostAction `json:"defaultEndpointToHostAction,omitempty"`
	// EndpointToHostAllowedPorts are ports of this host that containers may
	// open connections to whatever the action. The etcd client and peer
	// ports are closed to containers unless they are listed here.
	EndpointToHostAllowedPorts []ProtoPort `json:"endpointToHostAllowedPorts,omitempty"`
}

// DefaultFelixConfig is the configuration in force when none is stored.
func DefaultFelixConfig() FelixConfig { return FelixConfig{DefaultEndpointToHostAction: ActionDrop} }

// ResourceKind implements Resource.
func (c *FelixConfig) ResourceKind() *Kind { return FelixConfigKind }

// ResourceName implements Resource: there is only one, "default".
func (c *FelixConfig) ResourceName() string { return FelixConfigName }

// Normalize implements Resource: canonical spelling of the action (any
// case is accepted, as Calico accepts DROP) and of protocols, ports sorted
// and without repeats.
func (c *FelixConfig) Normalize() {
	switch strings.ToLower(string(c.DefaultEndpointToHostAction)) {
	case "", "drop":
		c.DefaultEndpointToHostAction = ActionDrop
	case "accept":
		c.DefaultEndpointToHostAction = ActionAccept
	case "return":
		c.DefaultEndpointToHostAction = ActionReturn
	}
	for i := range c.EndpointToHostAllowedPorts {
		c.EndpointToHostAllowedPorts[i].Protocol = strings.ToUpper(strings.TrimSpace(c.EndpointToHostAllowedPorts[i].Protocol))
	}
	sort.Slice(c.EndpointToHostAllowedPorts, func(i, j int) bool {
		a, b := c.EndpointToHostAllowedPorts[i], c.EndpointToHostAllowedPorts[j]
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		return a.Port < b.Port
	})
	out := c.EndpointToHostAllowedPorts[:0]
	for i, p := range c.EndpointToHostAllowedPorts {
		if i == 0 || p != c.EndpointToHostAllowedPorts[i-1] {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		out = nil
	}
	c.EndpointToHostAllowedPorts = out
}

// Validate implements Resource.
func (c *FelixConfig) Validate() error {
	switch c.DefaultEndpointToHostAction {
	case ActionDrop, ActionAccept, ActionReturn:
	default:
		return fmt.Errorf("spec.defaultEndpointToHostAction %q: use Drop, Accept or Return", c.DefaultEndpointToHostAction)
	}
	for i, p := range c.EndpointToHostAllowedPorts {
		switch p.Protocol {
		case "TCP", "UDP", "SCTP":
		default:
			return fmt.Errorf("spec.endpointToHostAllowedPorts[%d].protocol %q: use TCP, UDP or SCTP", i, p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("spec.endpointToHostAllowedPorts[%d].port %d: give a port between 1 and 65535", i, p.Port)
		}
	}
	return nil
}

// Allows reports whether port of protocol proto ("TCP") is listed.
func (c *FelixConfig) Allows(proto string, port int) bool {
	for _, p := range c.EndpointToHostAllowedPorts {
		if strings.EqualFold(p.Protocol, proto) && p.Port == port {
			return true
		}
	}
	return false
}

// DecodeStoredFelixConfig decodes the record at datastore.FelixConfigKey as
// the daemon enforces it: every field must be known (a setting it does not
// understand might have been meant to close something) and valid.
func DecodeStoredFelixConfig(raw []byte) (FelixConfig, error) {
	c := DefaultFelixConfig()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return FelixConfig{}, fmt.Errorf("decode FelixConfiguration: %w", err)
	}
	c.Normalize()
	if err := c.Validate(); err != nil {
		return FelixConfig{}, err
	}
	return c, nil
}

// FelixConfigKind is the FelixConfiguration resource (only the host
// protection settings of Calico's kind are known).
var FelixConfigKind = &Kind{
	Name:    "FelixConfiguration",
	Aliases: []string{"felixconfigurations", "felixconfig", "felixconfigs"},
	decode:  decodeFelixConfig,
	encode: func(r Resource, rv string) any {
		c := r.(*FelixConfig)
		return &FelixConfigDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "FelixConfiguration"},
			Metadata: ObjectMeta{Name: FelixConfigName, ResourceVersion: rv},
			Spec:     FelixConfigSpec{DefaultEndpointToHostAction: c.DefaultEndpointToHostAction, EndpointToHostAllowedPorts: c.EndpointToHostAllowedPorts},
		}
	},
}

// FelixConfigDoc is the v3 document of the host-protection configuration.
type FelixConfigDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta      `json:"metadata"`
	Spec     FelixConfigSpec `json:"spec"`
}

// FelixConfigSpec is its spec.
type FelixConfigSpec struct {
	DefaultEndpointToHostAction EndpointToHostAction `json:"defaultEndpointToHostAction,omitempty"`
	EndpointToHostAllowedPorts  []ProtoPort          `json:"endpointToHostAllowedPorts,omitempty"`
}

func decodeFelixConfig(raw []byte, _ bool) (Object, error) {
	var d FelixConfigDoc
	if err := StrictUnmarshal(raw, &d, "a FelixConfiguration"); err != nil {
		return Object{}, err
	}
	if d.Metadata.Name != FelixConfigName {
		if d.Metadata.Name == "" {
			return Object{}, errors.New("metadata.name is missing: the FelixConfiguration is named default")
		}
		return Object{}, fmt.Errorf("metadata.name %q: only the FelixConfiguration named default is supported (per-node ones are not)", d.Metadata.Name)
	}
	return Object{Resource: &FelixConfig{DefaultEndpointToHostAction: d.Spec.DefaultEndpointToHostAction, EndpointToHostAllowedPorts: d.Spec.EndpointToHostAllowedPorts},
		ResourceVersion: d.Metadata.ResourceVersion}, nil
}
