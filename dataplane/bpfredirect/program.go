package bpfredirect

import (
	"github.com/cilium/ebpf/asm"
)

// Kernel is what the programs need to know of the running kernel, read
// from its BTF at start (see kernel.go).
type Kernel struct {
	CTLookup, CTRelease int64  // BTF IDs of the kfuncs bpf_skb_ct_lookup, bpf_ct_release
	StatusOff, MarkOff  int16  // offsets of status and mark in struct nf_conn
	Want, Forbid        uint32 // conntrack status bits that must be set / clear
}

// Counter indexes in the counters map.
const (
	CountToEndpoint = iota // redirected into a container (bpf_redirect_peer)
	CountOut               // redirected out of another interface (bpf_redirect)
	CountPassed            // left to the kernel's own path (nftables, routing)
	CountEncap             // encapsulated in VXLAN by the program and sent out (not in CountOut)
	CountDecap             // of CountToEndpoint: taken out of VXLAN by the program
	numCounters
)

// Map names the programs refer to.
const (
	// u32 ifindex -> u32: a host-side cali veth's IPv4 address, or 0 for an
	// uplink or tunnel the path is on. Nothing is redirected to an
	// interface it does not hold.
	mapIfaces   = "ifaces"
	mapAddrs    = "addrs"    // u32 IPv4 address of an endpoint of this host -> u32 its veth's ifindex
	mapCounters = "counters" // per-CPU u64 packet counters, CountToEndpoint...
)

// Offsets in struct __sk_buff (uapi, stable).
const (
	skbPktType        = 4
	skbIngressIfindex = 36
	skbIfindex        = 40
	skbData           = 76
	skbDataEnd        = 80
)

// Packet offsets: Ethernet, then an IPv4 header without options, then TCP.
const (
	ethProto   = 12
	ipVerIHL   = 14
	ipTOS      = 15
	ipFrag     = 20
	ipTTL      = 22
	ipProto    = 23
	ipCheck    = 24
	ipSaddr    = 26
	ipDaddr    = 30
	tcpPorts   = 34
	tcpFlags   = 47
	headersLen = 54
)

// Stack frame (offsets from R10).
const (
	stTuple = -16  // struct bpf_sock_tuple, ipv4: saddr, daddr, sport, dport (12 bytes)
	stTOS   = -4   // the packet's TOS, kept for the route lookup
	stOpts  = -32  // struct bpf_ct_opts (16 bytes)
	stFib   = -96  // struct bpf_fib_lookup (64 bytes)
	stKey   = -100 // u32 map key
)

// Offsets in struct bpf_fib_lookup (uapi).
const (
	fibFamily  = 0
	fibL4Proto = 1
	fibSport   = 2
	fibDport   = 4
	fibIfindex = 8
	fibTOS     = 12
	fibSrc     = 16
	fibDst     = 32
	fibSmac    = 52
	fibDmac    = 58
	fibSize    = 64
)

const (
	tcxNext        = -1 // TCX_NEXT: on to the next program, then the kernel's path
	afInet         = 2
	ipprotoTCP     = 6
	tcpFinSynRst   = 0x07
	fragMaskLE     = 0xff3f // htons(IP_MF | IP_OFFSET) as a little-endian load sees it
	ethPIPv4LE     = 0x0008 // htons(ETH_P_IP) likewise
	ipv4NoOptions  = 0x45
	currentNetns   = -1 // BPF_F_CURRENT_NETNS
	sockTuple4Size = 12
	ctOptsSize     = 16
)

