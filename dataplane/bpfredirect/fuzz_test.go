package bpfredirect

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/internal/testns"
)

// FuzzPrograms runs both programs in the kernel (BPF_PROG_TEST_RUN, in a
// namespace of the test's own: no connection there, none marked) on any
// frame. Whatever the bytes, nothing may be redirected: every packet goes
// on to the kernel's path.
func FuzzPrograms(f *testing.F) {
	testns.RequireRoot(f)
	k, err := ReadKernel()
	if err != nil {
		f.Skipf("SKIPPED LOUDLY: the kernel cannot run the eBPF redirect path: %v", err)
	}
	n := testns.New(f)
	var coll *ebpf.Collection
	testns.Do(f, n, func() { coll, err = ebpf.NewCollection(collectionSpec(k, 0x00400000)) })
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { coll.Close() })
	// An endpoint at 10.0.0.2 on interface 1 (the test run's device), so
	// that the address checks pass and the conntrack lookup is reached.
	if err := coll.Maps[mapIfaces].Put(uint32(1), binary.NativeEndian.Uint32([]byte{10, 0, 0, 2})); err != nil {
		f.Fatal(err)
	}
	if err := coll.Maps[mapAddrs].Put(binary.NativeEndian.Uint32([]byte{10, 0, 0, 3}), uint32(1)); err != nil {
		f.Fatal(err)
	}
	// This host's VTEP at 10.0.0.9 on interface 1: VXLAN packets for it
	// are parsed as far as the conntrack lookup.
	tun := make([]byte, tunValSize)
	copy(tun, []byte{10, 0, 0, 9})
	binary.NativeEndian.PutUint32(tun[tunIfindex:], 1)
	if err := coll.Maps[mapTunnel].Put(uint32(0), tun); err != nil {
		f.Fatal(err)
	}
	f.Add(tcpFrame(0x10)) // an ACK from 10.0.0.2 to 10.0.0.3
	f.Add(tcpFrame(0x02)) // a SYN
	f.Add(vxlanFrame(tcpFrame(0x10)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > 1514 {
			frame = frame[:1514] // the test run takes at most a page
		}
		if len(frame) < 14 {
			frame = append(frame, make([]byte, 14-len(frame))...) // the test run wants an Ethernet header
		}
		for _, name := range []string{"from_endpoint", "to_endpoint"} {
			var ret uint32
			var err error
			testns.Do(t, n, func() { ret, err = coll.Programs[name].Run(&ebpf.RunOptions{Data: frame}) })
			if errors.Is(err, unix.EINVAL) {
				// The kernel's test harness refuses some frames before
				// running the program (e.g. an 802.3 length for a
				// type): nothing of ours ran.
				return
			}
			if err != nil {
				t.Fatalf("%s: test run: %v", name, err)
			}
			if int32(ret) != tcxNext {
				t.Fatalf("%s returned %d for a frame of no marked connection, want %d (on to the kernel): % x", name, int32(ret), tcxNext, frame)
			}
		}
	})
}

// vxlanFrame is inner in VXLAN from 10.0.0.8 to this host's VTEP
// 10.0.0.9, as vxlan.calico sends it.
func vxlanFrame(inner []byte) []byte {
	b := make([]byte, vxInner, vxInner+len(inner))
	b[12], b[13] = 0x08, 0x00
	ip := b[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, ipprotoUDP
	binary.BigEndian.PutUint16(ip[2:], uint16(len(inner)+36))
	copy(ip[12:], []byte{10, 0, 0, 8, 10, 0, 0, 9})
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	binary.BigEndian.PutUint16(b[34:], 50000)
	binary.BigEndian.PutUint16(b[36:], 4789)
	binary.BigEndian.PutUint16(b[38:], uint16(len(inner)+16))
	b[42] = 0x08
	b[46], b[47] = 0x00, 0x10 // VNI 4096
	b = append(b, inner...)
	copy(b[vxInner:], []byte{0x66, 0xee, 10, 0, 0, 9}) // the VTEP's MAC
	return b
}

func ipChecksum(ip []byte) uint16 {
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// tcpFrame is an Ethernet frame holding TCP 10.0.0.2:40000 -> 10.0.0.3:80
// with the given flags, TTL 64, a correct IP header checksum.
func tcpFrame(flags byte) []byte {
	b := make([]byte, headersLen)
	b[12], b[13] = 0x08, 0x00
	ip := b[14:34]
	ip[0], ip[2], ip[3], ip[8], ip[9] = 0x45, 0, 40, 64, ipprotoTCP
	copy(ip[12:], []byte{10, 0, 0, 2, 10, 0, 0, 3})
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	tcp := b[34:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12], tcp[13] = 0x50, flags
	return b
}
