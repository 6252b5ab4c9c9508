#!/usr/bin/env bash
# The project's test command (`sudo make test`): installs what the tests
# need, runs the unit tests and then the end-to-end suite against a real
# dockerd, and fails if the end-to-end suite did not really run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (sudo make test): the tests create network namespaces and run dockerd" >&2; exit 1; }
scripts/install-deps.sh
export PATH=$PATH:/usr/local/go/bin

echo "== lint"
make -s lint

echo "== unit tests (real embedded etcd, real network namespaces)"
CALICO_REQUIRE_ROOT_TESTS=1 go test -race -count=1 -timeout 20m ./...

markers=$(mktemp -d)
trap 'rm -rf "$markers"' EXIT

echo "== fault-injection history test: 8 allocator processes, 3-member etcd cluster under kills, isolations and pauses (RELIABILITY.md)"
CALICO_REQUIRE_ROOT_TESTS=1 CALICO_HISTORY=1 HISTORY_MARKER="$markers/history" \
  go test -race -count=1 -v -run '^TestHistory$' -timeout 15m ./ipam/history/
[ -s "$markers/history" ] || { echo "FAIL: the history test did not run (no marker written)" >&2; exit 1; }
echo "== history test ran: $(cat "$markers/history")"

echo "== end-to-end tests: real dockerd (single host), three namespace hosts with an etcd TLS cluster (multi-host), managed plugin via a local registry"
scripts/ensure-docker.sh
# -p 1: the suites start dockerds and namespaces of their own; one at a time.
CALICO_E2E_REQUIRED=1 \
CALICO_E2E_MARKER="$markers/single-host" \
CALICO_E2E_MULTIHOST_MARKER="$markers/multi-host" \
  go test -tags e2e -p 1 -count=1 -v -timeout 45m ./e2e/...
for m in single-host multi-host; do
  if [ ! -s "$markers/$m" ]; then
    echo "FAIL: the $m end-to-end suite did not run (no marker written)" >&2
    exit 1
  fi
  echo "== $m e2e suite ran: $(cat "$markers/$m")"
done
