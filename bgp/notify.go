package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// notifyCatcher sits in front of GoBGP's logger. GoBGP reports some
// refusals only in its log (an OPEN with the wrong AS is answered with a
// NOTIFICATION before the session's state changes), so the NOTIFICATIONs
// sent and received are picked out of it for calicoctl node status;
// everything is then logged at the level the user chose.
type notifyCatcher struct {
	next  slog.Handler
	level *slog.LevelVar
	saw   func(peer, why string, at time.Time)
	attrs []slog.Attr // given by With: GoBGP names the peer there
}

func (h *notifyCatcher) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || l >= h.level.Level()
}

func (h *notifyCatcher) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "sent notification" || r.Message == "received notification" {
		var peer string
		var code, sub int64
		pick := func(a slog.Attr) bool {
			switch a.Key {
			case "Key":
				peer = a.Value.String()
			case "Code":
				code = attrInt(a.Value)
			case "Subcode":
				sub = attrInt(a.Value)
			}
			return true
		}
		for _, a := range h.attrs {
			pick(a)
		}
		r.Attrs(pick)
		dir := "sent"
		if r.Message == "received notification" {
			dir = "received from the peer"
		}
		if peer != "" && !(code == 6 && sub == 3) { // "peer deconfigured" is our own doing
			h.saw(peer, fmt.Sprintf("notification %s: %s", dir, notificationWord(code, sub)), r.Time)
		}
	}
	if r.Level < h.level.Level() {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *notifyCatcher) WithAttrs(as []slog.Attr) slog.Handler {
	return &notifyCatcher{next: h.next.WithAttrs(as), level: h.level, saw: h.saw, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...)}
}

func (h *notifyCatcher) WithGroup(name string) slog.Handler {
	return &notifyCatcher{next: h.next.WithGroup(name), level: h.level, saw: h.saw, attrs: h.attrs}
}

func attrInt(v slog.Value) int64 {
	switch v.Kind() {
	case slog.KindInt64:
		return v.Int64()
	case slog.KindUint64:
		return int64(v.Uint64())
	}
	var n int64
	_, _ = fmt.Sscan(v.String(), &n)
	return n
}

// notificationWord names a NOTIFICATION's code and subcode (RFC 4271,
// 4486) and says what to check.
func notificationWord(code, sub int64) string {
	switch {
	case code == 2 && sub == 2:
		return "bad peer AS (the AS numbers configured on the two sides disagree: check asNumber here and on the peer)"
	case code == 2 && sub == 3:
		return "bad BGP identifier (two routers share a router ID)"
	case code == 2 && sub == 6:
		return "unacceptable hold time"
	case code == 2:
		return fmt.Sprintf("OPEN message error (subcode %d)", sub)
	case code == 4:
		return "hold timer expired"
	case code == 6 && sub == 2:
		return "cease: administrative shutdown"
	case code == 6 && sub == 4:
		return "cease: administrative reset"
	case code == 6 && sub == 5:
		return "cease: connection rejected (the peer is not configured to talk to this node)"
	case code == 6:
		return fmt.Sprintf("cease (subcode %d)", sub)
	}
	return fmt.Sprintf("code %d subcode %d", code, sub)
}
