//go:build e2e

package multihost

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
)

// vxlanFrame is a VXLAN packet's UDP payload (VNI 4096) carrying an
// Ethernet frame from srcMAC to dstMAC with an IPv4/UDP packet from src to
// dst:dport.
func vxlanFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, dport uint16, payload string) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload) // checksum 0: none, as IPv4 allows
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	binary.BigEndian.PutUint16(ip[4:], 0x4242)
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	vni := uint32(vxlan.VNI)
	out := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	out = append(out, dstMAC...)
	out = append(out, srcMAC...)
	out = append(out, 0x08, 0x00)
	out = append(append(out, ip...), udp...)
	return out
}

// vxlanOnlyFromNodes: a VXLAN packet of our VNI that claims to carry a
// packet from c1 (an allowed peer on host 1) to c3 on host 3, crafted and
// sent from the outside namespace, which is no node, is dropped by host 3:
// c3 never sees it. Once the outside address is registered as a node the
// same packet reaches c3 (the control: the packet is well made); removed
// again, it is dropped again.
func vxlanOnlyFromNodes(t *testing.T, tb *Testbed, c1, c3 *Container) {
	ctx := context.Background()
	h3 := c3.Host
	attacker := netip.MustParseAddr(OutsideAddr)
	const port = 7777
	send := func(marker string) []string {
		t.Helper()
		capt, err := StartCapture(c3.NSPath(), "cali0", fmt.Sprintf("udp and port %d", port))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := DialInNetNS("/run/netns/"+tb.Outside, "udp4", netip.AddrPortFrom(h3.IP(), vxlan.Port).String(), 2*time.Second)
		if err != nil {
			capt.Stop()
			t.Fatal(err)
		}
		frame := vxlanFrame(vxlan.VTEPMAC(h3.IP()), vxlan.VTEPMAC(c1.Host.IP()), c1.IP, c3.IP, port, marker)
		for i := 0; i < 3; i++ {
			if _, err := conn.Write(frame); err != nil {
				t.Error(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		conn.Close()
		return capt.Stop()
	}
	nodeSet := func() string {
		out, _ := NSExec(ctx, h3.NetNS, "nft", "list", "set", "inet", "calico-libnetwork-host", "nodes4")
		return out
	}
	if set := nodeSet(); !strings.Contains(set, h3.IP().String()) || strings.Contains(set, OutsideAddr) {
		t.Fatalf("%s's node set does not hold exactly the registered nodes:\n%s", h3.Name, set)
	}
	if got := send("spoofed-1"); len(got) != 0 {
		t.Fatalf("a VXLAN packet from %s, not a node, reached %s with a forged source %s: %v", attacker, c3.Name, c1.IP, got)
	}
	drops, _ := NSExec(ctx, h3.NetNS, "nft", "list", "chain", "inet", "calico-libnetwork-host", "input")
	t.Logf("%s drops VXLAN from non-nodes: %s", h3.Name, first(grepLines(drops, "VXLAN only from registered nodes")))

	fake := api.NodeKey("mh-outside-as-node")
	if err := tb.Store.Put(ctx, fake, api.Node{Name: "mh-outside-as-node", IPv4Address: netip.MustParsePrefix(OutsideAddr + "/24")}); err != nil {
		t.Fatal(err)
	}
	deleted := false
	defer func() {
		if !deleted {
			_ = tb.Store.Delete(ctx, fake)
		}
	}()
	if err := Eventually(10*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(nodeSet(), OutsideAddr) {
			return fmt.Errorf("%s's node set lacks the newly registered %s", h3.Name, OutsideAddr)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := send("control"); len(got) == 0 || !strings.Contains(got[0], c1.IP.String()) {
		t.Fatalf("from a registered node address the same packet did not reach %s (%v): the test proves nothing", c3.Name, got)
	} else {
		t.Logf("from a registered node: %s saw %s", c3.Name, got[0])
	}
	if err := tb.Store.Delete(ctx, fake); err != nil {
		t.Fatal(err)
	}
	deleted = true
	if err := Eventually(10*time.Second, 100*time.Millisecond, func() error {
		if strings.Contains(nodeSet(), OutsideAddr) {
			return fmt.Errorf("%s's node set still holds %s", h3.Name, OutsideAddr)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := send("spoofed-2"); len(got) != 0 {
		t.Fatalf("after the node was removed its VXLAN reached %s: %v", c3.Name, got)
	}
}
