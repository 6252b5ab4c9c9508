package dataplane

import (
	"fmt"

	"github.com/coreos/go-iptables/iptables"
)

// ForwardChain holds our FORWARD accepts. Docker sets the FORWARD policy to
// DROP, so routed container traffic needs an explicit accept; keeping it in
// a chain of our own means we never edit anyone else's rules.
const ForwardChain = "CALICO-LIBNETWORK-FWD"

var forwardRules = [][]string{
	{"-i", "cali+", "-m", "comment", "--comment", "calico-libnetwork: from containers", "-j", "ACCEPT"},
	{"-o", "cali+", "-m", "comment", "--comment", "calico-libnetwork: to containers", "-j", "ACCEPT"},
}

// EnsureForwarding makes sure the FORWARD chain accepts traffic to and from
// cali interfaces, for IPv4 and, where ip6tables exists, IPv6. It is
// idempotent and cheap enough to run from the reconcile loop.
func (d *Dataplane) EnsureForwarding() error {
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			if proto == iptables.ProtocolIPv6 {
				continue // no ip6tables: nothing filters IPv6 forwarding here either
			}
			return fmt.Errorf("iptables is needed to accept forwarded container traffic (install the iptables package): %w", err)
		}
		exists, err := ipt.ChainExists("filter", ForwardChain)
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		if !exists {
			if err := ipt.NewChain("filter", ForwardChain); err != nil {
				return fmt.Errorf("iptables: create %s: %w", ForwardChain, err)
			}
		}
		for _, r := range forwardRules {
			if err := ipt.AppendUnique("filter", ForwardChain, r...); err != nil {
				return fmt.Errorf("iptables: rule in %s: %w", ForwardChain, err)
			}
		}
		jump := []string{"-m", "comment", "--comment", "calico-libnetwork", "-j", ForwardChain}
		ok, err := ipt.Exists("filter", "FORWARD", jump...)
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		if !ok {
			if err := ipt.Insert("filter", "FORWARD", 1, jump...); err != nil {
				return fmt.Errorf("iptables: jump to %s: %w", ForwardChain, err)
			}
		}
	}
	return d.refreshIPv6Forwarding() // uplinks that appeared since
}

// RemoveForwarding deletes our chain and the jump to it (used by tests and
// uninstall); other rules are untouched.
func (d *Dataplane) RemoveForwarding() error {
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.NewWithProtocol(proto)
		if err != nil {
			continue
		}
		_ = ipt.DeleteIfExists("filter", "FORWARD", "-m", "comment", "--comment", "calico-libnetwork", "-j", ForwardChain)
		if ok, _ := ipt.ChainExists("filter", ForwardChain); ok {
			if err := ipt.ClearAndDeleteChain("filter", ForwardChain); err != nil {
				return err
			}
		}
	}
	return nil
}
