package api

import (
	"errors"
	"fmt"
)

// IPAMConfigName is the one IPAM configuration's name, as in Calico.
const IPAMConfigName = "default"

// IPAMConfig holds datastore-wide IPAM settings, stored at
// datastore.ConfigKey. When the key is absent DefaultIPAMConfig applies.
type IPAMConfig struct {
	// StrictAffinity forbids borrowing addresses from another host's block.
	StrictAffinity bool `json:"strictAffinity"`
	// AutoAllocateBlocks lets a host claim new blocks as it needs them.
	AutoAllocateBlocks bool `json:"autoAllocateBlocks"`
	// MaxBlocksPerHost caps the blocks one host may claim; 0 means no cap.
	MaxBlocksPerHost int `json:"maxBlocksPerHost,omitempty"`
}

// DefaultIPAMConfig is the configuration in force when none is stored.
func DefaultIPAMConfig() IPAMConfig { return IPAMConfig{AutoAllocateBlocks: true} }

// ResourceKind implements Resource.
func (c *IPAMConfig) ResourceKind() *Kind { return IPAMConfigKind }

// ResourceName implements Resource: there is only one, "default".
func (c *IPAMConfig) ResourceName() string { return IPAMConfigName }

// Normalize implements Resource.
func (c *IPAMConfig) Normalize() {}

// Validate implements Resource.
func (c *IPAMConfig) Validate() error {
	if c.MaxBlocksPerHost < 0 {
		return fmt.Errorf("spec.maxBlocksPerHost %d: use 0 (no limit) or a positive number", c.MaxBlocksPerHost)
	}
	return nil
}

// IPAMConfigKind is the IPAMConfiguration resource (Calico's kind name;
// "IPAMConfig" is accepted too).
var IPAMConfigKind = &Kind{
	Name:    "IPAMConfiguration",
	Aliases: []string{"ipamconfigurations", "ipamconfig", "ipamconfigs"},
	decode:  decodeIPAMConfig,
	encode: func(r Resource, rv string) any {
		c := r.(*IPAMConfig)
		auto := c.AutoAllocateBlocks
		return &IPAMConfigDoc{
			TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: "IPAMConfiguration"},
			Metadata: ObjectMeta{Name: IPAMConfigName, ResourceVersion: rv},
			Spec:     IPAMConfigSpec{StrictAffinity: c.StrictAffinity, AutoAllocateBlocks: &auto, MaxBlocksPerHost: c.MaxBlocksPerHost},
		}
	},
}

// IPAMConfigDoc is the v3 document of the IPAM configuration.
type IPAMConfigDoc struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta     `json:"metadata"`
	Spec     IPAMConfigSpec `json:"spec"`
}

// IPAMConfigSpec is its spec; autoAllocateBlocks defaults to true.
type IPAMConfigSpec struct {
	StrictAffinity     bool  `json:"strictAffinity"`
	AutoAllocateBlocks *bool `json:"autoAllocateBlocks,omitempty"`
	MaxBlocksPerHost   int   `json:"maxBlocksPerHost,omitempty"`
}

func decodeIPAMConfig(raw []byte, legacy bool) (Object, error) {
	var d IPAMConfigDoc
	if err := StrictUnmarshal(raw, &d, "an IPAMConfiguration"); err != nil {
		return Object{}, err
	}
	if d.Metadata.Name != IPAMConfigName {
		if d.Metadata.Name == "" {
			return Object{}, errors.New("metadata.name is missing: the IPAM configuration is named default")
		}
		return Object{}, fmt.Errorf("metadata.name %q: the IPAM configuration is named default, there is no other", d.Metadata.Name)
	}
	c := DefaultIPAMConfig()
	c.StrictAffinity = d.Spec.StrictAffinity
	c.MaxBlocksPerHost = d.Spec.MaxBlocksPerHost
	if d.Spec.AutoAllocateBlocks != nil {
		c.AutoAllocateBlocks = *d.Spec.AutoAllocateBlocks
	}
	return Object{Resource: &c, ResourceVersion: d.Metadata.ResourceVersion}, nil
}
