package plugin

// Running as a Docker managed plugin (`docker plugin install`). Docker talks
// to a managed plugin over one socket, named in its config.json, for every
// interface it declares; it finds the driver by the plugin's name (its
// alias, e.g. calico:latest). So in that mode the daemon
//   - serves both drivers on one socket (--single-socket), whose
//     Plugin.Activate answers NetworkDriver and IpamDriver;
//   - also serves calico.sock (NetworkDriver) and calico-ipam.sock
//     (IpamDriver) in the host's legacy plugin dir (--legacy-plugin-dir),
//     so that the usual `--driver calico --ipam-driver calico-ipam` resolve
//     through Docker's legacy lookup: a managed plugin has one name, NAME:TAG,
//     and Docker finds its drivers only by that full name;
//   - makes /proc/sys writable: runc mounts it read-only in plugin
//     containers, and the data plane sets sysctls (CAP_SYS_ADMIN needed).

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// socketSpec is one plugin socket to serve.
type socketSpec struct {
	Path    string
	Handler http.Handler
}

// socketPlan lists the sockets cfg asks for, in the order to create them:
// the legacy ones first, so that they exist by the time Docker, which waits
// only for the managed plugin's socket, goes on to restore containers.
func socketPlan(cfg *Config, netMux, ipamMux http.Handler) []socketSpec {
	var out []socketSpec
	if cfg.LegacyDir != "" {
		out = append(out,
			socketSpec{filepath.Join(cfg.LegacyDir, api.NetworkSocket), netMux},
			socketSpec{filepath.Join(cfg.LegacyDir, api.IPAMSocket), ipamMux})
	}
	if cfg.SingleSocket {
		return append(out, socketSpec{filepath.Join(cfg.PluginDir, api.NetworkSocket), CombinedMux(netMux, ipamMux)})
	}
	return append(out,
		socketSpec{filepath.Join(cfg.PluginDir, api.NetworkSocket), netMux},
		socketSpec{filepath.Join(cfg.PluginDir, api.IPAMSocket), ipamMux})
}

// servedSocket is a socket being served.
type servedSocket struct {
	Path     string
	Listener net.Listener
	Server   *http.Server
}

// listenAll listens on every planned socket; on failure it closes and
// removes the ones already made.
func listenAll(plan []socketSpec) ([]servedSocket, error) {
	var out []servedSocket
	for _, s := range plan {
		l, err := listenUnix(s.Path)
		if err != nil {
			for _, o := range out {
				o.Listener.Close()
				os.Remove(o.Path)
			}
			return nil, err
		}
		out = append(out, servedSocket{Path: s.Path, Listener: l,
			Server: &http.Server{Handler: s.Handler, ReadHeaderTimeout: 10 * time.Second}})
	}
	return out, nil
}

func socketPaths(s []servedSocket) string {
	p := make([]string, len(s))
	for i := range s {
		p[i] = s[i].Path
	}
	return strings.Join(p, ",")
}

// CombinedMux serves the NetworkDriver and the IpamDriver protocols on one
// socket, as a managed plugin declaring both interface types must.
func CombinedMux(netMux, ipamMux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/Plugin.Activate":
			reply(w, http.StatusOK, map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}})
		case strings.HasPrefix(r.URL.Path, "/IpamDriver."):
			ipamMux.ServeHTTP(w, r)
		default:
			netMux.ServeHTTP(w, r)
		}
	})
}

// ensureProcSysWritable remounts /proc/sys read-write when it is mounted
// read-only, as runc does for every container, Docker's managed plugins
// included. It does nothing on a normal host.
func ensureProcSysWritable(log *slog.Logger) error {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/sys", &st); err != nil {
		return nil // no /proc/sys: the sysctl writes will say so
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return nil
	}
	keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND|keep, ""); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("/proc/sys is read-only (running in a container?) and remounting it failed: %w; give the daemon CAP_SYS_ADMIN (as the managed plugin's config.json does) or a writable /proc/sys (--privileged)", err)
		}
		return fmt.Errorf("/proc/sys is read-only and remounting it read-write failed: %w", err)
	}
	log.Info("remounted /proc/sys read-write (it was read-only, as in a Docker plugin container)")
	return nil
}
