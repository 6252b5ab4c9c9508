//go:build e2e

package multihost

import (
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fullMTU is the step "full MTU: 1500 direct, PMTU and MSS into VXLAN":
// the containers' veths are at 1500 although the pool uses VXLAN across
// subnets (checkVethMTU); a 1500-byte ping with DF crosses the direct route
// 1<->2; towards host 3 the sender is told the tunnel's 1450 (ICMP
// fragmentation needed, with policy on), 1450-byte packets cross, and a
// TCP transfer from inside the container gets the tunnel's MSS.
func (s *scenario) fullMTU(t *testing.T) {
	c1, c2, c3 := s.c1, s.c2, s.c3
	ping := func(to *Container, size int) (string, error) {
		out, err := exec.Command("nsenter", "--net="+c1.NSPath(), "--", "ping", "-M", "do", "-s", fmt.Sprint(size),
			"-c", "3", "-i", "0.2", "-W", "2", to.IP.String()).CombinedOutput()
		return string(out), err
	}
	if out, err := ping(c2, 1472); err != nil {
		t.Errorf("%s -> %s (direct): ping -M do -s 1472: %v\n%s", c1, c2, err, out)
	}
	out, err := ping(c3, 1472)
	t.Logf("%s -> %s (VXLAN): ping -M do -s 1472:\n%s", c1, c3, out)
	if err == nil || !strings.Contains(strings.ReplaceAll(out, " ", ""), "mtu=1450") {
		t.Errorf("%s -> %s (VXLAN): a 1500-byte ping with DF: want it refused with the tunnel's mtu 1450 (path MTU discovery), got %v", c1, c3, err)
	}
	if out, err := ping(c3, 1422); err != nil {
		t.Errorf("%s -> %s (VXLAN): ping -M do -s 1422: %v\n%s", c1, c3, err, out)
	}

	const size = 4 << 20
	l, err := ListenInNetNS(c3.NSPath(), "tcp", net.JoinHostPort(c3.IP.String(), "7555"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		n   int64
		mss int
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		n, err := io.Copy(io.Discard, c)
		res <- result{n, sendMSS(c), err}
	}()
	if out, err := c1.ExecErr(time.Minute, "sh", "-c", fmt.Sprintf("dd if=/dev/zero bs=65536 count=%d 2>/dev/null | nc -w 5 %s 7555", size/65536, c3.IP)); err != nil {
		t.Fatalf("%s -> %s (VXLAN): TCP transfer: %v\n%s", c1, c3, err, out)
	}
	r := <-res
	t.Logf("%s -> %s (VXLAN): %d bytes received; MSS %s advertised in its SYN, as %s sees it: %d", c1, c3, r.n, c1.Name, c3.Name, r.mss)
	if r.err != nil || r.n != size {
		t.Errorf("%s -> %s (VXLAN): received %d of %d bytes: %v", c1, c3, r.n, size, r.err)
	}
	if r.mss > 1410 || r.mss < 1300 {
		t.Errorf("%s -> %s (VXLAN): MSS %d, want 1410 (the tunnel's 1450 minus 40: the SYN clamped by %s)", c1, c3, r.mss, s.h1.Name)
	}
}

// sendMSS is the MSS the connection's peer advertised as the kernel uses
// it, the timestamp option's 12 bytes added back.
func sendMSS(c net.Conn) int {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0
	}
	var info *unix.TCPInfo
	_ = rc.Control(func(fd uintptr) { info, _ = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if info == nil {
		return 0
	}
	const tcpiOptTimestamps = 1 // linux/tcp.h
	mss := int(info.Snd_mss)
	if info.Options&tcpiOptTimestamps != 0 {
		mss += 12
	}
	return mss
}

// measureVethMTU (CALICO_BENCH_MTU=1) measures what the full veth MTU is
// worth: containers m1, m2, m3 get veths at 1450, as an older daemon gave
// every veth on a host with a VXLAN pool, and each path is measured
// alternately at 1500 (a1 -> a2, a1 -> a3) and at 1450 (m1 -> m2, m1 -> m3),
// three runs each, medians compared.
func measureVethMTU(t *testing.T, tb *Testbed, pairs []*benchPair, secs int) string {
	h1, h2, h3 := tb.Hosts[0], tb.Hosts[1], tb.Hosts[2]
	m1, m2, m3 := h1.Run(t, "m1", netName), h2.Run(t, "m2", netName), h3.Run(t, "m3", netName)
	for _, c := range []*Container{m1, m2, m3} {
		if err := setVethMTU(c, 1450); err != nil {
			t.Fatal(err)
		}
	}
	pingAllPairs(t, []*Container{m1, m2, m3}, 30*time.Second)
	ctr := func(c *Container) benchEndpoint { return benchEndpoint{c.Name, c.NSPath(), c.IP} }
	// pairs[2] and pairs[4]: the direct and VXLAN container paths at 1500.
	full := []*benchPair{{name: "direct, veth 1500", from: pairs[2].from, to: pairs[2].to}, {name: "VXLAN, veth 1500", from: pairs[4].from, to: pairs[4].to}}
	old := []*benchPair{{name: "direct, veth 1450", from: ctr(m1), to: ctr(m2)}, {name: "VXLAN, veth 1450", from: ctr(m1), to: ctr(m3)}}
	for i := 0; i < 3; i++ {
		for k := range full {
			for _, p := range []*benchPair{full[k], old[k]} {
				bps, err := iperf(p.from.ns, p.to.ns, p.to.ip, secs)
				if err != nil {
					t.Fatalf("%s: %v", p.name, err)
				}
				p.runs = append(p.runs, bps/1e9)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "### Veth MTU: full 1500 against the VXLAN MTU 1450 (%s, kernel %s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), kernel())
	fmt.Fprintf(&b, "iperf3 TCP, one stream, %d s per run, median of 3 runs taken alternately (1500, 1450, ...).\n\n", secs)
	b.WriteString("| path | veth 1500 (Gbit/s) | veth 1450 (Gbit/s) | 1500 vs 1450 | runs 1500 | runs 1450 |\n|---|---:|---:|---:|---|---|\n")
	for k := range full {
		f, o := median(full[k].runs), median(old[k].runs)
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2fx | %s | %s |\n", strings.TrimSuffix(full[k].name, ", veth 1500"), f, o, f/o, fmtRuns(full[k].runs), fmtRuns(old[k].runs))
	}
	return b.String()
}

// setVethMTU sets both ends of the container's veth to mtu, the container's
// first (so that nothing the host sends in is too big for it).
func setVethMTU(c *Container, mtu int) error {
	var peer int
	if err := inNetNS(c.NSPath(), func() error {
		l, err := netlink.LinkByName("cali0")
		if err == nil {
			peer = l.Attrs().ParentIndex
			err = netlink.LinkSetMTU(l, mtu)
		}
		return err
	}); err != nil {
		return fmt.Errorf("%s: cali0 MTU: %w", c, err)
	}
	return c.Host.nl(func(nh *netlink.Handle) error {
		l, err := nh.LinkByIndex(peer)
		if err == nil {
			err = nh.LinkSetMTU(l, mtu)
		}
		if err != nil {
			return fmt.Errorf("%s: host side (index %d) MTU: %w", c, peer, err)
		}
		return nil
	})
}
