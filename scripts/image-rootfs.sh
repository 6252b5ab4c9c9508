#!/usr/bin/env bash
# Stages the root file system of the calico-libnetwork image (and so of the
# managed plugin) in OUT, from binaries `make build` made and this machine's
# iptables (Debian's iptables package, or any glibc system's):
#
#   /usr/local/bin/calico-libnetwork, /usr/local/bin/calicoctl   (static Go)
#   /usr/sbin/iptables, ip6tables, *-save, *-restore -> iptables-wrapper
#       (static Go: runs the nft or legacy back end, whichever the host's
#       Docker uses; see deploy/iptables-wrapper)
#   /usr/sbin/xtables-nft-multi, /usr/sbin/xtables-legacy-multi, their shared
#       libraries, the dynamic loader and the xtables extensions
#   empty /tmp, /run, /var/lib/calico; /var/run -> /run
#
# The daemon execs nothing but iptables: netlink, sysctls and etcd are Go.
#
# Usage: scripts/image-rootfs.sh OUT BINDIR WRAPPER
set -euo pipefail

out=${1:?usage: $0 OUT BINDIR WRAPPER}
bindir=${2:?usage: $0 OUT BINDIR WRAPPER}
wrapper=${3:?usage: $0 OUT BINDIR WRAPPER}

die() { echo "image-rootfs: $*" >&2; exit 1; }

static() { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'program interpreter'; }

command -v readelf >/dev/null || die "readelf is missing (package binutils)"
command -v ldd >/dev/null || die "ldd is missing (package libc-bin)"
for b in "$bindir/calico-libnetwork" "$wrapper"; do
	[ -x "$b" ] || die "$b is missing: run make build first"
	static "$b" || die "$b is dynamically linked: build it with CGO_ENABLED=0 (make build does)"
done
multis=()
for m in xtables-nft-multi xtables-legacy-multi; do
	p=$(command -v "$m" || true)
	[ -n "$p" ] || for d in /usr/sbin /sbin; do [ -x "$d/$m" ] && p=$d/$m; done
	[ -n "$p" ] || die "$m is missing: install iptables (apt-get install iptables)"
	multis+=("$(readlink -f "$p")")
done

rm -rf "$out"
mkdir -p "$out"/usr/local/bin "$out"/usr/sbin "$out"/tmp "$out"/run "$out"/var/lib/calico "$out"/etc
chmod 1777 "$out/tmp"
ln -s ../run "$out/var/run"
install -m 0755 "$bindir/calico-libnetwork" "$out/usr/local/bin/"
if [ -x "$bindir/calicoctl" ]; then
	static "$bindir/calicoctl" || die "$bindir/calicoctl is dynamically linked: build it with CGO_ENABLED=0"
	install -m 0755 "$bindir/calicoctl" "$out/usr/local/bin/"
fi
install -m 0755 "$wrapper" "$out/usr/sbin/iptables-wrapper"
for n in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
	ln -s iptables-wrapper "$out/usr/sbin/$n"
done
# /etc files the C library reads; tiny and harmless.
printf 'root:x:0:0:root:/:/nonexistent\n' >"$out/etc/passwd"
printf 'root:x:0:\n' >"$out/etc/group"
[ -r /etc/protocols ] && cp /etc/protocols "$out/etc/"

# Mirror a merged /usr (/lib -> usr/lib, ...) so that every path the loader
# may be asked for exists once.
for top in bin sbin lib lib32 lib64 libx32; do
	if [ -L "/$top" ]; then
		t=$(readlink "/$top")
		ln -s "$t" "$out/$top"
		case "$t" in /*) mkdir -p "$out$t" ;; *) mkdir -p "$out/$t" ;; esac
	fi
done

# copy FILE to the same path in OUT, following symlinks (a library's soname
# link becomes the file itself).
copy() {
	local f=$1
	[ -e "$out$f" ] && return 0
	mkdir -p "$out$(dirname "$f")"
	cp -L "$f" "$out$f"
}

for m in "${multis[@]}"; do
	install -D -m 0755 "$m" "$out/usr/sbin/$(basename "$m")"
done
# Extensions (libxt_*.so, ...) are dlopen()ed from the directory libxtables
# was built with: the one next to it.
libxtables=$(ldd "${multis[0]}" | awk '/libxtables\.so/ {print $3}')
[ -n "$libxtables" ] || die "cannot find libxtables of ${multis[0]}"
xtdir=""
for d in "/usr/lib/$(basename "$(dirname "$libxtables")")/xtables" "$(dirname "$libxtables")/xtables" /usr/lib/xtables /usr/lib64/xtables /lib/xtables; do
	if [ -d "$d" ]; then xtdir=$(readlink -f "$d") && break; fi
done
[ -n "$xtdir" ] || die "cannot find the xtables extension directory"
mkdir -p "$out$xtdir"
cp -a "$xtdir"/*.so "$out$xtdir/"
# Every shared object the binaries and extensions need, and the loader.
for f in "${multis[@]}" "$xtdir"/*.so; do
	ldd "$f" 2>/dev/null | awk '
		$2 == "=>" && $3 ~ /^\// { print $3 }
		$1 ~ /^\// { print $1 }'
done | sort -u | while read -r lib; do
	copy "$lib"
done
# Prove it runs in the staged tree (no chroot needed: check the closure).
for m in "${multis[@]}"; do
	missing=$(ldd "$m" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r l; do [ -e "$out$l" ] || echo "$l"; done)
	[ -z "$missing" ] || die "libraries not staged for $m: $missing"
done
echo "image-rootfs: staged $(du -sh "$out" | cut -f1) in $out (xtables from $xtdir)"
