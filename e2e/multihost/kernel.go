//go:build e2e

package multihost

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/e2e/e2eutil"
)

// Route protocols the daemon marks its routes with.
const (
	EndpointRouteProto = 77 // host route per container address
	BlockRouteProto    = 78 // routes between hosts: blackholes, remote blocks, borrowed addresses
	BGPRouteProto      = 79 // other nodes' blocks learned over BGP, behind the route sync's
	VXLANDevice        = "vxlan.calico"
)

func inNetNS(path string, fn func() error) error { return e2eutil.InNetNS(path, fn) }

// DialInNetNS opens a connection from inside the namespace at nsPath.
func DialInNetNS(nsPath, network, addr string, timeout time.Duration) (net.Conn, error) {
	return e2eutil.DialInNetNS(nsPath, network, addr, timeout)
}

// ListenInNetNS listens inside the namespace at nsPath.
func ListenInNetNS(nsPath, network, addr string) (net.Listener, error) {
	return e2eutil.ListenInNetNS(nsPath, network, addr)
}

// Netlink opens a netlink handle in the namespace at nsPath; close it.
func Netlink(nsPath string) (*netlink.Handle, error) {
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return netlink.NewHandleAt(h)
}

// nl runs f with a netlink handle in the host's namespace.
func (h *Host) nl(f func(*netlink.Handle) error) error {
	nh, err := Netlink(h.NSPath())
	if err != nil {
		return err
	}
	defer nh.Close()
	return f(nh)
}

// Route is a kernel route, rendered for assertions and messages.
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr
	Dev       string
	Proto     int
	Blackhole bool
	Onlink    bool
}

func (r Route) String() string {
	var b strings.Builder
	if r.Blackhole {
		b.WriteString("blackhole ")
	}
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev " + r.Dev)
	}
	if r.Onlink {
		b.WriteString(" onlink")
	}
	fmt.Fprintf(&b, " proto %d", r.Proto)
	return b.String()
}

