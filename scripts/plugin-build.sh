#!/usr/bin/env bash
# Makes and publishes the managed plugin (used by make plugin / plugin-push).
#
#   scripts/plugin-build.sh rootfs IMAGE DIR VERSION
#       DIR/rootfs from IMAGE's file system, DIR/config.json from the repo's
#       (its description stamped with VERSION): what `docker plugin create` takes.
#   scripts/plugin-build.sh create DIR NAME
#       docker plugin create NAME DIR, replacing a disabled plugin of that name.
#   scripts/plugin-build.sh push DIR NAME
#       create NAME (REGISTRY/REPO:TAG), docker plugin push it, then remove the
#       local copy again (installing it from the registry is the way to use it).
#
# DOCKER (default docker) is the client; DOCKER_HOST picks the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
docker=${DOCKER:-docker}

die() { echo "plugin-build: $*" >&2; exit 1; }

create() {
	local dir=$1 name=$2
	[ -f "$dir/config.json" ] && [ -d "$dir/rootfs" ] || die "$dir has no rootfs and config.json: run make plugin first"
	if $docker plugin inspect "$name" >/dev/null 2>&1; then
		if [ "$($docker plugin inspect -f '{{.Enabled}}' "$name")" = true ]; then
			die "plugin $name is installed and enabled here: disable and remove it first (docker plugin disable $name && docker plugin rm $name)"
		fi
		$docker plugin rm "$name" >/dev/null
	fi
	$docker plugin create "$name" "$dir"
}

case "${1:-}" in
rootfs)
	image=${2:?image} dir=${3:?dir} version=${4:?version}
	rm -rf "$dir"
	mkdir -p "$dir/rootfs"
	id=$($docker create "$image")
	trap '$docker rm -f "$id" >/dev/null 2>&1 || true' EXIT
	$docker export "$id" | tar -x -C "$dir/rootfs"
	# Only the first description, the plugin's own (GNU sed's 0,/re/).
	sed -E "0,/\"description\": \"([^\"]*)\"/s//\"description\": \"\1 ($version)\"/" config.json >"$dir/config.json"
	grep -q "($version)" "$dir/config.json" || die "could not stamp the version into $dir/config.json"
	echo "plugin-build: $dir ready ($(du -sh "$dir/rootfs" | cut -f1) rootfs, from $image)"
	;;
create)
	create "${2:?dir}" "${3:?name}"
	;;
push)
	dir=${2:?dir} name=${3:?name}
	case "$name" in */*) ;; *) die "push needs REGISTRY/REPO:TAG, got $name" ;; esac
	create "$dir" "$name"
	trap '$docker plugin rm "$name" >/dev/null 2>&1 || true' EXIT
	$docker plugin push "$name"
	;;
*)
	die "usage: $0 rootfs IMAGE DIR VERSION | create DIR NAME | push DIR NAME"
	;;
esac
