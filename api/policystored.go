package api

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Stored records: each policy resource is kept in etcd as the JSON of its
// struct, keyed by name. The daemon enforces a record only if it decodes
// with no field it does not know (a newer calicoctl's field might be meant
// to narrow a rule: ignoring it could open what it closes) and validates;
// the key's name is the resource's name.

func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("undecodable: %w", err)
	}
	if dec.More() {
		return fmt.Errorf("undecodable: data after the record")
	}
	return nil
}

// DecodeStoredProfile decodes and validates the record of Profile name.
func DecodeStoredProfile(name string, raw []byte) (Profile, error) {
	var p Profile
	if err := decodeStrict(raw, &p); err != nil {
		return Profile{}, err
	}
	p.Name = name
	p.Normalize()
	return p, p.Validate()
}

// DecodeStoredNetworkPolicy decodes and validates the record of
// NetworkPolicy name.
func DecodeStoredNetworkPolicy(name string, raw []byte) (NetworkPolicy, error) {
	var p NetworkPolicy
	if err := decodeStrict(raw, &p); err != nil {
		return NetworkPolicy{}, err
	}
	p.Name = name
	p.Normalize()
	return p, p.Validate()
}

// DecodeStoredGlobalNetworkPolicy decodes and validates the record of
// GlobalNetworkPolicy name.
func DecodeStoredGlobalNetworkPolicy(name string, raw []byte) (GlobalNetworkPolicy, error) {
	var p GlobalNetworkPolicy
	if err := decodeStrict(raw, &p); err != nil {
		return GlobalNetworkPolicy{}, err
	}
	p.Name = name
	p.Normalize()
	return p, p.Validate()
}
