package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// DefaultPoolV4Candidates are the CIDRs the default IPv4 pool is taken
// from, in order: the first that overlaps none of the host's addresses and
// routes (Calico's 192.168.0.0/16 when it is free). The README lists them.
var DefaultPoolV4Candidates = []string{
	DefaultPoolV4CIDR,
	"172.16.0.0/16", // below Docker's own 172.17-31 bridges
	"10.168.0.0/16", // clear of the usual 10.0.x / 10.1.x LANs
	"10.250.0.0/16",
	"100.126.0.0/16", // the top of CGNAT space, which VPNs seldom use
}

// ChooseDefaultIPv4 picks the default IPv4 pool's CIDR: the first candidate
// that overlaps nothing in avoid. skipped says why each earlier one was
// passed over ("192.168.0.0/16 overlaps 192.168.1.0/24"), for the log.
func ChooseDefaultIPv4(avoid []netip.Prefix) (cidr string, skipped []string, err error) {
	for _, c := range DefaultPoolV4Candidates {
		p := netip.MustParsePrefix(c)
		var clash []string
		for _, a := range avoid {
			if a.Addr().Is4() && a.Overlaps(p) {
				clash = append(clash, a.String())
			}
		}
		if len(clash) == 0 {
			return c, skipped, nil
		}
		skipped = append(skipped, fmt.Sprintf("%s overlaps %s", c, strings.Join(clash, ", ")))
	}
	return "", skipped, fmt.Errorf("every default IPv4 pool candidate overlaps this host's addresses or routes (%s): start with NO_DEFAULT_POOLS=true and create a pool with calicoctl",
		strings.Join(skipped, "; "))
}
