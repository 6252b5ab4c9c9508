package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

func TestWaitReady(t *testing.T) {
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := asked.Add(1)
		rd := api.Readiness{Ready: n >= 3, Checks: []api.ReadyCheck{{Name: "datastore", OK: n >= 3, Detail: "etcd does not answer"}}}
		if !rd.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rd)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := waitReady(ctx, srv.URL+"/readyz", 10*time.Millisecond)
	if err != nil || !r.Ready || asked.Load() != 3 {
		t.Fatalf("waitReady = %+v, %v after %d asks; want ready at the third", r, err, asked.Load())
	}

	asked.Store(-100) // unready for long
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := waitReady(ctx, srv.URL+"/readyz", 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "datastore FAILING (etcd does not answer)") {
		t.Fatalf("waitReady while unready = %v, want the failing check named", err)
	}
}
