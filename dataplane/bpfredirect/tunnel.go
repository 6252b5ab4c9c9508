package bpfredirect

import (
	"github.com/cilium/ebpf/asm"

	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier/vxlan"
)

// VXLAN in the programs. A container's packet the kernel would route into
// vxlan.calico is encapsulated by the program itself (outer Ethernet,
// IPv4, UDP and VXLAN headers exactly as the device writes them: the
// device's VNI and port, a zero UDP checksum, the remote VTEP's MAC
// inside) and sent out of the uplink, past the device, the host's output
// path and the outer packet's conntrack. On the receiving host the
// uplink's program takes such a packet apart itself when the inner packet
// goes to one of its containers, past the host's input path, the UDP
// socket and the device. A host whose daemon has the path off, or is of an
// older version, sees the same packets on the wire.

// mapTunnel is an array of one entry: where vxlan.calico is (tunnelVal).
// Zero: no VXLAN device, nothing is encapsulated or taken apart.
const mapTunnel = "tunnel"

// tunnelVal: the host's VTEP address (the outer source, and the outer
// destination it accepts), network order, then the device's ifindex.
const (
	tunLocal   = 0
	tunIfindex = 4
	tunValSize = 8
)

// Offsets of an encapsulated frame: outer Ethernet, IPv4 (no options),
// UDP, VXLAN, the inner Ethernet, then the inner IPv4 header and TCP.
const (
	vxIPVerIHL   = 14
	vxIPFrag     = 18 // id, then flags and fragment offset
	vxIPTTL      = 22 // TTL, protocol, checksum
	vxIPCheck    = 24
	vxIPSaddr    = 26
	vxIPDaddr    = 30
	vxUDP        = 34 // source port, destination port
	vxUDPLen     = 38 // length, checksum
	vxUDPCheck   = 40
	vxFlags      = 42
	vxVNI        = 46
	vxInner      = 50 // the inner Ethernet header
	vxInnerDmac2 = vxInner + 2
	vxInnerIP    = vxInner + 14
	vxOverhead   = vxlan.Overhead
	vxHeaders    = vxInner + headersLen // the whole inner frame's headers
)

const (
	ipprotoUDP = 17
	// BPF_ADJ_ROOM_MAC and bpf_skb_adjust_room's flags (uapi).
	adjRoomMAC    = 1
	adjFixedGSO   = 1 << 0
	adjEncapIPv4  = 1 << 1
	adjEncapUDP   = 1 << 4
	adjEncapL2Eth = 1 << 6
	adjEncapL2Len = 14 << 56
	tcShot        = 2 // TC_ACT_SHOT
	fibTotLen     = 6
	// The outer IPv4 header's words as a little-endian load sees them:
	// no id, DF; TTL 64, UDP, checksum 0 (computed after).
	outerIDFrag  = 0x00400000
	outerTTLProt = 0x00001140
	vxlanFlagI   = 0x08 // VXLAN flags: a valid VNI, reserved bits zero
	vtepMACLE    = 0xee66
	ecnCE        = 0x03 // the TOS byte's ECN bits
)

// Network-order port and VNI (with the reserved byte after it) as
// little-endian loads see them.
var (
	vxPortLE = int32(vxlan.Port>>8 | (vxlan.Port&0xff)<<8)
	vxVNILE  = int32(vxlan.VNI>>16&0xff | (vxlan.VNI>>8&0xff)<<8 | (vxlan.VNI&0xff)<<16)
)

// Stack slots of the encapsulation (below the ones program.go uses).
const (
	stLocal = -104
	stSport = -108
	stFib2  = -176 // the outer packet's route lookup (64 bytes)
)

