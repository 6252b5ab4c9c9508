package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// NATChain holds the masquerade rules for pools with natOutgoing.
const NATChain = "CALICO-LIBNETWORK-NAT"

var natJump = []string{"-m", "comment", "--comment", "calico-libnetwork", "-j", NATChain}

// natRules renders the wanted rules: traffic from a NAT pool to any pool is
// left alone, everything else from it is masqueraded. Host traffic never
// matches (its source is in no pool).
func natRules(natPools, allPools []netip.Prefix, v6 bool) [][]string {
	var rules [][]string
	for _, p := range natPools {
		if p.Addr().Is6() != v6 {
			continue
		}
		for _, q := range allPools {
			if q.Addr().Is6() != v6 {
				continue
			}
			rules = append(rules, []string{"-s", p.String(), "-d", q.String(), "-m", "comment", "--comment", "calico-libnetwork: pool to pool", "-j", "RETURN"})
		}
	}
	for _, p := range natPools {
		if p.Addr().Is6() != v6 {
			continue
		}
		rules = append(rules, []string{"-s", p.String(), "-m", "comment", "--comment", "calico-libnetwork: nat outgoing", "-j", "MASQUERADE"})
	}
	return rules
}

// SetNATOutgoing makes the masquerade rules match the pools. It rewrites the
// chain only when its rules differ, so a resync changes nothing.
func (d *Dataplane) SetNATOutgoing(natPools, allPools []netip.Prefix) error {
	for _, v6 := range []bool{false, true} {
		proto := iptables.ProtocolIPv4
		if v6 {
			proto = iptables.ProtocolIPv6
		}
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			if v6 {
				continue
			}
			return fmt.Errorf("iptables is needed for natOutgoing pools: %w", err)
		}
		want := natRules(natPools, allPools, v6)
		exists, err := ipt.ChainExists("nat", NATChain)
		if err != nil {
			return fmt.Errorf("iptables nat: %w", err)
		}
		if !exists {
			if len(want) == 0 {
				continue
			}
			if err := ipt.NewChain("nat", NATChain); err != nil {
				return fmt.Errorf("iptables: create %s: %w", NATChain, err)
			}
		}
		have, err := ipt.List("nat", NATChain)
		if err != nil {
			return err
		}
		// Render our wanted rules the way iptables lists them, via a
		// throwaway comparison: rewrite when the count or any rule differs.
		if !sameRules(have, want, NATChain) {
			if err := ipt.ClearChain("nat", NATChain); err != nil {
				return err
			}
			for _, r := range want {
				if err := ipt.Append("nat", NATChain, r...); err != nil {
					return fmt.Errorf("iptables: NAT rule %v: %w", r, err)
				}
			}
			d.log.Info("NAT outgoing rules updated", "ipv6", v6, "natPools", len(natPools))
		}
		ok, err := ipt.Exists("nat", "POSTROUTING", natJump...)
		if err != nil {
			return err
		}
		if !ok {
			if err := ipt.Insert("nat", "POSTROUTING", 1, natJump...); err != nil {
				return fmt.Errorf("iptables: jump to %s: %w", NATChain, err)
			}
		}
	}
	return nil
}

// sameRules compares `iptables -S CHAIN` output with wanted rule args.
func sameRules(listed []string, want [][]string, chain string) bool {
	var have []string
	for _, l := range listed {
		if l == "-N "+chain {
			continue
		}
		have = append(have, l)
	}
	if len(have) != len(want) {
		return false
	}
	for i, r := range want {
		if have[i] != "-A "+chain+" "+joinRule(r) {
			return false
		}
	}
	return true
}

func joinRule(r []string) string {
	out := slices.Clone(r)
	for i, s := range out {
		if i > 0 && out[i-1] == "--comment" {
			out[i] = `"` + s + `"`
		}
	}
	return strings.Join(out, " ")
}

// RemoveNAT deletes our NAT chain and its jump.
func (d *Dataplane) RemoveNAT() {
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			continue
		}
		_ = ipt.DeleteIfExists("nat", "POSTROUTING", natJump...)
		if ok, _ := ipt.ChainExists("nat", NATChain); ok {
			_ = ipt.ClearAndDeleteChain("nat", NATChain)
		}
	}
}
