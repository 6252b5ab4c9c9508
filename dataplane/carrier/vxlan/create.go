package vxlan

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// addDevice creates the VXLAN device with a zero outer UDP checksum.
// RFC 7348 says VXLAN over IPv4 SHOULD send a zero checksum (the inner
// packet carries its own); the kernel computes one unless told not to,
// which costs a software checksum per segment wherever the uplink cannot
// offload tunnel checksums. The netlink library only ever sends the
// attribute to turn the checksum on, so the request is written here.
func addDevice(name string, mtu int, mac net.HardwareAddr, parent int, local net.IP) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(mtu))))
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, []byte(mac)))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("vxlan"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, Port)
	for _, a := range []struct {
		typ int
		val []byte
	}{
		{nl.IFLA_VXLAN_ID, nl.Uint32Attr(VNI)},
		{nl.IFLA_VXLAN_LINK, nl.Uint32Attr(uint32(parent))},
		{nl.IFLA_VXLAN_LOCAL, local.To4()},
		{nl.IFLA_VXLAN_LEARNING, []byte{0}},
		{nl.IFLA_VXLAN_PORT, port},
		{nl.IFLA_VXLAN_UDP_CSUM, []byte{0}},
	} {
		data.AddRtAttr(a.typ, a.val)
	}
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	return nil
}
