package ctl

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// printBGP shows the BGP speaker as calico/node's node status did: one
// table per family in Calico's columns, then what each peer has sent.
func (a *app) printBGP(w io.Writer, b *api.BGPStatus) {
	if b == nil {
		return // a daemon without a speaker
	}
	if !b.Enabled {
		fmt.Fprintf(w, "BGP: off: %s\n\n", b.Off)
		return
	}
	fmt.Fprintf(w, "BGP: AS %d, router ID %s, listening on %s; MD5 passwords: %s\n", b.ASNumber, b.RouterID, b.Listen, b.MD5)
	if b.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", oneLine(b.Error))
	}
	fmt.Fprintf(w, "  announces: %s\n", orNone(strings.Join(b.Announced, ", ")))
	switch {
	case b.LearnedOff != "":
		fmt.Fprintf(w, "  learned routes: not used (%s)\n", b.LearnedOff)
	default:
		shown, more := b.Installed, ""
		if len(shown) > 8 {
			shown, more = shown[:8], fmt.Sprintf(" (and %d more)", len(b.Installed)-8)
		}
		fmt.Fprintf(w, "  learned routes in the kernel (protocol 79, behind the route sync's): %d: %s%s\n", len(b.Installed), orNone(strings.Join(shown, ", ")), more)
	}
	if b.InstallError != "" {
		fmt.Fprintf(w, "  learned routes error: %s\n", oneLine(b.InstallError))
	}
	fmt.Fprintln(w)
	for _, fam := range []struct {
		name string
		v6   bool
	}{{"IPv4", false}, {"IPv6", true}} {
		fmt.Fprintf(w, "%s BGP status\n", fam.name)
		var rows, got [][]string
		for _, p := range b.Peers {
			if addr, err := netip.ParseAddr(p.Address); err != nil || addr.Is6() != fam.v6 {
				continue
			}
			rows = append(rows, []string{p.Address, p.Type, p.State, a.since(p.Since), oneLine(p.Info)})
			got = append(got, []string{p.Address, p.Name, strconv.FormatUint(uint64(p.ASNumber), 10), strconv.Itoa(p.Received), orNone(strings.Join(p.Prefixes, ", "))})
		}
		if len(rows) == 0 {
			fmt.Fprintf(w, "No %s peers found.\n\n", fam.name)
			continue
		}
		writeBox(w, []string{"PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"}, rows)
		fmt.Fprintln(w)
		fmt.Fprintf(w, "%s routes received\n", fam.name)
		writeBox(w, []string{"PEER ADDRESS", "NAME", "AS", "ROUTES", "PREFIXES"}, got)
		fmt.Fprintln(w)
	}
}

// since prints a session's last change as BIRD does: the time of day
// today, the date before.
func (a *app) since(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	now := a.env.Now()
	t = t.In(now.Location())
	if now.Sub(t) < 24*time.Hour {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02")
}
