package plugin

import (
	"context"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/bpfredirect"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
)

// redirectSyncEvery is how often the eBPF path's attachments are checked
// against the kernel's interfaces (a tunnel device made later, an endpoint
// whose Join-time attach failed).
const redirectSyncEvery = 10 * time.Second

// startRedirect loads the eBPF redirect path where the kernel can run it
// (--bpf-redirect auto) and keeps it on the endpoints, the uplink and the
// tunnels. It needs the policy table: only connections that table marks
// are taken. Anything missing leaves the kernel's path, with one log line.
func (d *daemon) startRedirect() {
	switch {
	case !d.cfg.BPFRedirect:
		d.redirectOff = "turned off (--bpf-redirect off)"
	case !d.cfg.Policy:
		d.redirectOff = "needs network policy on (--policy on): it takes only the connections the policy table marks"
	}
	if d.redirectOff != "" {
		d.log.Info("eBPF redirect path off", "reason", d.redirectOff)
		return
	}
	p, err := bpfredirect.Open(nftpolicy.DefaultAcceptedCTMark)
	if err != nil {
		d.redirectOff = "this kernel cannot run it: " + err.Error()
		d.log.Info("eBPF redirect path not available: the kernel's forwarding path carries all traffic", "reason", err)
		return
	}
	d.redirect = p
	d.dp.UseRedirect(p)
	d.syncRedirect()
	e, u := p.Attached()
	d.log.Info("eBPF redirect path on: established container TCP traffic skips the forwarding hooks", "endpoints", e, "uplinks", u)
	d.run(func(ctx context.Context) {
		defer p.Close() // the kernel's path carries everything from here
		t := time.NewTicker(redirectSyncEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d.syncRedirect()
			}
		}
	})
}

func (d *daemon) syncRedirect() {
	if err := d.dp.SyncRedirect(d.v4.Addr()); err != nil {
		d.log.Warn("eBPF redirect path: not on every interface (the kernel's path carries the rest)", "err", err)
	}
}

func (d *daemon) dataPathStatus() *api.DataPathStatus {
	if d.redirect == nil {
		return &api.DataPathStatus{Reason: d.redirectOff}
	}
	st := &api.DataPathStatus{Redirect: true}
	st.Endpoints, st.Uplinks = d.redirect.Attached()
	if c, err := d.redirect.Counters(); err == nil {
		st.ToEndpoint, st.Decapsulated, st.Out, st.Encapsulated, st.Passed = c.ToEndpoint, c.Decapsulated, c.Out, c.Encapsulated, c.Passed
	}
	return st
}
