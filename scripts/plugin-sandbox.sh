#!/usr/bin/env bash
# A private Docker engine for building, installing and testing the managed
# plugin without touching the host's engine, network or plugins. Everything
# runs in new PID, mount and network namespaces held by one process:
#   - a fresh /run (so /run/docker/plugins, /run/docker.sock and the engine's
#     exec root are its own: plugin names and sockets cannot clash) and a
#     fresh /var/lib (so the plugin's default data dir, /var/lib/calico, is
#     its own);
#   - its own network (lo, and a veth uplink0 10.213.0.1/24 holding the
#     default route), so the plugin's veths, routes and iptables rules, and
#     the engine's, never meet the host's;
#   - dockerd with its own data root and containerd, FORWARD policy DROP as
#     on a real host, listening on DIR/docker.sock for the host's docker CLI;
#   - Debian's docker-registry on 127.0.0.1:5000 (inside the namespace).
# Stopping the holder kills every process in the PID namespace, so nothing
# (containers, shims, veths, mounts) outlives `down`, even after a failure.
#
#   scripts/plugin-sandbox.sh up DIR          start; then export DOCKER_HOST=unix://DIR/docker.sock
#   scripts/plugin-sandbox.sh hold DIR        (optional, before up) run the namespace holder in
#                                             the foreground: a caller that must not leak the
#                                             sandbox when it dies runs this with a parent-death
#                                             signal (the e2e test does)
#   scripts/plugin-sandbox.sh stop-docker DIR stop dockerd (SIGTERM, as a host shutdown does)
#   scripts/plugin-sandbox.sh start-docker DIR
#   scripts/plugin-sandbox.sh exec DIR CMD... run CMD in the sandbox (e.g. ip route, iptables -S)
#   scripts/plugin-sandbox.sh down DIR        stop everything and remove DIR
#
# Settings for `up` (kept in DIR, so later start-docker calls use the same):
#   ENGINE_ROOT=PATH    run dockerd and containerd from this unpacked root
#                       (scripts/docker-engine.sh fetch 28.5) instead of the
#                       machine's docker.io; the machine's runc still serves
#   SANDBOX_REGISTRY=0  no registry
#   SANDBOX_DAEMON_JSON='{"live-restore": true}'  the engine's daemon.json
#                       (DIR/daemon.json; rewrite it between stop-docker and
#                       start-docker to change it)
#
# Needs root, util-linux (unshare, nsenter), iproute2, docker.io and
# docker-registry. DIR must be short: unix socket paths are limited to 107 bytes.
set -euo pipefail

die() { echo "plugin-sandbox: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 up|hold|stop-docker|start-docker|exec|down DIR [CMD...]"
[ "$(id -u)" = 0 ] || die "run as root"
case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac

holder_pid() { cat "$dir/holder.pid" 2>/dev/null || true; }

# init: the host PID of the PID namespace's first process.
init_pid() { cat "$dir/init.pid" 2>/dev/null || true; }

# inside: this process already runs in the sandbox (a test re-executed in
# it), where /run/sandbox-dir names it.
inside() { [ "$(cat /run/sandbox-dir 2>/dev/null)" = "$dir" ]; }

in_ns() {
	if inside; then
		"$@"
		return
	fi
	local init
	init=$(init_pid)
	[ -n "$init" ] && kill -0 "$init" 2>/dev/null || die "sandbox $dir is not running"
	nsenter -t "$init" -m -n -p -- "$@"
}

docker_pid() { in_ns cat /run/docker.pid 2>/dev/null || true; }

# engine_path: PATH for dockerd, with the sandbox's engine root first.
engine_path() {
	local root
	root=$(cat "$dir/engine-root" 2>/dev/null || true)
	if [ -n "$root" ] && [ "$root" != / ]; then
		echo "$root/usr/sbin:$root/usr/bin:$PATH"
	else
		echo "$PATH"
	fi
}

start_docker() {
	# setsid: a ^C to the caller does not reach the engine.
	in_ns env PATH="$(engine_path)" setsid dockerd --config-file "$dir/daemon.json" --data-root "$dir/docker" \
		--exec-root /run/docker --pidfile /run/docker.pid \
		-H unix:///run/docker.sock -H "unix://$dir/docker.sock" \
		--bridge=none --log-level=info >>"$dir/dockerd.log" 2>&1 </dev/null &
	for _ in $(seq 1 60); do
		if PATH="$(engine_path)" docker -H "unix://$dir/docker.sock" info >/dev/null 2>&1; then
			return 0
		fi
		inside || kill -0 "$(init_pid)" 2>/dev/null || die "the sandbox is gone"
		sleep 1
	done
	tail -n 30 "$dir/dockerd.log" >&2 || true
	die "dockerd did not answer within 60s (log: $dir/dockerd.log)"
}

stop_docker() {
	local pid
	pid=$(docker_pid)
	[ -n "$pid" ] || return 0
	in_ns kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 60); do
		in_ns kill -0 "$pid" 2>/dev/null || return 0
		sleep 1
	done
	echo "plugin-sandbox: dockerd did not stop within 60s; killing it" >&2
	in_ns kill -KILL "$pid" 2>/dev/null || true
}

