package dataplane

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
)

// ForwardChain holds our FORWARD accepts. Docker (in iptables mode) sets
// the FORWARD policy to DROP, so routed container traffic needs an explicit
// accept; keeping it in a chain of our own means we never edit anyone
// else's rules.
const ForwardChain = "CALICO-LIBNETWORK-FWD"

var forwardRules = [][]string{
	{"-i", "cali+", "-m", "comment", "--comment", "calico-libnetwork: from containers", "-j", "ACCEPT"},
	{"-o", "cali+", "-m", "comment", "--comment", "calico-libnetwork: to containers", "-j", "ACCEPT"},
}

// forwardJumps are our jump in FORWARD in two spellings that differ only in
// the comment: a move inserts the other spelling at the new place before
// deleting the old one by its spec, so FORWARD is never without our jump.
var forwardJumps = [2][]string{
	{"-m", "comment", "--comment", "calico-libnetwork", "-j", ForwardChain},
	{"-m", "comment", "--comment", "calico-libnetwork:moved", "-j", ForwardChain},
}

// iptables has two back ends with separate tables, and a packet passes
// only if both let it: a FORWARD DROP left in iptables-legacy by an earlier
// Docker still drops while iptables (nft) is the default. So our accepts go
// into the default back end and into every other one whose FORWARD policy
// is DROP (or that already holds our chain). A host without iptables at
// all (Docker 29's nftables firewall) needs nothing: Docker's nftables
// tables drop no routed traffic of ours.

// backend is one iptables back end, as a pair of binaries.
type backend struct {
	name        string // "iptables", "iptables-nft", "iptables-legacy"
	v4, v6      string // paths; v6 may be empty
	isDefault   bool   // what plain `iptables` runs
	description string
}

// backends finds the iptables back ends on this host (PATH).
func backends() []backend {
	var out []backend
	def, _ := exec.LookPath("iptables")
	defKind := ""
	if def != "" {
		if v, err := exec.Command(def, "-V").Output(); err == nil {
			switch {
			case strings.Contains(string(v), "nf_tables"):
				defKind = "nft"
			case strings.Contains(string(v), "legacy"):
				defKind = "legacy"
			}
		}
	}
	for _, kind := range []string{"nft", "legacy"} {
		p, err := exec.LookPath("iptables-" + kind)
		if err != nil {
			continue
		}
		b := backend{name: "iptables-" + kind, v4: p, isDefault: defKind == kind, description: kind}
		if p6, err := exec.LookPath("ip6tables-" + kind); err == nil {
			b.v6 = p6
		}
		out = append(out, b)
	}
	if len(out) == 0 && def != "" {
		// Only a plain iptables (another distribution, or the image's
		// wrapper, which picks the back end itself).
		b := backend{name: "iptables", v4: def, isDefault: true, description: "default"}
		if p6, err := exec.LookPath("ip6tables"); err == nil {
			b.v6 = p6
		}
		out = append(out, b)
	} else if defKind == "" && len(out) > 0 {
		out[0].isDefault = true
	}
	return out
}

func (b backend) handles() []*iptables.IPTables {
	var out []*iptables.IPTables
	if h, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4), iptables.Path(b.v4)); err == nil {
		out = append(out, h)
	}
	if b.v6 != "" {
		if h, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6), iptables.Path(b.v6)); err == nil {
			out = append(out, h)
		}
	}
	return out
}

// wanted tells whether our accepts belong in this back end now.
func (b backend) wanted(ipt *iptables.IPTables) bool {
	if b.isDefault {
		return true
	}
	if b.description == "legacy" && !legacyFilterLoaded(ipt.Proto()) {
		// Listing would load the legacy filter table; nothing uses it.
		return false
	}
	if ok, _ := ipt.ChainExists("filter", ForwardChain); ok {
		return true
	}
	rules, err := ipt.List("filter", "FORWARD")
	if err != nil || len(rules) == 0 {
		return false
	}
	return rules[0] == "-P FORWARD DROP"
}

// legacyFilterLoaded tells whether this namespace has a legacy iptables
// filter table. thread-self, not /proc/net (the main thread's namespace):
// the caller may be a thread locked in another network namespace.
func legacyFilterLoaded(p iptables.Protocol) bool {
	f := "/proc/thread-self/net/ip_tables_names"
	if p == iptables.ProtocolIPv6 {
		f = "/proc/thread-self/net/ip6_tables_names"
	}
	b, err := os.ReadFile(f)
	return err == nil && strings.Contains(string(b), "filter")
}

// ErrNoIptables says the host has no iptables; forwarding then rests on
// nftables alone (see ForeignForwardDrops).
var ErrNoIptables = errors.New("no iptables on this host")

// EnsureForwarding makes sure FORWARD accepts traffic to and from cali
// interfaces in each iptables back end that needs it, for IPv4 and, where
// ip6tables exists, IPv6. It is idempotent and cheap enough to run from the
// reconcile loop. It returns ErrNoIptables (wrapped) on a host without
// iptables, where nothing needs doing unless another nftables table drops
// forwarded traffic.
func (d *Dataplane) EnsureForwarding() error {
	bs := backends()
	if len(bs) == 0 {
		return fmt.Errorf("%w: forwarded container traffic is not accepted explicitly; that is fine unless a firewall drops it", ErrNoIptables)
	}
	for _, b := range bs {
		for _, ipt := range b.handles() {
			if !b.wanted(ipt) {
				continue
			}
			if err := ensureForwardChain(ipt); err != nil {
				return fmt.Errorf("%s: %w", b.name, err)
			}
		}
	}
	return d.refreshIPv6Forwarding() // uplinks that appeared since
}

