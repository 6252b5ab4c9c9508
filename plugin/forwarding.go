package plugin

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane"
)

// forwarding keeps the FORWARD accepts in place and says once, not every
// pass, what it cannot do: a host without iptables (Docker 29's nftables
// firewall) needs none, and an nftables chain of someone else's that drops
// forwarded traffic needs the admin.
type forwarding struct {
	dp     *dataplane.Dataplane
	log    *slog.Logger
	warned string
}

func (f *forwarding) ensure() error {
	err := f.dp.EnsureForwarding()
	note := ""
	if errors.Is(err, dataplane.ErrNoIptables) {
		note, err = "no iptables on this host: forwarding rests on nftables", nil
	}
	if drops, derr := dataplane.ForeignForwardDrops(); derr == nil && len(drops) > 0 {
		note += "; nftables chains with policy drop on the forward hook: " + strings.Join(drops, ", ") +
			` (add iifname "cali*" accept and oifname "cali*" accept to them, or routed container traffic is dropped)`
	}
	if note != f.warned {
		if note != "" {
			f.log.Warn(strings.TrimPrefix(note, "; "))
		}
		f.warned = note
	}
	return err
}
