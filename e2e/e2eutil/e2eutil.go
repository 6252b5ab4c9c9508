// Package e2eutil is what the end-to-end suites share: installing a missing
// tool from Debian's packages, finding a static busybox, and the root file
// system of the busybox test image.
package e2eutil

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

var (
	aptMu     sync.Mutex // dpkg takes one install at a time
	aptUpdate sync.Once
)

// AptInstall installs a Debian package (running apt-get update once).
func AptInstall(pkg string) error {
	aptMu.Lock()
	defer aptMu.Unlock()
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("package %s is missing and there is no apt-get", pkg)
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	var updErr error
	aptUpdate.Do(func() {
		c := exec.Command("apt-get", "update")
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			updErr = fmt.Errorf("apt-get update (for %s): %v\n%s", pkg, err, LastLines(string(out), 10))
		}
	})
	if updErr != nil {
		return updErr
	}
	c := exec.Command("apt-get", "install", "-y", "--no-install-recommends", pkg)
	c.Env = env
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %v\n%s", pkg, err, LastLines(string(out), 10))
	}
	return nil
}

// EnsureTool installs pkg when bin is not on the PATH.
func EnsureTool(bin, pkg string) error {
	if _, err := exec.LookPath(bin); err == nil {
		return nil
	}
	if err := AptInstall(pkg); err != nil {
		return err
	}
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("%s still missing after installing %s", bin, pkg)
	}
	return nil
}

// StaticBusybox finds a statically linked busybox for the test image (it
// has no libc), installing busybox-static when needed.
func StaticBusybox() (string, error) {
	find := func() string {
		for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
			if IsStatic(p) {
				return p
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p, nil
	}
	if err := AptInstall("busybox-static"); err != nil {
		return "", err
	}
	if p := find(); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("no statically linked busybox after installing busybox-static")
}

// IsStatic reports whether the ELF file at path needs no dynamic loader.
func IsStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// BusyboxRootfs is the test image's root file system as a tar for `docker
// import`: busybox with every applet linked in /bin, and a root user.
func BusyboxRootfs(busybox string) ([]byte, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	write := func(h *tar.Header, body []byte) error {
		h.ModTime = now
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "var/www"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := write(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode}, nil); err != nil {
			return nil, err
		}
	}
	if err := write(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))}, bb); err != nil {
		return nil, err
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := write(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777}, nil); err != nil {
			return nil, err
		}
	}
	for name, body := range map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n"} {
		if err := write(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, []byte(body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ImportArgs are the `docker import` arguments that make the image.
func ImportArgs(image string) []string {
	return []string{"import", "--change", `CMD ["sh"]`, "--change", "ENV PATH=/bin", "-", image}
}

// LastLines keeps the end of a long command output for an error message.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