// fromEndpoint is the program on a host-side cali veth's ingress: what a
// container sends. toEndpoint is the one on an uplink's or a tunnel's
// ingress: it only ever delivers into a container. Both take only the
// packets of a TCP connection the kernel's own path has already accepted
// (its conntrack entry established, assured and marked by our policy
// table, no NAT), never a SYN, FIN or RST, and send them where the
// kernel's route lookup would; everything else goes on to the kernel.
func program(k Kernel, ctMark uint32, fromEndpoint bool) asm.Instructions {
	var in asm.Instructions
	// On an uplink most traffic is the host's own: not counted.
	skip := "pass"
	if !fromEndpoint {
		skip = "next"
	}
	in = append(in, parse(skip, !fromEndpoint)...)
	if fromEndpoint {
		in = append(in, antiSpoof()...)
	} else {
		in = append(in, toLocalEndpoint()...)
	}
	in = append(in, ctCheck(k, ctMark)...)
	in = append(in, fibLookup()...)
	in = append(in, rewrite(fromEndpoint)...)
	in = append(in, pass()...)
	if fromEndpoint {
		in = append(in, asm.Mov.Imm(asm.R0, tcShot).WithSymbol("shot"), asm.Return())
	} else {
		in = append(in, parseVXLAN()...)
	}
	return in
}

// parse checks the packet is TCP over IPv4 without options, not a fragment,
// its TTL above 1 and no SYN, FIN or RST set, and puts its addresses and
// ports in the tuple on the stack, or jumps to skip. R6 holds the context
// from here on; R9 is 1 for a packet to take out of VXLAN (a UDP packet
// goes to parseVXLAN when vxlan is set), else 0.
func parse(skip string, vxlan bool) asm.Instructions {
	in := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R9, 0),
		asm.LoadMem(asm.R0, asm.R6, skbPktType, asm.Word),
		asm.JNE.Imm(asm.R0, 0, skip), // PACKET_HOST only: addressed to this host's MAC
		asm.LoadMem(asm.R2, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, headersLen),
		asm.JGT.Reg(asm.R4, asm.R3, skip),
		asm.LoadMem(asm.R0, asm.R2, ethProto, asm.Half),
		asm.JNE.Imm(asm.R0, ethPIPv4LE, skip),
		asm.LoadMem(asm.R0, asm.R2, ipVerIHL, asm.Byte),
		asm.JNE.Imm(asm.R0, ipv4NoOptions, skip),
		asm.LoadMem(asm.R0, asm.R2, ipFrag, asm.Half),
		asm.And.Imm(asm.R0, fragMaskLE),
		asm.JNE.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R0, asm.R2, ipProto, asm.Byte),
	}
	if vxlan {
		in = append(in, asm.JEq.Imm(asm.R0, ipprotoUDP, "vxlan"))
	}
	return append(in,
		asm.JNE.Imm(asm.R0, ipprotoTCP, skip),
		asm.LoadMem(asm.R0, asm.R2, ipTTL, asm.Byte),
		asm.JLE.Imm(asm.R0, 1, skip), // the kernel sends time exceeded
		asm.LoadMem(asm.R0, asm.R2, tcpFlags, asm.Byte),
		asm.And.Imm(asm.R0, tcpFinSynRst),
		asm.JNE.Imm(asm.R0, 0, skip), // conntrack must see a connection open and close
		asm.LoadMem(asm.R7, asm.R2, ipSaddr, asm.Word),
		asm.StoreMem(asm.RFP, stTuple, asm.R7, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, ipDaddr, asm.Word),
		asm.StoreMem(asm.RFP, stTuple+4, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, tcpPorts, asm.Word),
		asm.StoreMem(asm.RFP, stTuple+8, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, ipTOS, asm.Byte),
		asm.StoreMem(asm.RFP, stTOS, asm.R0, asm.Word),
	)
}

// antiSpoof lets through only packets from the address the endpoint map
// holds for the incoming interface (R7 = source address). Others go to the
// kernel, whose host table drops what is spoofed.
func antiSpoof() asm.Instructions {
	in := asm.Instructions{
		asm.LoadMem(asm.R0, asm.R6, skbIfindex, asm.Word).WithSymbol("parsed"),
		asm.StoreMem(asm.RFP, stKey, asm.R0, asm.Word),
	}
	in = append(in, lookup(mapIfaces, stKey)...)
	return append(in,
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R7, "pass"),
	)
}

// lookup looks the key at R10+keyOff up in map m: R0 = the value or nil
// (clobbers R1-R5).
func lookup(m string, keyOff int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference(m),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.FnMapLookupElem.Call(),
	}
}

