// Command calico-libnetwork is the per-host daemon serving Docker's calico
// network driver and calico-ipam IPAM driver.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/plugin"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "uninstall" {
		os.Exit(uninstall(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "ready" {
		os.Exit(ready(os.Args[2:]))
	}
	cfg, err := plugin.ParseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "calico-libnetwork:", err)
		os.Exit(2)
	}
	if cfg.ShowVersion {
		fmt.Printf("calico-libnetwork %s (commit %s, built %s)\n", api.Version, api.BuildCommit(), plugin.Date)
		return
	}
	// Everything the daemon creates (sockets, the datastore, records in the
	// data dir) is root's alone, whatever umask it was started with.
	syscall.Umask(0o077)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := plugin.Run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "calico-libnetwork:", err)
		os.Exit(1)
	}
}

// uninstall is `calico-libnetwork uninstall [--plugin-dir DIR]`: it removes
// the firewall rules, policy table, inter-host routes and VXLAN device the
// daemon leaves behind when it stops (see plugin.Uninstall).
func uninstall(args []string) int {
	fs := flag.NewFlagSet("calico-libnetwork uninstall", flag.ContinueOnError)
	dir := fs.String("plugin-dir", "/run/docker/plugins", "where the daemon serves its sockets (it must be stopped)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	res, err := plugin.Uninstall(*dir)
	for _, r := range res.Removed {
		fmt.Println("removed", r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "calico-libnetwork uninstall:", err)
		return 1
	}
	return 0
}
