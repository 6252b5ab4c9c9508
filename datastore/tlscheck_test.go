package datastore_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckEndpointSchemes(t *testing.T) {
	tests := []struct {
		eps         []string
		ca, crt, ky string
		wantErr     string
	}{
		{eps: []string{"http://10.0.0.1:2379"}},
		{eps: []string{"https://10.0.0.1:2379"}, ca: "ca.pem"},
		{eps: []string{"unix:///var/lib/calico/etcd.sock"}, ca: "ca.pem"},
		{eps: []string{"https://10.0.0.1:2379", "HTTP://10.0.0.2:2379"}, crt: "c.pem", ky: "k.pem", wantErr: "use https://10.0.0.2:2379"},
		{eps: []string{"http://e1:2379"}, ca: "ca.pem", wantErr: "etcd endpoint http://e1:2379 is plain http:// but TLS files are given"},
	}
	for _, tc := range tests {
		err := datastore.CheckEndpointSchemes(tc.eps, tc.ca, tc.crt, tc.ky)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%v (ca %q cert %q key %q): err = %v, want %q", tc.eps, tc.ca, tc.crt, tc.ky, err, tc.wantErr)
		}
	}
	// Connect refuses it too, before dialling anything.
	_, err := datastore.Connect(context.Background(), datastore.Config{Endpoints: []string{"http://127.0.0.1:1"}, CACertFile: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "use https://127.0.0.1:1") {
		t.Errorf("Connect with http and a CA: %v", err)
	}
}

func TestUnreachableErrors(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{status.Error(codes.Unavailable, "etcdserver: no leader"), true},
		{status.Error(codes.DeadlineExceeded, "deadline"), true},
		{status.Error(codes.Unknown, "context deadline exceeded"), true}, // seen from a member without quorum
		{status.Error(codes.Unknown, "something else"), false},
		{status.Error(codes.InvalidArgument, "bad"), false},
		{errors.New("plain"), false},
	}
	for _, tc := range tests {
		if got := datastore.Unreachable(tc.err); got != tc.want {
			t.Errorf("Unreachable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