// parseVXLAN is where parse jumps with a UDP packet on an uplink (R2, R3:
// the packet's start and end). It goes on at "parsed", with R9 = 1, only
// with a VXLAN packet for this host's VTEP (this host's address outside,
// its VTEP MAC inside, Calico's VNI and port, no UDP checksum) holding an
// IPv4 TCP packet without options, SYN, FIN or RST, the inner addresses,
// ports and TOS in the tuple; anything else goes on to the kernel.
func parseVXLAN() asm.Instructions {
	in := asm.Instructions{
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("vxlan"),
		asm.Add.Imm(asm.R4, vxHeaders),
		asm.JGT.Reg(asm.R4, asm.R3, "next"),
	}
	for _, c := range []struct {
		off  int16
		size asm.Size
		mask int32
		want int32
	}{
		{vxUDP + 2, asm.Half, 0, vxPortLE},
		{vxUDPCheck, asm.Half, 0, 0},
		{vxFlags, asm.Word, 0, vxlanFlagI},
		{vxVNI, asm.Word, 0, vxVNILE},
		{vxInner, asm.Half, 0, vtepMACLE},
		{vxInner + ethProto, asm.Half, 0, ethPIPv4LE},
		{vxInner + ipVerIHL, asm.Byte, 0, ipv4NoOptions},
		{vxInner + ipFrag, asm.Half, fragMaskLE, 0},
		{vxInner + ipProto, asm.Byte, 0, ipprotoTCP},
		{vxInner + tcpFlags, asm.Byte, tcpFinSynRst, 0},
	} {
		in = append(in, asm.LoadMem(asm.R0, asm.R2, c.off, c.size))
		if c.mask != 0 {
			in = append(in, asm.And.Imm(asm.R0, c.mask))
		}
		in = append(in, asm.JNE.Imm(asm.R0, c.want, "next"))
	}
	in = append(in,
		// A congestion mark outside is the device's to merge inside.
		asm.LoadMem(asm.R0, asm.R2, ipTOS, asm.Byte),
		asm.And.Imm(asm.R0, ecnCE),
		asm.JEq.Imm(asm.R0, ecnCE, "next"),
		asm.LoadMem(asm.R0, asm.R2, vxInner+ipTTL, asm.Byte),
		asm.JLE.Imm(asm.R0, 1, "next"),
		// The inner MAC is the one derived from this host's address.
		asm.LoadMem(asm.R8, asm.R2, vxIPDaddr, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, vxInnerDmac2, asm.Word),
		asm.JNE.Reg(asm.R0, asm.R8, "next"),
		asm.LoadMem(asm.R0, asm.R2, vxInner+ipSaddr, asm.Word),
		asm.StoreMem(asm.RFP, stTuple, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, vxInner+ipDaddr, asm.Word),
		asm.StoreMem(asm.RFP, stTuple+4, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, vxInner+tcpPorts, asm.Word),
		asm.StoreMem(asm.RFP, stTuple+8, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, vxInner+ipTOS, asm.Byte),
		asm.StoreMem(asm.RFP, stTOS, asm.R0, asm.Word),
		asm.StoreImm(asm.RFP, stKey, 0, asm.Word),
	)
	in = append(in, lookup(mapTunnel, stKey)...)
	return append(in,
		asm.JEq.Imm(asm.R0, 0, "next"),
		asm.LoadMem(asm.R1, asm.R0, tunLocal, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "next"),
		asm.JNE.Reg(asm.R1, asm.R8, "next"), // addressed to this host's VTEP
		asm.Mov.Imm(asm.R9, 1),
		asm.Ja.Label("parsed"),
	)
}

// decap takes the outer headers and the inner Ethernet header off a VXLAN
// packet parseVXLAN accepted (R9 = 1), keeping the segment size of a GSO
// packet; then "rewrite" writes the MACs as for any packet. Should the
// kernel refuse, the packet goes on to it whole.
func decap() asm.Instructions {
	in := asm.Instructions{
		asm.JEq.Imm(asm.R9, 0, "rewrite"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -vxOverhead),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.Mov.Imm(asm.R4, adjFixedGSO),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
	}
	return append(in, count(CountDecap)...)
}

