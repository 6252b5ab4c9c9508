#!/usr/bin/env bash
# The project's test command (`sudo make test`): installs what the tests
# need, runs the unit tests and then the end-to-end suites, and fails if a
# main end-to-end suite did not really run. The single-host suite runs once
# per engine of the version matrix, each in a sandboxed engine of its own:
# the machine's docker.io (20.10) and Docker 28.5 from Debian forky
# (scripts/docker-engine.sh); the Compose suite runs on 28.5 with Compose
# v2; the multi-host and managed-plugin suites on the machine's engine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (sudo make test): the tests create network namespaces and run dockerd" >&2; exit 1; }
scripts/install-deps.sh
export PATH=$PATH:/usr/local/go/bin

echo "== lint"
make -s lint

echo "== unit tests (real embedded etcd, real network namespaces)"
CALICO_REQUIRE_ROOT_TESTS=1 go test -race -count=1 -timeout 20m ./...

echo "== fuzz targets, ${FUZZTIME:-10s} each (make fuzz)"
scripts/fuzz.sh

markers=$(mktemp -d)
trap 'rm -rf "$markers"' EXIT

echo "== fault-injection history test: 8 allocator processes, 3-member etcd cluster under kills, isolations and pauses (RELIABILITY.md)"
CALICO_REQUIRE_ROOT_TESTS=1 CALICO_HISTORY=1 HISTORY_MARKER="$markers/history" \
  go test -race -count=1 -v -run '^TestHistory$' -timeout 15m ./ipam/history/
[ -s "$markers/history" ] || { echo "FAIL: the history test did not run (no marker written)" >&2; exit 1; }
echo "== history test ran: $(cat "$markers/history")"

engines=(20.10 28.5)
for engine in "${engines[@]}"; do
  echo "== end-to-end, single host, Docker $engine (sandboxed engine)"
  extra=()
  # The Compose suite (TestCompose, Compose v2 from the same place) needs Docker 28; it writes its own marker.
  [ "$engine" = 28.5 ] && extra=(CALICO_E2E_COMPOSE_MARKER="$markers/compose-$engine")
  env CALICO_E2E_REQUIRED=1 CALICO_E2E_ENGINE="$engine" CALICO_E2E_MARKER="$markers/single-host-$engine" "${extra[@]}" \
    go test -tags e2e -count=1 -v -timeout 30m ./e2e/
done

echo "== end-to-end: three namespace hosts with an etcd TLS cluster (multi-host), managed plugin via a local registry (machine's engine), faults (the daemon driven over its sockets)"
# -p 1: the suites start dockerds and namespaces of their own; one at a time.
CALICO_E2E_REQUIRED=1 \
CALICO_E2E_MULTIHOST_MARKER="$markers/multi-host" \
CALICO_E2E_FAULTS_MARKER="$markers/faults" \
  go test -tags e2e -p 1 -count=1 -v -timeout 45m ./e2e/multihost/ ./e2e/plugin/ ./e2e/faults/

failed=0
for m in single-host-20.10 single-host-28.5 compose-28.5 multi-host faults; do
  if [ ! -s "$markers/$m" ]; then
    echo "FAIL: the $m end-to-end suite did not run (no marker written)" >&2
    failed=1
    continue
  fi
  echo "== $m e2e suite ran: $(head -n 1 "$markers/$m")"
done
# The newest engine must run every test: none may be "not applicable" there.
if [ -s "$markers/single-host-28.5" ] && ! grep -q ", 0 not applicable" "$markers/single-host-28.5"; then
  echo "FAIL: the single-host suite on Docker 28.5 left tests out: $(head -n 1 "$markers/single-host-28.5")" >&2
  failed=1
fi
exit $failed
