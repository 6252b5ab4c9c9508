// Package e2e is the end-to-end suite: it drives a real Docker engine
// against a real calico-libnetwork daemon and checks what a user sees, from
// `docker network create` to the routes in the kernel.
//
// The tests carry the build tag e2e, so `go test ./...` leaves them out.
// Run them as root with
//
//	go test -tags e2e -count=1 -v -timeout 30m ./e2e/
//
// (`sudo make test` runs them once per engine with CALICO_E2E_REQUIRED=1
// and checks the markers). TestMain installs what is missing (docker.io,
// busybox-static, iproute2, iptables, nftables, util-linux), builds the
// daemon, starts a sandbox with the engine of CALICO_E2E_ENGINE
// (scripts/plugin-sandbox.sh; Docker 28.5 is fetched into the tests' cache
// by scripts/docker-engine.sh) and runs this test binary again inside it,
// where "the host" is the sandbox: its network namespace, its /run (so
// /run/docker/plugins and the docker CLI's socket), its engine. Inside, it
// imports the host's static busybox as the image calico-e2e/busybox and
// runs the daemon on a fresh embedded etcd in a temporary data dir, serving
// /run/docker/plugins. Every container and network it makes carries the
// label calico-e2e=<run ID>; at the end it removes them, stops the daemon
// and removes the block routes of its throw-away datastore.
//
// Environment:
//
//	CALICO_E2E_ENGINE=E    20.10 (the machine's docker.io, default), 28.5 (Debian forky's), or
//	                       host (the machine's running dockerd, no sandbox; restart tests skip)
//	CALICO_E2E_COMPOSE_MARKER=PATH  written when TestCompose (Docker 28) passed
//	CALICO_E2E_REQUIRED=1  a missing prerequisite fails the run instead of skipping it
//	CALICO_E2E_MARKER=PATH written when every test ran and passed (not with -run)
//	CALICO_E2E_BIN=PATH    test this daemon binary instead of building one
//	CALICO_E2E_KEEP=1      keep the work dir (daemon log, data dir) after a passing run
//	CALICO_BENCH=1         also run TestDockerRunBench (docker run --rm, calico vs bridge)
//	CALICO_BENCH_RUNS=N    runs per network for the benchmark (default 20)
//	CALICO_BENCH_OUT=PATH  also write the benchmark's markdown table there
package e2e
