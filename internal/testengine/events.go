package testengine

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// event is one entry of the engine's event log, as GET /events streams it.
type event struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
	Scope    string `json:"scope"`
	Time     int64  `json:"time"`
	TimeNano int64  `json:"timeNano"`
}

// logConnects records the network connect events of a container just
// attached (with the engine locked), as dockerd logs them after each Join.
func (e *Engine) logConnects(c *Container) {
	now := time.Now()
	for netID := range c.Endpoints {
		ev := event{Type: "network", Action: "connect", Scope: "local", Time: now.Unix(), TimeNano: now.UnixNano()}
		ev.Actor.ID = netID
		ev.Actor.Attributes = map[string]string{"container": c.ID, "name": netID, "type": ""}
		if n := e.networks[netID]; n != nil {
			ev.Actor.Attributes["name"], ev.Actor.Attributes["type"] = n.Name, n.Driver
		}
		e.events = append(e.events, ev)
	}
	close(e.logged)
	e.logged = make(chan struct{})
}

// streamEvents answers GET /events: the logged events from since on that
// match the type and event filters, then each new one, until the client
// goes or the engine stops.
func (e *Engine) streamEvents(w http.ResponseWriter, r *http.Request) {
	f, err := filters(r)
	if err != nil {
		errorJSON(w, http.StatusBadRequest, "invalid filter: %v", err)
		return
	}
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	match := func(ev event) bool {
		return (len(f["type"]) == 0 || slices.Contains(f["type"], ev.Type)) &&
			(len(f["event"]) == 0 || slices.Contains(f["event"], ev.Action)) && ev.Time >= since
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	sent := 0
	if since == 0 { // only what happens from now on
		e.mu.Lock()
		sent = len(e.events)
		e.mu.Unlock()
	}
	for {
		e.mu.Lock()
		todo, wake := e.events[sent:], e.logged
		sent = len(e.events)
		e.mu.Unlock()
		for _, ev := range todo {
			if match(ev) {
				_ = enc.Encode(ev)
			}
		}
		if fl != nil {
			fl.Flush()
		}
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		case <-e.done:
			return
		}
	}
}