func ensureForwardChain(ipt *iptables.IPTables) error {
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
	return placeForwardJump(ipt)
}

// dockerUserJump is Docker's jump to DOCKER-USER as `iptables -S` lists it.
const dockerUserJump = "-A FORWARD -j DOCKER-USER"

// forwardJumpPlan reads `iptables -S FORWARD` (lines) and returns the
// 1-based positions of our jumps (with the spelling of each: its index in
// forwardJumps) and the position ours belongs at: right
// after Docker's jump to DOCKER-USER, or first when there is none. There,
// cali traffic leaves FORWARD after two rules instead of walking Docker's
// per-bridge rules and isolation chains (Docker inserts those at the top,
// pushing ours down, and re-inserts DOCKER-USER first on every start and
// network create); and a user's rule in DOCKER-USER still comes first, as
// Docker documents for that chain.
func forwardJumpPlan(lines []string) (ours, spelling []int, want int) {
	want, pos := 1, 0
	for _, l := range lines {
		if !strings.HasPrefix(l, "-A FORWARD ") {
			continue // the policy line
		}
		pos++
		switch v := jumpSpelling(l); {
		case v >= 0:
			ours, spelling = append(ours, pos), append(spelling, v)
		case l == dockerUserJump && want == 1:
			want = pos + 1
		}
	}
	return ours, spelling, want
}

// jumpSpelling tells our jump by its comment and target: the index of its
// spelling in forwardJumps, or -1.
func jumpSpelling(line string) int {
	if !strings.HasSuffix(line, " -j "+ForwardChain) {
		return -1
	}
	f := strings.Fields(line)
	for i := range len(f) - 1 {
		if f[i] != "--comment" {
			continue
		}
		for v, j := range forwardJumps {
			if strings.Trim(f[i+1], `"`) == j[3] {
				return v
			}
		}
	}
	return -1
}

// placeForwardJump puts our one jump where forwardJumpPlan wants it. A
// move (when Docker has pushed it down) inserts the other spelling there
// first and then deletes the old ones by their spec; it touches no rule
// but ours.
func placeForwardJump(ipt *iptables.IPTables) error {
	lines, err := ipt.List("filter", "FORWARD")
	if err != nil {
		return fmt.Errorf("iptables: list FORWARD: %w", err)
	}
	ours, spelling, want := forwardJumpPlan(lines)
	if len(ours) == 1 && ours[0] == want {
		return nil
	}
	count := [2]int{}
	for _, v := range spelling {
		count[v]++
	}
	// The spelling to insert is one no old jump has; when both are there
	// (a move cut short), the second's copies go first: the first's stay.
	next := 0
	if count[0] > 0 {
		next = 1
		for range count[1] {
			if err := ipt.Delete("filter", "FORWARD", forwardJumps[1]...); err != nil {
				return fmt.Errorf("iptables: move the jump to %s: %w", ForwardChain, err)
			}
		}
		if count[1] > 0 {
			if lines, err = ipt.List("filter", "FORWARD"); err != nil {
				return fmt.Errorf("iptables: list FORWARD: %w", err)
			}
			_, _, want = forwardJumpPlan(lines)
		}
	}
	if err := ipt.Insert("filter", "FORWARD", want, forwardJumps[next]...); err != nil {
		return fmt.Errorf("iptables: jump to %s at %d: %w", ForwardChain, want, err)
	}
	old := 1 - next
	for range count[old] {
		if err := ipt.Delete("filter", "FORWARD", forwardJumps[old]...); err != nil {
			return fmt.Errorf("iptables: move the jump to %s: %w", ForwardChain, err)
		}
	}
	return nil
}

// RemoveForwarding deletes our chain and the jump to it from every iptables
// back end (uninstall); other rules and the policy are untouched.
func (d *Dataplane) RemoveForwarding() error {
	var errs []error
	for _, b := range backends() {
		for _, ipt := range b.handles() {
			for _, j := range forwardJumps {
				for ipt.DeleteIfExists("filter", "FORWARD", j...) == nil {
					if ok, _ := ipt.Exists("filter", "FORWARD", j...); !ok {
						break
					}
				}
			}
			if ok, _ := ipt.ChainExists("filter", ForwardChain); ok {
				if err := ipt.ClearAndDeleteChain("filter", ForwardChain); err != nil {
					errs = append(errs, fmt.Errorf("%s: delete %s: %w", b.name, ForwardChain, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// ForeignForwardDrops names the nftables forward-hook chains of other
// tables whose policy is drop (iptables' own filter FORWARD aside: our
// accepts there work). A packet must pass every such chain, so our rules
// cannot help against them; the daemon warns so the admin accepts cali+
// there.
func ForeignForwardDrops() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	var out []string
	for _, ch := range chains {
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		fam := familyName(ch.Table.Family)
		if ch.Table.Name == "filter" && ch.Name == "FORWARD" && (fam == "ip" || fam == "ip6") {
			continue // iptables-nft's
		}
		out = append(out, fmt.Sprintf("%s %s chain %s", fam, ch.Table.Name, ch.Name))
	}
	return out, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyARP:
		return "arp"
	}
	return fmt.Sprint(f)
}
