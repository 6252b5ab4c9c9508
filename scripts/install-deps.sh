#!/usr/bin/env bash
# Installs what running and testing need, from Debian's packages, when it is
# missing. With "docker" as argument only what running the daemon needs.
set -euo pipefail
want=(docker.io iptables iproute2)
if [ "${1:-}" != docker ]; then
  want+=(busybox-static util-linux ethtool etcd-server etcd-client docker-registry tcpdump iperf3 bird2 nftables curl iputils-ping)
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH=$PATH:/usr/local/go/bin
fi
if [ "${1:-}" != docker ]; then
  # The engine matrix's Docker 28.5 (Debian forky's, unpacked into the
  # tests' cache, not installed): fetched once, reused by later runs.
  "$(dirname "$0")/docker-engine.sh" fetch 28.5 >/dev/null
fi
command -v go >/dev/null 2>&1 || { echo "Go is not installed: install Go 1.25 or newer (https://go.dev/dl/) and retry" >&2; exit 1; }
