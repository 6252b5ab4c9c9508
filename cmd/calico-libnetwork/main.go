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