// toLocalEndpoint lets through only packets to an address of one of this
// host's endpoints: the host's own traffic costs one hash lookup, no
// conntrack lookup, and is not counted.
func toLocalEndpoint() asm.Instructions {
	in := lookup(mapAddrs, stTuple+4) // the destination address
	in[0] = in[0].WithSymbol("parsed")
	return append(in, asm.JEq.Imm(asm.R0, 0, "next"))
}

// ctCheck looks the connection up in conntrack and goes on only when its
// entry has every Want bit, no Forbid bit and the policy table's mark.
func ctCheck(k Kernel, ctMark uint32) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, stOpts, currentNetns, asm.Word), // netns_id
		asm.StoreImm(asm.RFP, stOpts+4, 0, asm.Word),          // error
		asm.StoreImm(asm.RFP, stOpts+8, ipprotoTCP, asm.Word), // l4proto, dir, ct_zone_id 0
		asm.StoreImm(asm.RFP, stOpts+12, 0, asm.Word),         // ct_zone_dir, reserved
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stTuple),
		asm.Mov.Imm(asm.R3, sockTuple4Size),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, stOpts),
		asm.Mov.Imm(asm.R5, ctOptsSize),
		kfuncCall(k.CTLookup),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R7, asm.R0, k.StatusOff, asm.DWord),
		asm.LoadMem(asm.R8, asm.R0, k.MarkOff, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R0),
		kfuncCall(k.CTRelease),
		asm.And.Imm(asm.R7, int32(k.Want|k.Forbid)),
		asm.JNE.Imm(asm.R7, int32(k.Want), "pass"),
		asm.And.Imm(asm.R8, int32(ctMark)),
		asm.JEq.Imm(asm.R8, 0, "pass"),
	}
}

func kfuncCall(id int64) asm.Instruction {
	return asm.Instruction{OpCode: asm.Call.Op(asm.ImmSource), Src: asm.PseudoKfuncCall, Constant: id}
}

// fibLookup asks the kernel's routing (and neighbour) tables where the
// packet goes, as it would forward it; any answer but success (local,
// unreachable, no neighbour yet, needs fragmenting) leaves the packet to
// the kernel. R7 = the outgoing interface.
func fibLookup() asm.Instructions {
	in := append(zeroFib(stFib),
		asm.StoreImm(asm.RFP, stFib+fibFamily, afInet, asm.Byte),
		asm.StoreImm(asm.RFP, stFib+fibL4Proto, ipprotoTCP, asm.Byte),
		asm.LoadMem(asm.R0, asm.RFP, stTuple+8, asm.Half),
		asm.StoreMem(asm.RFP, stFib+fibSport, asm.R0, asm.Half),
		asm.LoadMem(asm.R0, asm.RFP, stTuple+10, asm.Half),
		asm.StoreMem(asm.RFP, stFib+fibDport, asm.R0, asm.Half),
		asm.LoadMem(asm.R0, asm.R6, skbIngressIfindex, asm.Word),
		asm.StoreMem(asm.RFP, stFib+fibIfindex, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, stTOS, asm.Word),
		asm.StoreMem(asm.RFP, stFib+fibTOS, asm.R0, asm.Byte),
		asm.LoadMem(asm.R0, asm.RFP, stTuple, asm.Word),
		asm.StoreMem(asm.RFP, stFib+fibSrc, asm.R0, asm.Word),
		asm.LoadMem(asm.R0, asm.RFP, stTuple+4, asm.Word),
		asm.StoreMem(asm.RFP, stFib+fibDst, asm.R0, asm.Word),
	)
	// tot_len 0: the kernel checks the packet (GSO included) against the
	// outgoing interface's MTU.
	in = append(in, callFib(stFib, "pass")...)
	return append(in, asm.LoadMem(asm.R7, asm.RFP, stFib+fibIfindex, asm.Word))
}

