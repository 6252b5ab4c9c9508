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

echo "== end-to-end tests (real dockerd)"
scripts/ensure-docker.sh
marker=$(mktemp)
rm -f "$marker"
trap 'rm -f "$marker"' EXIT
CALICO_E2E_REQUIRED=1 CALICO_E2E_MARKER="$marker" go test -tags e2e -count=1 -v -timeout 30m ./e2e/
if [ ! -s "$marker" ]; then
  echo "FAIL: the end-to-end suite did not run (no marker written)" >&2
  exit 1
fi
echo "== e2e suite ran: $(cat "$marker")"
