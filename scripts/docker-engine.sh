#!/usr/bin/env bash
# Docker engines for the tests that are not the machine's own: Docker 28.5
# (docker.io 28.5.2, containerd 2.1, docker-cli, docker-compose 2.40) from
# Debian's forky suite, through the same Debian mirror as the machine's
# sources, fetched with `apt-get download` and unpacked with `dpkg-deb -x`
# into a cache folder of the tests' own. Nothing is installed over the
# machine's packages: the engine runs from that folder (first in PATH; it
# starts its own containerd and uses the machine's runc), inside a sandbox
# (scripts/plugin-sandbox.sh with ENGINE_ROOT).
#
#   scripts/docker-engine.sh fetch 28.5    download and unpack once (cached); prints the root
#   scripts/docker-engine.sh root 28.5     print the root if it is there, else fail
#   scripts/docker-engine.sh path 28.5     print the PATH prefix for that root
#   scripts/docker-engine.sh root 20.10    "/" : the machine's own docker.io
#
# CALICO_ENGINE_CACHE (default /var/cache/calico-libnetwork/engines) holds
# one folder per engine: root/ (the unpacked packages) and VERSIONS (what
# was unpacked). Needs root, apt-get, dpkg-deb.
set -euo pipefail

die() { echo "docker-engine: $*" >&2; exit 1; }

cmd=${1:-}
engine=${2:-}
[ -n "$cmd" ] && [ -n "$engine" ] || die "usage: $0 fetch|root|path ENGINE (20.10 or 28.5)"
cache=${CALICO_ENGINE_CACHE:-/var/cache/calico-libnetwork/engines}

# The upstream versions each engine means; Debian's revision may move.
case "$engine" in
20.10 | system)
	case "$cmd" in
	fetch | root) echo / ;;
	path) echo "" ;;
	*) die "unknown command $cmd" ;;
	esac
	exit 0
	;;
28.5) suite=forky; pkgs=("docker.io:28.5." "containerd:2.1." "docker-cli:28.5." "docker-compose:2.40.") ;;
*) die "unknown engine $engine: use 20.10 (the machine's docker.io) or 28.5 (Debian forky's)" ;;
esac

dir=$cache/docker-$engine
root=$dir/root

have() { [ -x "$root/usr/sbin/dockerd" ] && [ -s "$dir/VERSIONS" ]; }

print_path() { echo "$root/usr/sbin:$root/usr/bin:$root/usr/libexec/docker/cli-plugins"; }

# mirror: the URI the machine's own Debian sources use for the main archive,
# so the extra suite comes through the same registry.
mirror() {
	local uri=""
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -e "$f" ] || continue
		uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")
		[ -n "$uri" ] && break
	done
	if [ -z "$uri" ] && [ -e /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i !~ /security/) {print $i; exit}}' /etc/apt/sources.list)
	fi
	echo "${uri:-http://deb.debian.org/debian}"
}

fetch() {
	if have; then
		echo "$root"
		return 0
	fi
	for tool in apt-get apt-cache dpkg-deb; do
		command -v "$tool" >/dev/null || die "$tool is missing: this needs a Debian machine"
	done
	local work
	work=$(mktemp -d "${TMPDIR:-/tmp}/docker-engine.XXXXXX")
	trap 'rm -rf "$work"' RETURN
	mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/prefs.d"
	local uri keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	uri=$(mirror)
	[ -e "$keyring" ] || die "$keyring is missing (package debian-archive-keyring)"
	echo "deb [signed-by=$keyring] $uri $suite main" >"$work/sources.list"
	# Only this list, its own state and cache: the machine's apt state is
	# not touched.
	local opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
		-o "Dir::Etc::preferencesparts=$work/prefs.d" -o "Dir::Etc::preferences=$work/prefs"
		-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
		-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
		-o "APT::Sandbox::User=root" -q)
	echo "docker-engine: fetching Docker $engine from $uri $suite into $dir" >&2
	apt-get "${opts[@]}" update >"$work/update.log" 2>&1 || { cat "$work/update.log" >&2; die "apt-get update of $suite from $uri failed"; }
	local want=() p name prefix ver
	for p in "${pkgs[@]}"; do
		name=${p%%:*}
		prefix=${p#*:}
		ver=$(apt-cache "${opts[@]}" madison "$name" 2>/dev/null | awk -v s="$suite" '$0 ~ s {print $3}' | while read -r v; do
			up=${v#*:}
			case "$up" in "$prefix"*) echo "$v"; break ;; esac
		done)
		[ -n "$ver" ] || die "$suite on $uri has no $name $prefix* (it has: $(apt-cache "${opts[@]}" madison "$name" 2>/dev/null | awk '{print $3}' | tr '\n' ' ')); update the versions in $0"
		want+=("$name=$ver")
	done
	(cd "$work/debs" && apt-get "${opts[@]}" download "${want[@]}" >"$work/download.log" 2>&1) || { cat "$work/download.log" >&2; die "apt-get download ${want[*]} failed"; }
	rm -rf "$dir.new"
	mkdir -p "$dir.new/root"
	for deb in "$work"/debs/*.deb; do
		dpkg-deb -x "$deb" "$dir.new/root"
	done
	printf '%s\n' "${want[@]}" >"$dir.new/VERSIONS"
	[ -x "$dir.new/root/usr/sbin/dockerd" ] || die "no usr/sbin/dockerd in the unpacked packages"
	rm -rf "$dir"
	mv "$dir.new" "$dir"
	echo "docker-engine: unpacked $(tr '\n' ' ' <"$dir/VERSIONS")" >&2
	echo "$root"
}

case "$cmd" in
fetch) fetch ;;
root) have || die "Docker $engine is not in $dir: run $0 fetch $engine"; echo "$root" ;;
path) have || die "Docker $engine is not in $dir: run $0 fetch $engine"; print_path ;;
*) die "unknown command $cmd: use fetch, root or path" ;;
esac