// encap is the from-endpoint program's way out when the route is through
// vxlan.calico (R7) and the packet is ready for the device (MACs and TTL
// written by rewrite): it looks the outer packet's route up (to the
// remote VTEP, the inner route's gateway), and, if that leaves through an
// uplink the path is on, grows the packet by the VXLAN overhead, writes
// the headers and sends it out there. Otherwise, or should the kernel
// refuse, the packet goes into the device as before ("tunnel").
func encap() asm.Instructions {
	in := asm.Instructions{asm.StoreImm(asm.RFP, stKey, 0, asm.Word).WithSymbol("out")}
	in = append(in, lookup(mapTunnel, stKey)...)
	in = append(in,
		asm.JEq.Imm(asm.R0, 0, "tunnel"),
		asm.LoadMem(asm.R1, asm.R0, tunIfindex, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R7, "tunnel"),
		asm.LoadMem(asm.R1, asm.R0, tunLocal, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "tunnel"),
		asm.StoreMem(asm.RFP, stLocal, asm.R1, asm.Word),
	)
	in = append(in, outerRoute()...)
	in = append(in,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetHashRecalc.Call(), // the flow's hash: the source port, for the underlay's ECMP
		asm.And.Imm(asm.R0, 0x3fff),
		asm.Or.Imm(asm.R0, 0xc000),
		asm.HostTo(asm.BE, asm.R0, asm.Half),
		asm.StoreMem(asm.RFP, stSport, asm.R0, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, vxOverhead),
		asm.Mov.Imm(asm.R3, adjRoomMAC),
		asm.LoadImm(asm.R4, adjFixedGSO|adjEncapIPv4|adjEncapUDP|adjEncapL2Eth|adjEncapL2Len, asm.DWord),
		asm.FnSkbAdjustRoom.Call(),
		asm.JNE.Imm(asm.R0, 0, "tunnel"),
	)
	in = append(in, outerHeaders()...)
	in = append(in, count(CountEncap)...) // Counters adds it to CountOut
	return append(in, redirect(asm.FnRedirect, asm.R9)...)
}

