package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BlockRouteProtocol marks the routes between hosts (remote blocks, borrowed
// addresses, blackholes for this host's blocks). It differs from
// RouteProtocol so that each reconciler owns exactly its own routes.
const BlockRouteProtocol netlink.RouteProtocol = 78

// RouteMode is how packets reach another host's block. Each mode is one
// implementation of Carrier.
type RouteMode string

const (
	ModeDirect RouteMode = "direct"
	ModeVXLAN  RouteMode = "vxlan"
	ModeIPIP   RouteMode = "ipip"
)

// BlockRoute is one wanted route between hosts.
type BlockRoute struct {
	Dst       netip.Prefix
	Blackhole bool       // this host's own block: drop what no endpoint route matches
	Via       netip.Addr // the remote host's address
	Mode      RouteMode
}

func (r BlockRoute) String() string {
	if r.Blackhole {
		return "blackhole " + r.Dst.String()
	}
	return fmt.Sprintf("%s via %s (%s)", r.Dst, r.Via, r.Mode)
}

// Carrier is one way of carrying packets to another host: it prepares what
// the mode needs (a device, neighbour entries) and renders the kernel route.
type Carrier interface {
	// Mode names the carrier.
	Mode() RouteMode
	// Available reports whether this kernel can do it, with the reason if not.
	Available() (bool, string)
	// Prepare makes the carrier's device and peer entries match peers
	// (the remote hosts' addresses that routes through it use).
	Prepare(peers []netip.Addr) error
	// Route renders r for the kernel.
	Route(r BlockRoute) (*netlink.Route, error)
	// Remove deletes everything the carrier made.
	Remove() error
}

// directCarrier sends packets to the remote host's address as next hop: the
// hosts share a subnet, nothing is encapsulated.
type directCarrier struct{}

func (directCarrier) Mode() RouteMode                  { return ModeDirect }
func (directCarrier) Available() (bool, string)        { return true, "" }
func (directCarrier) Prepare(peers []netip.Addr) error { return nil }
func (directCarrier) Remove() error                    { return nil }
func (directCarrier) Route(r BlockRoute) (*netlink.Route, error) {
	return &netlink.Route{Dst: prefixToIPNet(r.Dst), Gw: r.Via.AsSlice(), Protocol: BlockRouteProtocol}, nil
}

// ipipCarrier reports whether the kernel has IPIP. Where it does not (as on
// this project's CI kernels) routes that need it are not installed and the
// reason is reported, never silently dropped.
type ipipCarrier struct{}

func (ipipCarrier) Mode() RouteMode { return ModeIPIP }
func (ipipCarrier) Available() (bool, string) {
	if kernelHasLinkKind("ipip") {
		return true, ""
	}
	return false, "the kernel has no ipip support (module ipip missing): IPIP pools cannot reach other hosts; use vxlanMode instead"
}
func (ipipCarrier) Prepare(peers []netip.Addr) error {
	return errors.New("IPIP is not implemented yet: use vxlanMode")
}
func (ipipCarrier) Remove() error { return nil }
func (ipipCarrier) Route(r BlockRoute) (*netlink.Route, error) {
	return nil, errors.New("IPIP is not implemented yet: use vxlanMode")
}

var (
	kindMu    sync.Mutex
	kindCache = map[string]bool{}
)

// kernelHasLinkKind tries, once per kind, to create a throwaway link of it.
func kernelHasLinkKind(kind string) bool {
	kindMu.Lock()
	defer kindMu.Unlock()
	if v, ok := kindCache[kind]; ok {
		return v
	}
	v := probeLinkKind(kind)
	kindCache[kind] = v
	return v
}

func probeLinkKind(kind string) bool {
	name := "calprobe0"
	var l netlink.Link
	attrs := netlink.LinkAttrs{Name: name}
	switch kind {
	case "ipip":
		l = &netlink.Iptun{LinkAttrs: attrs}
	case "vxlan":
		l = &netlink.Vxlan{LinkAttrs: attrs, VxlanId: 4095, Port: 4790}
	default:
		return false
	}
	if err := netlink.LinkAdd(l); err != nil {
		return false
	}
	if got, err := netlinksafe.LinkByName(name); err == nil {
		_ = netlink.LinkDel(got)
	}
	return true
}

// BlockRoutes reconciles the routes between hosts: it keeps the kernel's
// routes carrying BlockRouteProtocol equal to the wanted set.
type BlockRoutes struct {
	dp       *Dataplane
	carriers map[RouteMode]Carrier
}

// NewBlockRoutes returns a reconciler using the given carriers (direct is
// always present).
func (d *Dataplane) NewBlockRoutes(carriers ...Carrier) *BlockRoutes {
	b := &BlockRoutes{dp: d, carriers: map[RouteMode]Carrier{ModeDirect: directCarrier{}, ModeIPIP: ipipCarrier{}}}
	for _, c := range carriers {
		b.carriers[c.Mode()] = c
	}
	return b
}

// Carrier returns the carrier of a mode.
func (b *BlockRoutes) Carrier(m RouteMode) Carrier { return b.carriers[m] }

// ApplyResult says what Apply did and what it could not do.
type ApplyResult struct {
	Added, Removed int
	Skipped        []string // wanted routes that could not be installed, with why
}

type routeKey struct {
	dst   string
	gw    string
	link  int
	black bool
}

func keyOf(r *netlink.Route) routeKey {
	k := routeKey{dst: r.Dst.String(), link: r.LinkIndex, black: r.Type == unix.RTN_BLACKHOLE}
	if r.Gw != nil {
		k.gw = r.Gw.String()
	}
	return k
}

// Apply makes the kernel's inter-host routes equal to want.
func (b *BlockRoutes) Apply(want []BlockRoute) (ApplyResult, error) {
	var res ApplyResult
	var errs []error
	peers := map[RouteMode][]netip.Addr{}
	for _, r := range want {
		if !r.Blackhole {
			peers[r.Mode] = append(peers[r.Mode], r.Via)
		}
	}
	usable := map[RouteMode]bool{ModeDirect: true}
	for m, c := range b.carriers {
		if m == ModeDirect {
			continue
		}
		if len(peers[m]) == 0 {
			continue
		}
		if ok, why := c.Available(); !ok {
			res.Skipped = append(res.Skipped, why)
			continue
		}
		if err := c.Prepare(uniqueAddrs(peers[m])); err != nil {
			errs = append(errs, fmt.Errorf("prepare %s: %w", m, err))
			continue
		}
		usable[m] = true
	}
	wanted := map[routeKey]*netlink.Route{}
	for _, r := range want {
		var nr *netlink.Route
		if r.Blackhole {
			nr = &netlink.Route{Dst: prefixToIPNet(r.Dst), Type: unix.RTN_BLACKHOLE, Protocol: BlockRouteProtocol}
		} else {
			if !usable[r.Mode] {
				res.Skipped = append(res.Skipped, r.String())
				continue
			}
			c, ok := b.carriers[r.Mode]
			if !ok {
				res.Skipped = append(res.Skipped, r.String()+": no carrier")
				continue
			}
			var err error
			if nr, err = c.Route(r); err != nil {
				errs = append(errs, err)
				continue
			}
			if nr.LinkIndex == 0 {
				// Resolve the device now so the key matches what the kernel
				// reports; a next hop behind a router cannot carry a plain route.
				rs, err := netlink.RouteGet(r.Via.AsSlice())
				if err != nil || len(rs) == 0 || rs[0].Gw != nil {
					res.Skipped = append(res.Skipped, fmt.Sprintf("%s: host %s is not on a directly connected subnet; set the pool's vxlanMode to CrossSubnet or Always", r, r.Via))
					continue
				}
				nr.LinkIndex = rs[0].LinkIndex
			}
		}
		wanted[keyOf(nr)] = nr
	}
	have, err := blockRoutesInKernel()
	if err != nil {
		return res, err
	}
	seen := map[routeKey]bool{}
	for i := range have {
		k := keyOf(&have[i])
		if _, ok := wanted[k]; ok {
			seen[k] = true
			continue
		}
		if err := netlink.RouteDel(&have[i]); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", have[i].Dst, err))
			continue
		}
		res.Removed++
	}
	keys := make([]routeKey, 0, len(wanted))
	for k := range wanted {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].dst < keys[j].dst })
	for _, k := range keys {
		if err := netlink.RouteReplace(wanted[k]); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", k.dst, err))
			continue
		}
		res.Added++
	}
	// Carriers nobody needs any more are taken down.
	for m, c := range b.carriers {
		if len(peers[m]) == 0 && m != ModeDirect && m != ModeIPIP {
			if err := c.Remove(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return res, errors.Join(errs...)
}

func blockRoutesInKernel() ([]netlink.Route, error) {
	var out []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlinksafe.RouteListFiltered(fam, &netlink.Route{Protocol: BlockRouteProtocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// BlockRoutesInKernel lists the inter-host routes currently installed, for
// status output and tests.
func BlockRoutesInKernel() ([]string, error) {
	rs, err := blockRoutesInKernel()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rs {
		s := r.Dst.String()
		switch {
		case r.Type == unix.RTN_BLACKHOLE:
			s = "blackhole " + s
		case r.Gw != nil:
			dev := ""
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				dev = " dev " + l.Attrs().Name
			}
			s += " via " + net.IP(r.Gw).String() + dev
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

func uniqueAddrs(in []netip.Addr) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, a := range in {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}
