// Command calicoctl manages IP pools, nodes and IPAM of calico-libnetwork.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/calico-libnetwork/calico-libnetwork/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], ctl.OSEnv())
	stop()
	os.Exit(code)
}
