#!/usr/bin/env bash
# `sudo make bench`: every benchmark, each printing ratios against a baseline
# measured in the same run. Results go to stdout and bench-results.md;
# BENCHMARKS.md records a run and its command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
out="$PWD/bench-results.md" # absolute: go test runs in each package's directory
: > "$out"
section() { echo; echo "## $1"; echo; } >> "$out"

section "IPAM allocation rate vs a bare etcd CAS (go run ./cmd/ipam-bench)"
go run ./cmd/ipam-bench | tee -a "$out"

scripts/ensure-docker.sh
section "docker run --rm: calico vs user-defined bridge"
CALICO_BENCH=1 CALICO_BENCH_OUT="$out.tmp" go test -tags e2e -count=1 -v -run TestDockerRunBench ./e2e/ | tail -20
cat "$out.tmp" >> "$out" 2>/dev/null || true
rm -f "$out.tmp"

section "1,000 containers on one host: docker run latency, memory per endpoint, reconcile and policy pass times"
CALICO_BENCH=1 CALICO_BENCH_OUT="$out.tmp" go test -tags e2e -count=1 -v -timeout 60m -run TestThousandContainersBench ./e2e/ | tail -20
cat "$out.tmp" >> "$out" 2>/dev/null || true
rm -f "$out.tmp"

if ls e2e/multihost/bench_test.go >/dev/null 2>&1; then
  section "Throughput, latency and route convergence across namespace hosts"
  # With perf installed, also where each path's CPU goes, per hop.
  perf_on=0; command -v perf >/dev/null && perf_on=1
  CALICO_BENCH=1 CALICO_BENCH_PERF=$perf_on CALICO_E2E_REQUIRED=1 go test -tags e2e -count=1 -v -run Bench -timeout 30m ./e2e/multihost/ | tee -a "$out"
  section "VXLAN device variants (scripts/vxlan-shapes.sh)"
  scripts/vxlan-shapes.sh 4 2 | tee -a "$out"
fi
if [ -d cmd/policy-bench ]; then
  section "Policy: 1,000 endpoints, 100 policies"
  go run ./cmd/policy-bench | tee -a "$out"
fi
section "Scale: 50 and 500 simulated hosts in a real etcd, watched by real agents (go run ./cmd/scale-bench)"
go run ./cmd/scale-bench -hosts 50,500 | tee -a "$out"
echo "results in $out"
