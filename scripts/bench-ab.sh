#!/bin/sh
# bench-ab.sh REV [ROUNDS]: the multi-host benchmark (with the per-hop
# profile) on the daemon of REV ("before") and of this tree ("after"),
# alternately, ROUNDS times (default 2). Both sides run this tree's bench
# code (e2e/multihost/bench_test.go), so they measure and print alike.
# Run as root, under the e2e lock:
#   flock /tmp/calico-e2e.lock scripts/bench-ab.sh d6ef1e5
# Results: $OUT (default /tmp/bench-ab)/{before,after}-N.md and .log.
set -eu
rev=$1
rounds=${2:-2}
out=${OUT:-/tmp/bench-ab}
here=$(cd "$(dirname "$0")/.." && pwd)
before=$(mktemp -d /tmp/bench-ab-tree.XXXXXX)
trap 'rm -rf "$before"' EXIT
mkdir -p "$out"
git -C "$here" archive "$rev" | tar -x -C "$before"
cp "$here/e2e/multihost/bench_test.go" "$before/e2e/multihost/bench_test.go"
i=1
while [ "$i" -le "$rounds" ]; do
	for side in before after; do
		dir=$before
		[ "$side" = after ] && dir=$here
		echo "round $i $side start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/log"
		rc=0
		(cd "$dir" && env CALICO_E2E_REQUIRED=1 CALICO_BENCH=1 CALICO_BENCH_PERF=1 CALICO_BENCH_OUT="$out/$side-$i.md" \
			go test -tags e2e -count=1 -v -timeout 30m -run '^TestBenchmarks$' ./e2e/multihost/ >"$out/$side-$i.log" 2>&1) || rc=$?
		echo "round $i $side end $(date -u +%H:%M:%S) rc $rc" | tee -a "$out/log"
	done
	i=$((i + 1))
done
