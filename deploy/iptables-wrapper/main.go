// Command iptables-wrapper is iptables (and ip6tables, iptables-save, ...)
// in the calico-libnetwork image and managed plugin. The image carries both
// of iptables' back ends, xtables-nft-multi and xtables-legacy-multi; the
// wrapper runs the one the host's Docker uses, so that the daemon's FORWARD
// accepts land in the same tables as Docker's FORWARD DROP policy. A rule in
// the other back end would be accepted and have no effect.
//
// The back end is CALICO_IPTABLES_BACKEND (nft or legacy) when set, else
// detected: the back end holding Docker's DOCKER-USER chain, else the one
// with more rules that are not calico-libnetwork's own, else nft. A decision
// based on Docker's chains is kept in /dev/shm (fresh in every container
// start) so later calls skip the detection; any other is made again next
// time, as Docker may not have written its rules yet when the plugin starts.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	binDir    = "/usr/sbin"
	cacheFile = "/dev/shm/calico-libnetwork-iptables-backend"
	envName   = "CALICO_IPTABLES_BACKEND"
)

func main() {
	name := filepath.Base(os.Args[0])
	if name == "iptables-wrapper" {
		fmt.Fprintln(os.Stderr, "iptables-wrapper: run me as iptables, ip6tables, iptables-save, ... (a symlink)")
		os.Exit(2)
	}
	be, err := backend()
	if err != nil {
		fmt.Fprintln(os.Stderr, "iptables-wrapper:", err)
		os.Exit(2)
	}
	bin := filepath.Join(binDir, "xtables-"+be+"-multi")
	// The multi binaries choose the tool from argv[0].
	err = syscall.Exec(bin, append([]string{name}, os.Args[1:]...), os.Environ())
	fmt.Fprintf(os.Stderr, "iptables-wrapper: exec %s: %v\n", bin, err)
	os.Exit(2)
}

func backend() (string, error) {
	switch v := strings.ToLower(os.Getenv(envName)); v {
	case "nft", "legacy":
		return v, nil
	case "", "auto":
	default:
		return "", fmt.Errorf("%s=%q: use nft, legacy or auto", envName, v)
	}
	if b, err := os.ReadFile(cacheFile); err == nil {
		if v := strings.TrimSpace(string(b)); v == "nft" || v == "legacy" {
			return v, nil
		}
	}
	nft, nftDocker := score("nft")
	legacy, legacyDocker := score("legacy")
	be := "nft"
	switch {
	case legacyDocker && !nftDocker:
		be = "legacy"
	case nftDocker && !legacyDocker:
	case legacy > nft:
		be = "legacy"
	}
	if nftDocker != legacyDocker {
		_ = os.WriteFile(cacheFile, []byte(be+"\n"), 0o644)
	}
	return be, nil
}

// score counts the rules in a back end's IPv4 tables that are not ours, and
// says whether Docker's DOCKER-USER chain is there. Listing every table
// (no -t) loads no kernel module.
func score(be string) (rules int, docker bool) {
	cmd := exec.Command(filepath.Join(binDir, "xtables-"+be+"-multi"))
	cmd.Args = []string{"iptables-save"}
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":DOCKER-USER "):
			docker = true
		case strings.HasPrefix(line, "-A ") && !strings.Contains(line, "CALICO-LIBNETWORK") && !strings.Contains(line, "calico-libnetwork"):
			rules++
		}
	}
	return rules, docker
}
