// Command calicoctl manages IP pools, nodes and IPAM of calico-libnetwork.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/calico-libnetwork/calico-libnetwork/calicoctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := calicoctl.Main(ctx, os.Args[1:], calicoctl.OSEnv())
	stop()
	os.Exit(code)
}
