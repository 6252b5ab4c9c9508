package bgp

import (
	"sync"

	"golang.org/x/sys/unix"
)

var md5Once = sync.OnceValue(probeMD5)

// md5Support says whether this kernel can sign TCP segments (TCP_MD5SIG),
// which BGP passwords need: "available", or what is missing.
func md5Support() string { return md5Once() }

func probeMD5() string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return "unknown: " + err.Error()
	}
	defer unix.Close(fd)
	// A key for 127.0.0.1 on a socket that is never connected: the call
	// alone says whether the kernel knows the option.
	sig := unix.TCPMD5Sig{Keylen: 4}
	sig.Addr.Family = unix.AF_INET
	copy(sig.Addr.Data[2:6], []byte{127, 0, 0, 1}) // after the port
	copy(sig.Key[:], "test")
	if err := unix.SetsockoptTCPMD5Sig(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig); err != nil {
		return "missing: this kernel refuses TCP_MD5SIG (" + err.Error() + "): BGP passwords cannot work here (build the kernel with CONFIG_TCP_MD5SIG)"
	}
	return "available"
}
