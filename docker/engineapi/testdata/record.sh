#!/usr/bin/env bash
# Records what a real dockerd answers to the Engine API calls engineapi makes
# (and their error answers), for the replay tests in recorded_test.go: a
# private engine (scripts/plugin-sandbox.sh, its own namespaces, nothing of
# the machine's touched) gets each call with curl; the answers are written to
# docker-VERSION.json. Needs root, curl, python3, busybox-static.
#
#   flock /tmp/calico-e2e.lock docker/engineapi/testdata/record.sh 20.10
#   flock /tmp/calico-e2e.lock docker/engineapi/testdata/record.sh 28.5   (scripts/docker-engine.sh fetch 28.5 first)
set -uo pipefail
ver=$1
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
dir=/tmp/rec-sb-${ver//./}
out=$(mktemp -d)
if [ "$ver" = 28.5 ]; then export ENGINE_ROOT=$(scripts/docker-engine.sh root 28.5); fi
export SANDBOX_REGISTRY=0
trap 'scripts/plugin-sandbox.sh down "$dir" >/dev/null 2>&1; rm -rf "$out"' EXIT
scripts/plugin-sandbox.sh up "$dir" || exit 1
sock=$dir/docker.sock
c() { # name method path [body]
  local name=$1 m=$2 p=$3 b=${4:-}
  if [ -n "$b" ]; then
    curl -s -D "$out/$name.hdr" -o "$out/$name.body" --unix-socket "$sock" -X "$m" -H 'Content-Type: application/json' -d "$b" "http://docker$p"
  else
    curl -s -D "$out/$name.hdr" -o "$out/$name.body" --unix-socket "$sock" -X "$m" "http://docker$p"
  fi
}
c ping GET /_ping
c create POST /networks/create '{"Name":"rec-net","CheckDuplicate":true,"Driver":"bridge","EnableIPv6":false,"IPAM":{"Driver":"default","Config":[{"Subnet":"10.213.77.0/24","IPRange":"10.213.77.128/25"}]},"Options":{"com.docker.network.bridge.name":"recbr0"},"Labels":{"org.projectcalico.shared":"true"}}'
c create-dup POST /networks/create '{"Name":"rec-net","CheckDuplicate":true,"Driver":"bridge","IPAM":{"Driver":"default"}}'
c create-badipam POST /networks/create '{"Name":"rec-bad","CheckDuplicate":true,"Driver":"bridge","IPAM":{"Driver":"no-such-ipam"}}'
c list-bri GET '/networks?filters=%7B%22driver%22%3A%5B%22bri%22%5D%7D'
c list-bridge GET '/networks?filters=%7B%22driver%22%3A%5B%22bridge%22%5D%7D'
c inspect GET /networks/rec-net
c inspect-404 GET /networks/nope
D() { PATH="$( [ "$ver" = 28.5 ] && echo "$ENGINE_ROOT/usr/bin:" )$PATH" docker -H "unix://$sock" "$@"; }
mkdir -p "$out/rootfs/bin" && cp /bin/busybox "$out/rootfs/bin/"
tar -C "$out/rootfs" -c . | D import - rec-bb >/dev/null
D run -d --name rec-c --label org.projectcalico.label.role=web --label other=x --network rec-net rec-bb /bin/busybox sleep 600 >"$out/run.out" 2>&1
cid=$(D inspect -f '{{.Id}}' rec-c)
c inspect-with GET /networks/rec-net
c container GET "/containers/$cid/json"
c rm-busy DELETE /networks/rec-net
c containers GET '/containers/json?all=1&filters=%7B%22network%22%3A%5B%22rec-net%22%5D%7D'
c container-404 GET /containers/nope/json
c rm-404 DELETE /networks/nope
D rm -f rec-c >/dev/null
c rm DELETE /networks/rec-net
c unknown GET /no/such/route
rm -rf "$out/rootfs"
python3 - "$out" "$ver" "$here/docker-$ver.json" <<'PY'
import json, sys, os, re
# argv: DIR (NAME.hdr, NAME.body per call) VERSION OUT
d, ver, out = sys.argv[1:4]
calls = {  # name -> (method, path as sent)
 'ping': ('GET', '/_ping'),
 'create': ('POST', '/networks/create'),
 'create-dup': ('POST', '/networks/create'),
 'create-badipam': ('POST', '/networks/create'),
 'list-bri': ('GET', '/networks?filters={"driver":["bri"]}'),
 'list-bridge': ('GET', '/networks?filters={"driver":["bridge"]}'),
 'inspect': ('GET', '/networks/rec-net'),
 'inspect-404': ('GET', '/networks/nope'),
 'inspect-with': ('GET', '/networks/rec-net'),
 'container': ('GET', '/containers/ID/json'),
 'container-404': ('GET', '/containers/nope/json'),
 'containers': ('GET', '/containers/json?all=1&filters={"network":["rec-net"]}'),
 'rm-busy': ('DELETE', '/networks/rec-net'),
 'rm-404': ('DELETE', '/networks/nope'),
 'rm': ('DELETE', '/networks/rec-net'),
 'unknown': ('GET', '/no/such/route'),
}
res = {}
for name, (m, p) in calls.items():
    hdr = open(os.path.join(d, name + '.hdr')).read().splitlines()
    status = int(hdr[0].split()[1])
    ctype = next((h.split(':', 1)[1].strip() for h in hdr if h.lower().startswith('content-type:')), '')
    body = open(os.path.join(d, name + '.body')).read()
    res[name] = {'method': m, 'path': p, 'status': status, 'contentType': ctype, 'body': body}
json.dump({'engine': ver, 'recordedWith': 'docker/engineapi/testdata/record.sh', 'calls': res}, open(out, 'w'), indent=1, sort_keys=True)
PY
rm -rf "$out"
echo "wrote $here/docker-$ver.json"