// callFib runs bpf_fib_lookup on the struct at R10+off, as a forwarding
// lookup, and jumps to fail unless it succeeded.
func callFib(off int16, fail string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(off)),
		asm.Mov.Imm(asm.R3, fibSize),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnFibLookup.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
	}
}

// rewrite looks the outgoing interface up (R8: the endpoint's address, 0
// for an uplink; one the path is not on is left to the kernel), writes the
// neighbour's MAC addresses, decrements the TTL (updating the checksum as
// the kernel's ip_decrease_ttl does) and redirects: into the container
// through the veth's peer, or out of the uplink or tunnel (through encap
// for vxlan.calico). toEndpoint programs deliver into containers only,
// taking a VXLAN packet apart first (decap).
func rewrite(fromEndpoint bool) asm.Instructions {
	in := asm.Instructions{asm.StoreMem(asm.RFP, stKey, asm.R7, asm.Word)}
	in = append(in, lookup(mapIfaces, stKey)...)
	in = append(in,
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R8, asm.R0, 0, asm.Word),
	)
	if !fromEndpoint {
		in = append(in, asm.JEq.Imm(asm.R8, 0, "pass"))
		in = append(in, decap()...)
	}
	in = append(in,
		asm.LoadMem(asm.R2, asm.R6, skbData, asm.Word).WithSymbol("rewrite"),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, headersLen),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
	)
	in = append(in, macs(asm.R2, stFib)...)
	in = append(in,
		asm.LoadMem(asm.R0, asm.R2, ipTTL, asm.Byte),
		asm.Sub.Imm(asm.R0, 1),
		asm.StoreMem(asm.R2, ipTTL, asm.R0, asm.Byte),
		asm.LoadMem(asm.R0, asm.R2, ipCheck, asm.Half),
		asm.Add.Imm(asm.R0, 1), // += htons(0x0100), as a little-endian load sees it
		asm.JLT.Imm(asm.R0, 0xffff, "csum"),
		asm.Add.Imm(asm.R0, 1),
		asm.StoreMem(asm.R2, ipCheck, asm.R0, asm.Half).WithSymbol("csum"),
	)
	if fromEndpoint {
		in = append(in, asm.JEq.Imm(asm.R8, 0, "out"))
	}
	in = append(in, count(CountToEndpoint)...)
	in = append(in, redirect(asm.FnRedirectPeer, asm.R7)...)
	if !fromEndpoint {
		return in
	}
	in = append(in, encap()...)
	out := count(CountOut)
	out[0] = out[0].WithSymbol("tunnel")
	in = append(in, out...)
	return append(in, redirect(asm.FnRedirect, asm.R7)...)
}

// redirect sends the packet to the interface whose index is in r, with
// bpf_redirect or bpf_redirect_peer, and ends the program.
func redirect(fn asm.BuiltinFunc, r asm.Register) asm.Instructions {
	return asm.Instructions{asm.Mov.Reg(asm.R1, r), asm.Mov.Imm(asm.R2, 0), fn.Call(), asm.Return()}
}

// zeroFib clears the struct bpf_fib_lookup at R10+off (clobbers R1).
func zeroFib(off int16) asm.Instructions {
	in := asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
	for o := int16(0); o < fibSize; o += 8 {
		in = append(in, asm.StoreMem(asm.RFP, off+o, asm.R1, asm.DWord))
	}
	return in
}

// pass counts the packet as left to the kernel and goes on to it; next
// goes on without counting.
func pass() asm.Instructions {
	in := count(CountPassed)
	in[0] = in[0].WithSymbol("pass")
	return append(in, asm.Mov.Imm(asm.R0, tcxNext).WithSymbol("next"), asm.Return())
}

// count adds one to counter i (clobbers R0-R5).
func count(i int32) asm.Instructions {
	in := asm.Instructions{asm.StoreImm(asm.RFP, stKey, int64(i), asm.Word)}
	in = append(in, lookup(mapCounters, stKey)...)
	return append(in,
		asm.JEq.Imm(asm.R0, 0, "skip"+string(rune('0'+i))),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("skip"+string(rune('0'+i))),
	)
}
