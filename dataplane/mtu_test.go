package dataplane_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/mssclamp"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testhost"
	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// TestFullMTUVeths builds two hosts on one subnet, each with a block
// carried by VXLAN and a block routed directly, and containers with veths
// at the full 1500 (and one left at 1450 by an older daemon). It checks
// what a user would: the container's interface is at 1500 on a host with a
// 1450 VXLAN device; 1500-byte packets with DF cross the direct route
// whole; across VXLAN the sender learns the 1450 path MTU from the host's
// ICMP, TCP connections get the tunnel's MSS from the clamp (and the
// tunnel's-less MSS without it, the control), and a large transfer
// completes both ways; the 1450 veth talks to 1500 ones.
func TestFullMTUVeths(t *testing.T) {
	a := testhost.New(t, "10.98.0.1", "host-a", "mtu")
	b := testhost.New(t, "10.98.0.2", "host-b", "mtu")
	testhost.Link(t, a, b, "upl-a", "upl-b")
	// Blocks: 10.70.<1|2>.0/26 through VXLAN, 10.70.<11|12>.0/26 direct.
	a.Attach(t, "va", "10.70.1.1", 1500)
	a.Attach(t, "da", "10.70.11.1", 1500)
	a.Attach(t, "old", "10.70.11.2", 1450) // made by a daemon that gave every veth the VXLAN MTU
	b.Attach(t, "vb", "10.70.2.1", 1500)
	b.Attach(t, "db", "10.70.12.1", 1500)
	a.Routes(t, b.IP, "10.70.2.0/26", "10.70.12.0/26")
	b.Routes(t, a.IP, "10.70.1.0/26", "10.70.11.0/26")
	va, da, old, vb, db := a.Ctrs["va"], a.Ctrs["da"], a.Ctrs["old"], b.Ctrs["vb"], b.Ctrs["db"]

	if got := linkMTU(t, a.NS, vxlan.Device); got != 1450 {
		t.Fatalf("%s MTU %d, want 1450", vxlan.Device, got)
	}
	if got := linkMTU(t, va.NS, "cali0"); got != 1500 {
		t.Errorf("container cali0 MTU %d on a VXLAN host, want 1500", got)
	}

	// Direct: a 1500-byte packet with DF arrives whole.
	if err := dfDatagram(t, da, db, 1472); err != nil {
		t.Errorf("direct: %v", err)
	}

	// Control: without the clamp the handshake carries the veths' MSS.
	if mss := transfer(t, va, vb, 0); mss <= 1410 {
		t.Errorf("control without the clamp: MSS %d, want the veth's (above 1410): the check below could not fail", mss)
	}
	for _, h := range []*testhost.Host{a, b} {
		testns.Do(t, h.NS, func() {
			if _, err := mssclamp.New("cali").Ensure(); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, tc := range []struct {
		name     string
		from, to testhost.Ctr
		maxMSS   int
		minMSS   int
	}{
		{"VXLAN a->b", va, vb, 1410, 1300},
		{"VXLAN b->a", vb, va, 1410, 1300},
		{"direct a->b", da, db, 1460, 1411},
		{"1450 veth -> 1500 veth, direct", old, db, 1410, 1300},
		{"1500 veth -> 1450 veth, direct", db, old, 1410, 1300},
	} {
		mss := transfer(t, tc.from, tc.to, 8<<20)
		t.Logf("%s: 8 MiB sent, MSS %d", tc.name, mss)
		if mss > tc.maxMSS || mss < tc.minMSS {
			t.Errorf("%s: MSS %d, want %d..%d", tc.name, mss, tc.minMSS, tc.maxMSS)
		}
	}
	// Last, since a path MTU learnt would hide the clamp: across VXLAN the
	// host answers "fragmentation needed" and the container's kernel now
	// knows the tunnel's MTU.
	if pmtu := learntPMTU(t, va, vb, 1472); pmtu != 1450 {
		t.Errorf("VXLAN: path MTU learnt by the sender after a 1500-byte DF datagram: %d, want 1450", pmtu)
	}
	if err := dfDatagram(t, db, old, 1422); err != nil {
		t.Errorf("1450-byte DF packet to the 1450 veth: %v", err)
	}
	if pmtu := learntPMTU(t, db, old, 1472); pmtu != 1450 {
		t.Errorf("1500-byte DF datagram to the 1450 veth: path MTU learnt %d, want 1450", pmtu)
	}
}

// linkMTU is the MTU of dev in namespace n.
func linkMTU(t *testing.T, n ns.NetNS, dev string) int {
	var l netlink.Link
	var err error
	testns.Do(t, n, func() { l, err = netlinksafe.LinkByName(dev) })
	if err != nil {
		t.Fatalf("%s: %v", dev, err)
	}
	return l.Attrs().MTU
}

// dfSocket is a UDP socket in from's namespace, connected to to:9 (the
// discard port) with path MTU discovery "do": never fragmented, DF set.
func dfSocket(t *testing.T, from testhost.Ctr, to testhost.Ctr, port int) (fd int) {
	testns.Do(t, from.NS, func() {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrInet4{Addr: to.IP.As4(), Port: port})
		}
		if err != nil {
			t.Fatalf("DF socket: %v", err)
		}
	})
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// dfDatagram sends one datagram of size bytes (plus 28 of headers) with DF
// and checks that the receiver gets it whole.
func dfDatagram(t *testing.T, from, to testhost.Ctr, size int) error {
	var pc net.PacketConn
	var err error
	testns.Do(t, to.NS, func() { pc, err = net.ListenPacket("udp4", to.IP.String()+":0") })
	if err != nil {
		return err
	}
	defer pc.Close()
	fd := dfSocket(t, from, to, pc.LocalAddr().(*net.UDPAddr).Port)
	buf := make([]byte, 65536)
	for try := 0; try < 3; try++ { // the first may wait for ARP
		if _, err := unix.Write(fd, bytes.Repeat([]byte{'m'}, size)); err != nil {
			return fmt.Errorf("send %d bytes with DF: %w", size, err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(time.Second))
		if n, _, rerr := pc.ReadFrom(buf); rerr == nil {
			if n != size {
				return fmt.Errorf("received %d bytes, sent %d", n, size)
			}
			return nil
		}
	}
	return fmt.Errorf("a %d-byte packet with DF from %s never reached %s", size+28, from.IP, to.IP)
}

// learntPMTU sends datagrams of size bytes with DF and returns the path
// MTU the sender's kernel learnt (IP_MTU), once it is below the packet.
func learntPMTU(t *testing.T, from, to testhost.Ctr, size int) int {
	fd := dfSocket(t, from, to, 9)
	mtu := 0
	for try := 0; try < 20; try++ {
		_, _ = unix.Write(fd, bytes.Repeat([]byte{'m'}, size)) // EMSGSIZE once the ICMP came back
		time.Sleep(100 * time.Millisecond)
		var err error
		if mtu, err = unix.GetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU); err == nil && mtu < size+28 {
			return mtu
		}
	}
	return mtu
}

// transfer sends n bytes over TCP from one container to the other, checks
// they all arrive, and returns the MSS the sender's connection uses
// (without TCP options).
func transfer(t *testing.T, from, to testhost.Ctr, n int) int {
	var ln net.Listener
	var err error
	testns.Do(t, to.NS, func() { ln, err = net.Listen("tcp4", to.IP.String()+":0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	var conn net.Conn
	testns.Do(t, from.NS, func() { conn, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second) })
	if err != nil {
		t.Fatalf("%s -> %s: %v", from.IP, to.IP, err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(make([]byte, n)); err != nil {
		t.Errorf("%s -> %s: write: %v", from.IP, to.IP, err)
	}
	mss := tcpMSS(t, conn)
	conn.Close()
	if k := <-got; k != int64(n) {
		t.Errorf("%s -> %s: %d of %d bytes arrived", from.IP, to.IP, k, n)
	}
	return mss
}

// tcpiOptTimestamps is TCPI_OPT_TIMESTAMPS (linux/tcp.h).
const tcpiOptTimestamps = 1

// tcpMSS is the MSS the peer advertised as the connection now uses, with
// the timestamp option's 12 bytes added back.
func tcpMSS(t *testing.T, conn net.Conn) int {
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	_ = rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	mss := int(info.Snd_mss)
	if info.Options&tcpiOptTimestamps != 0 {
		mss += 12
	}
	return mss
}
