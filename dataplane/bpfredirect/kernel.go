package bpfredirect

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// ReadKernel reads from the running kernel's BTF what the programs need:
// the conntrack kfuncs' IDs, where struct nf_conn keeps its status and
// mark, and the status bits by name. An error says what is missing.
func ReadKernel() (Kernel, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel BTF (CONFIG_DEBUG_INFO_BTF): %w", err)
	}
	return readKernel(spec)
}

func readKernel(spec *btf.Spec) (Kernel, error) {
	var k Kernel
	var errs []error
	for name, id := range map[string]*int64{"bpf_skb_ct_lookup": &k.CTLookup, "bpf_ct_release": &k.CTRelease} {
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err != nil {
			errs = append(errs, fmt.Errorf("kfunc %s (conntrack built in or nf_conntrack's BTF, kernel 6.0+): %w", name, err))
			continue
		}
		tid, err := spec.TypeID(fn)
		if err != nil {
			errs = append(errs, fmt.Errorf("kfunc %s: %w", name, err))
			continue
		}
		*id = int64(tid)
	}
	var conn *btf.Struct
	if err := spec.TypeByName("nf_conn", &conn); err != nil {
		return k, errors.Join(append(errs, fmt.Errorf("struct nf_conn: %w", err))...)
	}
	found := map[string]bool{}
	for _, m := range conn.Members {
		switch m.Name {
		case "status":
			k.StatusOff, found[m.Name] = int16(m.Offset.Bytes()), true
		case "mark":
			k.MarkOff, found[m.Name] = int16(m.Offset.Bytes()), true
		}
	}
	for _, name := range []string{"status", "mark"} {
		if !found[name] {
			errs = append(errs, fmt.Errorf("struct nf_conn has no %s (CONFIG_NF_CONNTRACK_MARK)", name))
		}
	}
	want, forbid, err := statusBits(spec)
	if err != nil {
		errs = append(errs, err)
	}
	k.Want, k.Forbid = want, forbid
	return k, errors.Join(errs...)
}

// statusBits: a connection is taken when it is confirmed, has seen a
// reply and is assured (the TCP handshake done), and is not expected (a
// helper's child), NATed, sequence-adjusted, dying, untracked, helped or
// offloaded: the kernel's path must handle those.
func statusBits(spec *btf.Spec) (want, forbid uint32, err error) {
	var e *btf.Enum
	if err := spec.TypeByName("ip_conntrack_status", &e); err != nil {
		return 0, 0, fmt.Errorf("enum ip_conntrack_status: %w", err)
	}
	vals := map[string]uint64{}
	for _, v := range e.Values {
		vals[v.Name] = v.Value
	}
	bits := func(names ...string) (uint32, error) {
		var b uint32
		for _, n := range names {
			v, ok := vals[n]
			if !ok || v == 0 || v > 1<<30 {
				return 0, fmt.Errorf("conntrack status %s: not in the kernel's BTF", n)
			}
			b |= uint32(v)
		}
		return b, nil
	}
	want, err = bits("IPS_CONFIRMED", "IPS_SEEN_REPLY", "IPS_ASSURED")
	if err != nil {
		return 0, 0, err
	}
	forbid, err = bits("IPS_EXPECTED", "IPS_SRC_NAT", "IPS_DST_NAT", "IPS_SEQ_ADJUST", "IPS_DYING",
		"IPS_UNTRACKED", "IPS_HELPER", "IPS_OFFLOAD", "IPS_HW_OFFLOAD")
	return want, forbid, err
}