func renderRoutes(nh *netlink.Handle, rs []netlink.Route) []Route {
	names := map[int]string{}
	var out []Route
	for _, r := range rs {
		var x Route
		if r.Dst != nil {
			a, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			x.Dst = netip.PrefixFrom(a.Unmap(), ones)
		}
		if r.Gw != nil {
			x.Gw, _ = netip.AddrFromSlice(r.Gw)
			x.Gw = x.Gw.Unmap()
		}
		if r.LinkIndex > 0 {
			n, ok := names[r.LinkIndex]
			if !ok {
				if l, err := nh.LinkByIndex(r.LinkIndex); err == nil {
					n = l.Attrs().Name
				}
				names[r.LinkIndex] = n
			}
			x.Dev = n
		}
		x.Proto = int(r.Protocol)
		x.Blackhole = r.Type == unix.RTN_BLACKHOLE
		x.Onlink = r.Flags&int(netlink.FLAG_ONLINK) != 0
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// RoutesWithProto lists the host's main-table routes (IPv4 and IPv6) with
// the given protocol.
func (h *Host) RoutesWithProto(proto int) ([]Route, error) {
	var out []Route
	err := h.nl(func(nh *netlink.Handle) error {
		var err error
		out, err = routesIn(nh, proto)
		return err
	})
	return out, err
}

func routesIn(nh *netlink.Handle, proto int) ([]Route, error) {
	var out []Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := nh.RouteListFiltered(fam, &netlink.Route{Protocol: netlink.RouteProtocol(proto), Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, err
		}
		out = append(out, renderRoutes(nh, rs)...)
	}
	return out, nil
}

// PathMTU is the MTU of the device the namespace at nsPath sends to dst
// through.
func PathMTU(nsPath string, dst netip.Addr) (int, error) {
	nh, err := Netlink(nsPath)
	if err != nil {
		return 0, err
	}
	defer nh.Close()
	rs, err := nh.RouteGet(dst.AsSlice())
	if err != nil || len(rs) == 0 {
		return 0, fmt.Errorf("route to %s: %v", dst, err)
	}
	l, err := nh.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return 0, err
	}
	return l.Attrs().MTU, nil
}

// RouteTo is the route the host's kernel picks for dst.
func (h *Host) RouteTo(dst netip.Addr) (Route, error) {
	var out Route
	err := h.nl(func(nh *netlink.Handle) error {
		rs, err := nh.RouteGet(dst.AsSlice())
		if err != nil {
			return err
		}
		if len(rs) == 0 {
			return fmt.Errorf("no route to %s", dst)
		}
		out = renderRoutes(nh, rs[:1])[0]
		return nil
	})
	return out, err
}

// Links lists the host's link names.
func (h *Host) Links() ([]netlink.Link, error) {
	var out []netlink.Link
	err := h.nl(func(nh *netlink.Handle) error {
		var err error
		out, err = nh.LinkList()
		return err
	})
	return out, err
}

// Link returns one link by name (nil when there is none).
func (h *Host) Link(name string) (netlink.Link, error) {
	var out netlink.Link
	err := h.nl(func(nh *netlink.Handle) error {
		l, err := nh.LinkByName(name)
		if err != nil {
			if _, ok := err.(netlink.LinkNotFoundError); ok {
				return nil
			}
			return err
		}
		out = l
		return nil
	})
	return out, err
}

// LinkStats are a link's packet counters.
type LinkStats struct{ TxPackets, RxPackets, TxBytes, RxBytes uint64 }

// Stats reads a link's counters (zero when the link does not exist).
func (h *Host) Stats(name string) (LinkStats, error) {
	l, err := h.Link(name)
	if err != nil || l == nil || l.Attrs().Statistics == nil {
		return LinkStats{}, err
	}
	s := l.Attrs().Statistics
	return LinkStats{TxPackets: s.TxPackets, RxPackets: s.RxPackets, TxBytes: s.TxBytes, RxBytes: s.RxBytes}, nil
}

// Neighbours lists the permanent IPv4 neighbour entries and the forwarding
// (FDB) entries of a link as "ip lladdr".
func (h *Host) Neighbours(link string) (neigh, fdb []string, err error) {
	err = h.nl(func(nh *netlink.Handle) error {
		l, err := nh.LinkByName(link)
		if err != nil {
			return err
		}
		ns, err := nh.NeighList(l.Attrs().Index, unix.AF_INET)
		if err != nil {
			return err
		}
		for _, n := range ns {
			neigh = append(neigh, fmt.Sprintf("%s %s", n.IP, n.HardwareAddr))
		}
		fs, err := nh.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
		if err != nil {
			return err
		}
		for _, n := range fs {
			if n.IP != nil {
				fdb = append(fdb, fmt.Sprintf("%s %s", n.IP, n.HardwareAddr))
			}
		}
		return nil
	})
	sort.Strings(neigh)
	sort.Strings(fdb)
	return neigh, fdb, err
}

// Capture is a running tcpdump inside a namespace.
type Capture struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// StartCapture runs tcpdump on iface inside the namespace at nsPath with a
// filter, and returns once it listens.
func StartCapture(nsPath, iface, filter string) (*Capture, error) {
	args := append([]string{"--net=" + nsPath, "--", "tcpdump", "-l", "-n", "-i", iface}, strings.Fields(filter)...)
	c := exec.Command("nsenter", args...)
	stdout, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := c.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	cp := &Capture{cmd: c, done: make(chan struct{})}
	ready := make(chan struct{})
	var errText strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "listening on") {
				once = true
				close(ready)
			}
			errText.WriteString(sc.Text() + "\n")
		}
		if !once {
			close(ready)
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			cp.mu.Lock()
			cp.lines = append(cp.lines, sc.Text())
			cp.mu.Unlock()
		}
		_ = c.Wait()
		close(cp.done)
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		_ = c.Process.Kill()
		return nil, fmt.Errorf("tcpdump on %s did not start listening", iface)
	}
	select {
	case <-cp.done:
		return nil, fmt.Errorf("tcpdump on %s exited: %s", iface, errText.String())
	default:
	}
	return cp, nil
}

// Stop ends the capture and returns the packet lines.
func (c *Capture) Stop() []string {
	time.Sleep(200 * time.Millisecond) // let the last packets be printed
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// Run a background command inside a namespace (iperf3 servers and such).
func startInNetNS(ctx context.Context, out io.Writer, nsPath string, argv ...string) (*exec.Cmd, error) {
	c := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath, "--"}, argv...)...)
	c.Stdout, c.Stderr = out, out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c, c.Start()
}
