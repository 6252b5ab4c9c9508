#!/usr/bin/env bash
# Runs every fuzz target (func FuzzXxx in a _test.go file) for FUZZTIME
# each (default 10s), one at a time. A crasher fails the run and is written
# to the package's testdata/fuzz/FuzzXxx/: fix the bug and commit the file,
# so `go test` replays it from then on. FUZZ=FuzzXxx runs only that target.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
fuzztime=${FUZZTIME:-10s}
started=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
n=0
while IFS=: read -r file name; do
  [ -n "${FUZZ:-}" ] && [ "$name" != "$FUZZ" ] && continue
  pkg=./$(dirname "$file")
  echo "-- $name ($pkg, $fuzztime)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" </dev/null >"$log" 2>&1; then
    grep -v '^fuzz: elapsed' "$log" || true
    echo "FAIL: fuzz target $name in $pkg (the failing input is in $pkg/testdata/fuzz/$name/)" >&2
    exit 1
  fi
  { grep '^fuzz: elapsed' "$log" | tail -n 1; grep -v '^fuzz: elapsed' "$log" | tail -n 2; } || true
  n=$((n + 1))
done < <(grep -rHo --include='*_test.go' --exclude-dir=.git '^func Fuzz[A-Za-z0-9_]*' . | sed 's#^\./##; s#:func #:#' | sort)
[ "$n" -gt 0 ] || { echo "FAIL: no fuzz target ran" >&2; exit 1; }
echo "== $n fuzz targets ran, $fuzztime each, in $(( $(date +%s) - started ))s"
