package vxlan

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The legacy ethtool commands for transmit checksum offload (still served
// by every kernel: they map onto the device's checksum features).
const (
	ethtoolGTXCSUM = 0x16
	ethtoolSTXCSUM = 0x17
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd, data uint32
}

// ifreqData is struct ifreq with its ifr_data pointer.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data uintptr
	_    [16]byte // the rest of the union
}

// txChecksum reads (set == nil) or sets the device's transmit checksum
// offload. Off, the device can do neither TSO nor GSO: every forwarded
// segment is checksummed and encapsulated on its own, which measured 0.35-0.42x
// of the hosts' throughput here (scripts/vxlan-shapes.sh, BENCHMARKS.md).
func txChecksum(name string, set *bool) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: ethtoolGTXCSUM}
	if set != nil {
		v.cmd = ethtoolSTXCSUM
		if *set {
			v.data = 1
		}
	}
	var ifr ifreqData
	copy(ifr.name[:], name)
	ifr.data = uintptr(unsafe.Pointer(&v))
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return false, fmt.Errorf("ethtool %s on %s: %w", map[bool]string{true: "set tx checksum", false: "get tx checksum"}[set != nil], name, e)
	}
	return v.data != 0, nil
}

// ensureTxChecksum turns transmit checksum offload on where someone turned
// it off (as Calico does on kernels it thinks mishandle it), saying so.
func (v *Carrier) ensureTxChecksum() error {
	on, err := txChecksum(Device, nil)
	if err != nil || on {
		return err
	}
	want := true
	if _, err := txChecksum(Device, &want); err != nil {
		return err
	}
	v.log.Warn("transmit checksum offload was off on the VXLAN device: turned it on (off, VXLAN ran at 0.4x of the hosts' throughput)", "device", Device)
	return nil
}
