#!/bin/sh
# vxlan-shapes.sh: why one VXLAN set-up runs at host speed and another far
# below it. Two namespace hosts behind a router namespace (the testbed's
# host 1 <-> host 3 shape), each with a container namespace behind a veth
# (routed as the daemon routes them), and a VXLAN device per host as the
# daemon makes it (VNI 4096, port 4789, no learning, static entries). iperf3
# runs container to container through VXLAN, alternating with host to host
# (the baseline), for each device variant:
#   udpcsum on/off (the outer UDP checksum), tx checksum offload on/off on
#   the VXLAN device (what Calico turns off where offload is broken),
#   GRO on/off on the uplinks (and the router's) and on the cali veths.
# Prints Gbit/s, the ratio to the hosts in the same round and TCP
# retransmissions. Root; touches only namespaces it creates. Run under
# `flock /tmp/calico-e2e.lock` so nothing else competes for the CPUs.
#   usage: scripts/vxlan-shapes.sh [seconds per run, default 4] [rounds, default 2]
set -eu
SECS=${1:-4}
ROUNDS=${2:-2}
P=vxs$$
H1=${P}h1 H3=${P}h3 R=${P}r C1=${P}c1 C3=${P}c3
cleanup() { for n in $H1 $H3 $R $C1 $C3; do ip netns del "$n" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
command -v iperf3 >/dev/null || { echo "vxlan-shapes: iperf3 missing (apt-get install iperf3)" >&2; exit 1; }
for n in $H1 $H3 $R $C1 $C3; do ip netns add "$n"; ip -n "$n" link set lo up; done
x() { ns=$1; shift; ip netns exec "$ns" "$@"; }

# hosts <-> router
ip -n $H1 link add uplink type veth peer name r1 netns $R
ip -n $H3 link add uplink type veth peer name r3 netns $R
ip -n $H1 addr add 10.99.1.1/24 dev uplink; ip -n $H1 link set uplink up
ip -n $H3 addr add 10.99.3.3/24 dev uplink; ip -n $H3 link set uplink up
ip -n $R addr add 10.99.1.254/24 dev r1; ip -n $R link set r1 up
ip -n $R addr add 10.99.3.254/24 dev r3; ip -n $R link set r3 up
ip -n $H1 route add default via 10.99.1.254
ip -n $H3 route add default via 10.99.3.254
for n in $H1 $H3 $R; do x $n sysctl -qw net.ipv4.ip_forward=1; done

# containers: a /32 behind a veth, gateway 169.254.1.1 by proxy ARP
ip -n $H1 link add calic1 type veth peer name cali0 netns $C1
ip -n $H3 link add calic3 type veth peer name cali0 netns $C3
setc() { # host hostif container addr
  ip -n "$3" addr add "$4/32" dev cali0; ip -n "$3" link set cali0 up
  ip -n "$3" route add 169.254.1.1 dev cali0 scope link
  ip -n "$3" route add default via 169.254.1.1 dev cali0
  ip -n "$1" link set "$2" up; x "$1" sysctl -qw "net.ipv4.conf.$2.proxy_arp=1"
  ip -n "$1" route add "$4/32" dev "$2" scope link
}
setc $H1 calic1 $C1 10.230.0.1
setc $H3 calic3 $C3 10.230.0.65

mac() { printf '66:ee:%02x:%02x:%02x:%02x' $(echo "$1" | tr . ' '); }
vxlan() { # host local peer peerblock csum
  ip -n "$1" link del vxlan.calico 2>/dev/null || true
  ip -n "$1" link add vxlan.calico type vxlan id 4096 local "$2" dstport 4789 nolearning dev uplink $5
  ip -n "$1" link set vxlan.calico address "$(mac "$2")" mtu 1450 up
  ip -n "$1" neigh replace "$3" lladdr "$(mac "$3")" dev vxlan.calico nud permanent
  x "$1" bridge fdb replace "$(mac "$3")" dev vxlan.calico dst "$3" self permanent
  ip -n "$1" route replace "$4" via "$3" dev vxlan.calico onlink
}

# iperf3 from ns $1 to address $2 in ns $3: "Gbit/s retransmits"
iperf() {
  x "$3" iperf3 -s -1 -D -B "$2" -p 5299 >/dev/null 2>&1; sleep 0.3
  x "$1" iperf3 -c "$2" -p 5299 -t "$SECS" -J 2>/dev/null | python3 -c '
import json,sys
j=json.load(sys.stdin)["end"]["sum_sent"]
print("%.2f %d" % (j["bits_per_second"]/1e9, j.get("retransmits",0)))'
}

variant() { # name csum txcsum uplink-gro cali-gro
  for h in $H1 $H3; do x $h ethtool -K uplink gro "$4" >/dev/null; done
  x $R ethtool -K r1 gro "$4" >/dev/null; x $R ethtool -K r3 gro "$4" >/dev/null
  x $H1 ethtool -K calic1 gro "$5" >/dev/null; x $H3 ethtool -K calic3 gro "$5" >/dev/null
  for c in $C1 $C3; do x $c ethtool -K cali0 gro "$5" >/dev/null; done
  vxlan $H1 10.99.1.1 10.99.3.3 10.230.0.64/26 "$2"
  vxlan $H3 10.99.3.3 10.99.1.1 10.230.0.0/26 "$2"
  for h in $H1 $H3; do x $h ethtool -K vxlan.calico tx "$3" >/dev/null; done
  for c in $C1 $C3; do ip -n $c link set cali0 mtu 1450; done
  ip -n $H1 link set calic1 mtu 1450; ip -n $H3 link set calic3 mtu 1450
  sleep 0.5
  x $C1 busybox ping -c1 -W2 10.230.0.65 >/dev/null 2>&1 || echo "vxlan-shapes: $1: containers do not reach each other" >&2
  r=1
  while [ $r -le "$ROUNDS" ]; do
    hh=$(iperf $H1 10.99.3.3 $H3)
    cc=$(iperf $C1 10.230.0.65 $C3)
    echo "$1 $r $hh $cc" | awk '{printf "| %-58s | %s | %s | %s (%s retr) | %.2f |\n", $1, $2, $3, $5, $6, $5/$3}'
    r=$((r+1))
  done
}

command -v ethtool >/dev/null || { echo "vxlan-shapes: ethtool missing (apt-get install ethtool)" >&2; exit 1; }
echo "| variant | round | hosts Gbit/s | containers via VXLAN Gbit/s | ratio |"
echo "|---|---:|---:|---:|---:|"
# veths have GRO off by default (kernel 6.x); the daemon changes no offload.
variant "udpcsum,vx-tx-csum-on,GRO-off-everywhere(as-the-daemon-does)" udpcsum on off off
variant "noudpcsum,vx-tx-csum-on,GRO-off" noudpcsum on off off
variant "udpcsum,vx-tx-csum-OFF,GRO-off" udpcsum off off off
variant "udpcsum,vx-tx-csum-on,GRO-on-uplinks" udpcsum on on off
variant "udpcsum,vx-tx-csum-on,GRO-on-uplinks-and-cali-veths" udpcsum on on on
variant "noudpcsum,vx-tx-csum-on,GRO-on-uplinks-and-cali-veths" noudpcsum on on on
variant "udpcsum,vx-tx-csum-OFF,GRO-on-uplinks-and-cali-veths" udpcsum off on on
