package bpfredirect_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/bpfredirect"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/nftpolicy"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testhost"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// TestConnectionSurvivesPathChanges: what the daemon's death (programs
// detached) and its restart (attached again) do to a TCP connection in
// full flow, across two hosts: it goes on, from the redirect path to the
// kernel's and back, and every byte arrives. The control, with
// conntrack's strict window tracking, shows why the path sets it liberal:
// there the connection stalls once the kernel's path sees it again.
func TestConnectionSurvivesPathChanges(t *testing.T) {
	testns.RequireRoot(t)
	if _, err := bpfredirect.ReadKernel(); err != nil {
		t.Skipf("SKIPPED LOUDLY: the kernel cannot run the eBPF redirect path: %v", err)
	}
	for _, tc := range []struct {
		name       string
		liberal    string
		wantStalls bool
	}{
		{"liberal window tracking (what Open sets)", "1", false},
		{"control: strict window tracking", "0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &host{Host: testhost.New(t, "10.98.1.1", "sw-a", "sw")}
			b := &host{Host: testhost.New(t, "10.98.1.2", "sw-b", "sw")}
			testhost.Link(t, a.Host, b.Host, "upl-a", "upl-b")
			from, to := a.Attach(t, "a1", "10.73.1.1", 1500), b.Attach(t, "b1", "10.73.2.1", 1500)
			a.Routes(t, b.IP, "10.73.12.0/26", "10.73.2.0/26")
			b.Routes(t, a.IP, "10.73.11.0/26", "10.73.1.0/26")
			for _, h := range []*host{a, b} {
				if out, err := nft(h, fmt.Sprintf(markTable, nftpolicy.DefaultAcceptedCTMark)); err != nil {
					t.Fatalf("nft: %v: %s", err, out)
				}
				h.open(t)
			}
			s := startStream(t, from, to)
			defer s.stop()
			s.flows(t, "path on")
			before := counts(t, a, b)
			for _, h := range []*host{a, b} {
				setLiberal(t, h, tc.liberal)
				testns.Do(t, h.NS, func() { _ = h.path.Close() }) // the daemon dies
			}
			stalled := !s.flowsWithin(3 * time.Second)
			if stalled != tc.wantStalls {
				t.Fatalf("after the path went: stalled %v, want %v", stalled, tc.wantStalls)
			}
			if tc.wantStalls {
				return
			}
			for _, h := range []*host{a, b} {
				h.open(t) // the daemon is back
			}
			s.flows(t, "path back")
			if d := counts(t, a, b); d.redirected() == 0 {
				t.Errorf("path back: nothing redirected (%+v before it went)", before)
			}
			s.finish(t)
		})
	}
}

func setLiberal(t *testing.T, h *host, v string) {
	testns.Do(t, h.NS, func() {
		if err := os.WriteFile(filepath.Join("/proc/sys/net/netfilter", "nf_conntrack_tcp_be_liberal"), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// stream is a TCP connection the test writes to without pause, at a
// bounded rate, and whose receiver counts what arrives.
type stream struct {
	conn     net.Conn
	received atomic.Int64
	sent     int64
	done     chan error
	quit     chan struct{}
	wrote    chan int64
}

func startStream(t *testing.T, from, to testhost.Ctr) *stream {
	var ln net.Listener
	var err error
	testns.Do(t, to.NS, func() { ln, err = net.Listen("tcp4", to.IP.String()+":0") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &stream{done: make(chan error, 1), quit: make(chan struct{}), wrote: make(chan int64, 1)}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			s.done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			s.received.Add(int64(n))
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				s.done <- err
				return
			}
		}
	}()
	testns.Do(t, from.NS, func() { s.conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		chunk := make([]byte, 256<<10)
		var sent int64
		tick := time.NewTicker(5 * time.Millisecond) // about 50 MB/s: enough packets, little CPU
		defer tick.Stop()
		for {
			select {
			case <-s.quit:
				s.wrote <- sent
				return
			case <-tick.C:
			}
			_ = s.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
			n, err := s.conn.Write(chunk)
			sent += int64(n)
			if err != nil {
				s.wrote <- sent
				return
			}
		}
	}()
	return s
}

// flowsWithin says whether more bytes arrive within d (at least 1 MiB).
func (s *stream) flowsWithin(d time.Duration) bool {
	start := s.received.Load()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s.received.Load()-start > 1<<20 {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (s *stream) flows(t *testing.T, phase string) {
	t.Helper()
	if !s.flowsWithin(3 * time.Second) {
		t.Fatalf("%s: the connection stalled (%d bytes received)", phase, s.received.Load())
	}
}

// finish stops writing, closes and checks every byte written arrived.
func (s *stream) finish(t *testing.T) {
	close(s.quit)
	s.sent = <-s.wrote
	s.conn.Close()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("receiver: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("receiver never saw the end of the stream")
	}
	if got := s.received.Load(); got != s.sent {
		t.Errorf("%d bytes sent, %d received", s.sent, got)
	}
}

// stop ends the stream, however it stands (closing first unblocks a
// writer stuck on a stalled connection).
func (s *stream) stop() {
	s.conn.Close()
	select {
	case <-s.quit:
	default:
		close(s.quit)
		<-s.wrote
	}
}