// outerRoute looks the route to the remote VTEP up as the host would send
// to it (the inner route's gateway is the remote host's address, the
// VTEP's neighbour entry says it is a peer): R9 = the uplink, which must
// be one the path is on. The inner lookup checked the packet against the
// device's MTU, which leaves room for the headers; tot_len 1 skips a
// second check against the uplink's.
func outerRoute() asm.Instructions {
	in := append(zeroFib(stFib2),
		asm.StoreImm(asm.RFP, stFib2+fibFamily, afInet, asm.Byte),
		asm.StoreImm(asm.RFP, stFib2+fibL4Proto, ipprotoUDP, asm.Byte),
		asm.StoreImm(asm.RFP, stFib2+fibTotLen, 1, asm.Half),
		asm.StoreMem(asm.RFP, stFib2+fibIfindex, asm.R7, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, stLocal, asm.Word),
		asm.StoreMem(asm.RFP, stFib2+fibSrc, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, stFib+fibDst, asm.Word),
		asm.StoreMem(asm.RFP, stFib2+fibDst, asm.R0, asm.Word),
	)
	in = append(in, callFib(stFib2, "tunnel")...)
	in = append(in,
		asm.LoadMem(asm.R9, asm.RFP, stFib2+fibIfindex, asm.Word),
		asm.StoreMem(asm.RFP, stKey, asm.R9, asm.Word),
	)
	in = append(in, lookup(mapIfaces, stKey)...)
	return append(in,
		asm.JEq.Imm(asm.R0, 0, "tunnel"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Imm(asm.R1, 0, "tunnel"), // an endpoint's veth, not an uplink
	)
}

// outerHeaders writes the headers into the room encap made after the
// Ethernet header: that header (the inner one, as rewrite wrote it for
// the device) is copied in after them, the outer one gets the uplink's
// neighbour's MACs, then the outer IPv4 header (with its checksum), UDP
// and VXLAN.
func outerHeaders() asm.Instructions {
	in := asm.Instructions{
		asm.LoadMem(asm.R8, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R8),
		asm.Add.Imm(asm.R4, vxInnerIP+20),
		asm.JGT.Reg(asm.R4, asm.R3, "shot"), // cannot be: the packet just grew
	}
	for _, c := range []struct {
		off  int16
		size asm.Size
	}{{0, asm.Word}, {4, asm.Word}, {8, asm.Word}, {12, asm.Half}} {
		in = append(in,
			asm.LoadMem(asm.R0, asm.R8, c.off, c.size),
			asm.StoreMem(asm.R8, vxInner+c.off, asm.R0, c.size))
	}
	in = append(in, macs(asm.R8, stFib2)...)
	in = append(in,
		asm.LoadMem(asm.R0, asm.R6, 0, asm.Word), // skb->len
		asm.Sub.Imm(asm.R0, vxIPVerIHL),
		asm.HostTo(asm.BE, asm.R0, asm.Half),
		asm.LSh.Imm(asm.R0, 16),
		asm.Or.Imm(asm.R0, ipv4NoOptions),
		asm.StoreMem(asm.R8, vxIPVerIHL, asm.R0, asm.Word),
		asm.StoreImm(asm.R8, vxIPFrag, outerIDFrag, asm.Word),
		asm.StoreImm(asm.R8, vxIPTTL, outerTTLProt, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, stLocal, asm.Word),
		asm.StoreMem(asm.R8, vxIPSaddr, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, stFib+fibDst, asm.Word),
		asm.StoreMem(asm.R8, vxIPDaddr, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, stSport, asm.Word),
		asm.Mov.Imm(asm.R1, vxPortLE),
		asm.LSh.Imm(asm.R1, 16),
		asm.Or.Reg(asm.R0, asm.R1),
		asm.StoreMem(asm.R8, vxUDP, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R6, 0, asm.Word),
		asm.Sub.Imm(asm.R0, vxUDP),
		asm.HostTo(asm.BE, asm.R0, asm.Half), // and a zero checksum
		asm.StoreMem(asm.R8, vxUDPLen, asm.R0, asm.Word),
		asm.StoreImm(asm.R8, vxFlags, vxlanFlagI, asm.Word),
		asm.StoreImm(asm.R8, vxVNI, int64(vxVNILE), asm.Word),
		// The outer IPv4 header's checksum: sum its words, fold, invert.
		asm.Mov.Imm(asm.R1, 0),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.R8),
		asm.Add.Imm(asm.R3, vxIPVerIHL),
		asm.Mov.Imm(asm.R4, 20),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnCsumDiff.Call(),
		asm.LSh.Imm(asm.R0, 32),
		asm.RSh.Imm(asm.R0, 32),
	)
	for range 2 {
		in = append(in,
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.RSh.Imm(asm.R1, 16),
			asm.And.Imm(asm.R0, 0xffff),
			asm.Add.Reg(asm.R0, asm.R1))
	}
	return append(in,
		asm.Xor.Imm(asm.R0, 0xffff),
		asm.StoreMem(asm.R8, vxIPCheck, asm.R0, asm.Half),
	)
}

// macs writes the neighbour's and the outgoing interface's MACs from the
// route lookup at R10+fib into the Ethernet header at dst.
func macs(dst asm.Register, fib int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R0, asm.RFP, fib+fibDmac, asm.Half),
		asm.StoreMem(dst, 0, asm.R0, asm.Half),
		asm.LoadMem(asm.R0, asm.RFP, fib+fibDmac+2, asm.Word),
		asm.StoreMem(dst, 2, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, fib+fibSmac, asm.Word),
		asm.StoreMem(dst, 6, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, fib+fibSmac+4, asm.Half),
		asm.StoreMem(dst, 10, asm.R0, asm.Half),
	}
}