# The holder: unshare stays in the host's namespaces and waits; its child
# is PID 1 of the new PID namespace and dies (SIGKILL, taking every process
# of the namespace with it) when the holder goes.
hold() {
	mkdir -p "$dir"
	echo $$ >"$dir/holder.pid"
	exec unshare --pid --fork --kill-child=SIGKILL --mount --mount-proc --net --propagation private -- \
		bash -c '
			set -e
			mount -t tmpfs -o mode=0755 tmpfs /run
			mount -t tmpfs -o mode=0755 tmpfs /var/lib
			mkdir -p /run/docker/plugins /run/lock
			ip link set lo up
			ip link add uplink0 type veth peer name uplink0p
			ip link set uplink0p up
			ip addr add 10.213.0.1/24 dev uplink0
			ip link set uplink0 up
			ip route add default dev uplink0
			iptables -P FORWARD DROP   # as Docker leaves a real host
			echo "$0" >/run/sandbox-dir
			touch /run/sandbox-ready
			trap "exit 0" TERM
			while :; do sleep 3600 & wait $! || true; done
		' "$dir"
}

up() {
	local registry=${SANDBOX_REGISTRY:-1} root=${ENGINE_ROOT:-/}
	local tools=(unshare nsenter ip docker)
	[ "$registry" = 0 ] || tools+=(docker-registry)
	[ "$root" != / ] || tools+=(dockerd)
	for tool in "${tools[@]}"; do
		command -v "$tool" >/dev/null || die "$tool is missing (packages: util-linux iproute2 docker.io docker-registry)"
	done
	[ "$root" = / ] || [ -x "$root/usr/sbin/dockerd" ] || die "ENGINE_ROOT $root has no usr/sbin/dockerd (scripts/docker-engine.sh fetch)"
	[ ${#dir} -le 40 ] || die "DIR $dir is too long (max 40 bytes): unix socket paths below it must stay under 108"
	[ ! -e "$dir/init.pid" ] || die "$dir already holds a sandbox: run down first"
	mkdir -p "$dir/registry" "$dir/docker"
	echo "${SANDBOX_DAEMON_JSON:-"{}"}" >"$dir/daemon.json"
	echo "$root" >"$dir/engine-root"
	cat >"$dir/registry.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		storage:
		  filesystem:
		    rootdirectory: $dir/registry
		  delete:
		    enabled: true
		http:
		  addr: 127.0.0.1:5000
	EOF
	if [ -z "$(holder_pid)" ] || ! kill -0 "$(holder_pid)" 2>/dev/null; then
		setsid "$0" hold "$dir" >"$dir/holder.log" 2>&1 </dev/null &
	fi
	local init=""
	for _ in $(seq 1 50); do
		init=""
		[ -n "$(holder_pid)" ] && init=$(ps -o pid= --ppid "$(holder_pid)" 2>/dev/null | tr -d ' ' || true)
		if [ -n "$init" ] && nsenter -t "$init" -m -- test -e /run/sandbox-ready 2>/dev/null; then
			break
		fi
		init=""
		sleep 0.2
	done
	[ -n "$init" ] || { cat "$dir/holder.log" >&2; die "the namespace holder did not start"; }
	echo "$init" >"$dir/init.pid"
	if [ "$registry" != 0 ]; then
		in_ns setsid docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 </dev/null &
	fi
	start_docker
	if [ "$registry" != 0 ]; then
		for _ in $(seq 1 30); do
			in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break
			sleep 0.5
		done
		in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null || { cat "$dir/registry.log" >&2; die "the registry did not start"; }
		echo "sandbox up: export DOCKER_HOST=unix://$dir/docker.sock   (registry 127.0.0.1:5000 inside)"
	else
		echo "sandbox up: export DOCKER_HOST=unix://$dir/docker.sock"
	fi
}

down() {
	local holder
	[ -d "$dir" ] || return 0
	if rmdir "$dir" 2>/dev/null; then return 0; fi # empty: a sandbox never started
	[ -e "$dir/holder.pid" ] || [ -e "$dir/daemon.json" ] || die "$dir does not look like a sandbox (no holder.pid or daemon.json): not removing it"
	holder=$(holder_pid)
	if [ -n "$holder" ] && kill -0 "$holder" 2>/dev/null; then
		# Stop the engine first so that it stops containers and plugins the
		# way a host shutdown does; then the rest goes with the holder.
		stop_docker || true
		kill -TERM "$holder" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$holder" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$holder" 2>/dev/null || true
		local init
		init=$(init_pid)
		for _ in $(seq 1 50); do
			[ -n "$init" ] && kill -0 "$init" 2>/dev/null || break
			sleep 0.2
		done
	fi
	# Container cgroups left by a killed engine (cgroup v1 cgroupfs).
	if [ -d "$dir/docker/containers" ]; then
		for id in $(ls "$dir/docker/containers" 2>/dev/null); do
			find /sys/fs/cgroup -depth -type d -path "*/docker/$id" -exec rmdir {} \; 2>/dev/null || true
		done
	fi
	if [ -d "$dir/docker/plugins" ]; then
		for id in $(ls "$dir/docker/plugins" 2>/dev/null); do
			find /sys/fs/cgroup -depth -type d -path "*/$id" -exec rmdir {} \; 2>/dev/null || true
		done
	fi
	rm -rf "$dir"
}

case "$cmd" in
hold) hold ;;
up) up ;;
down) down ;;
stop-docker) stop_docker ;;
start-docker) start_docker ;;
exec)
	shift 2
	in_ns "$@"
	;;
*) die "unknown command $cmd: use up, hold, stop-docker, start-docker, exec or down" ;;
esac
