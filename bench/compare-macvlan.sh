#!/usr/bin/env bash
# macvlan comparison, measured in ONE run on this machine: a LAN namespace ("another machine")
# joined by a veth pair to a parent interface in the host namespace, and a container on that
# parent's LAN through
#   vswitch  (this project: `network create --driver macvlan -o parent=P`; the parent is an
#             AF_PACKET uplink port of the userspace switch, the container a veth port)
#   kmacvlan (the kernel's macvlan in bridge mode on the same kind of parent: what Docker's
#             macvlan driver creates)
# Measures single-stream TCP (iperf3) from the LAN machine to the container and ping RTT,
# alternating the two ROUNDS times, and prints the medians and vswitch's ratio to the kernel.
# Writes bench/results/compare-macvlan.json.
#
# Usage (root): bench/compare-macvlan.sh [SECONDS] [ROUNDS]      needs: iperf3 iputils-ping python3
set -u
T=${1:-5}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
for t in iperf3 ping python3; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y iperf3 iputils-ping python3" >&2; exit 1; }
done
TAG=mvb$$
LAN=${TAG}lan
CTR=${TAG}c
PARENT=${TAG}p
NET=10.79.0
WORK=$(mktemp -d /tmp/vswitch-compare-macvlan.XXXXXX)
VPID=""
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"

stop_vswitch() {
  if [ -n "$VPID" ]; then
    "$BIN" --socket $WORK/s rm -f $CTR >/dev/null 2>&1
    "$BIN" --socket $WORK/s network rm ${TAG}net >/dev/null 2>&1
    kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; VPID=""
    rm -rf $WORK/state
  fi
}
cleanup_topo() {
  ip netns del $CTR 2>/dev/null
  ip netns del $LAN 2>/dev/null
  ip link del $PARENT 2>/dev/null
}
cleanup() {
  stop_servers
  stop_vswitch
  cleanup_topo
  rm -rf "$WORK"
}
trap cleanup EXIT

# The LAN: namespace $LAN whose eth0 ($NET.1) is the peer of $PARENT in the host namespace.
lan_topo() {
  ip netns add $LAN
  ip link add $PARENT type veth peer name eth0 netns $LAN
  ip -n $LAN addr add $NET.1/24 dev eth0
  ip -n $LAN link set eth0 up; ip -n $LAN link set lo up
  ip link set $PARENT up
}

setup() {
  lan_topo
  case $1 in
  kmacvlan)
    ip netns add $CTR
    ip link add ${TAG}m link $PARENT type macvlan mode bridge
    ip link set ${TAG}m netns $CTR
    ip -n $CTR link set ${TAG}m name eth0
    ip -n $CTR addr add $NET.10/24 dev eth0
    ip -n $CTR link set eth0 up; ip -n $CTR link set lo up
    ip -n $CTR route add default via $NET.1
    IP=$NET.10 ;;
  vswitch)
    "$BIN" --socket $WORK/s daemon --state-dir $WORK/state >$WORK/daemon.log 2>&1 &
    VPID=$!
    for _ in $(seq 100); do "$BIN" --socket $WORK/s network ls >/dev/null 2>&1 && break; sleep 0.1; done
    "$BIN" --socket $WORK/s network create --driver macvlan -o parent=$PARENT \
      --subnet $NET.0/24 --gateway $NET.1 ${TAG}net >/dev/null || return 1
    "$BIN" --socket $WORK/s run --name $CTR --network ${TAG}net --ip $NET.10 >/dev/null || return 1
    IP=$NET.10 ;;
  esac
}

teardown() {
  [ "$1" = vswitch ] && stop_vswitch
  cleanup_topo
}

measure() {
  local mode=$1 rtt tcp
  setup $mode || { echo "$mode: setup failed" >&2; teardown $mode; return 1; }
  sleep 1
  ip netns exec $LAN ping -c 3 -i 0.2 -W 2 $IP >/dev/null || { echo "$mode: no connectivity" >&2; teardown $mode; return 1; }
  rtt=$(ip netns exec $LAN ping -c 50 -i 0.01 -q $IP | tail -1 | awk -F/ '{print $5}')
  serve ip netns exec $CTR iperf3 -s -1; sleep 0.5
  tcp=$(ip netns exec $LAN iperf3 -c $IP -t $T -J | python3 -c 'import json,sys;d=json.load(sys.stdin);print("%.2f"%(d["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null)
  stop_servers
  [ -n "$tcp" ] || { echo "$mode: iperf3 failed" >&2; teardown $mode; return 1; }
  teardown $mode
  echo "$mode $tcp $rtt"
}

printf '%-9s %5s %10s %8s\n' target round tcp_gbps rtt_ms
RES=""
for r in $(seq $ROUNDS); do
  for m in vswitch kmacvlan; do
    row=$(measure $m) || continue
    set -- $row
    printf '%-9s %5s %10s %8s\n' $1 $r $2 $3
    RES="$RES$row;"
  done
done
python3 - "$RES" "$OUT/compare-macvlan.json" <<'EOF'
import json, sys, datetime, platform, statistics
runs = {}
for r in sys.argv[1].split(';'):
    if r.strip():
        m, tcp, rtt = r.split()
        runs.setdefault(m, []).append((float(tcp), float(rtt)))
med = {m: {"tcp_gbps": statistics.median(t for t, _ in v), "rtt_ms": statistics.median(x for _, x in v),
           "runs": len(v)} for m, v in runs.items()}
for m, v in med.items():
    print(f"{m:9s} median: tcp {v['tcp_gbps']:.2f} Gbit/s  rtt {v['rtt_ms']:.3f} ms  ({v['runs']} runs)")
ratios = {}
v, k = med.get("vswitch"), med.get("kmacvlan")
if v and k:
    ratios = {"tcp": round(v["tcp_gbps"] / k["tcp_gbps"], 2) if k["tcp_gbps"] else None,
              "rtt": round(v["rtt_ms"] / k["rtt_ms"], 2) if k["rtt_ms"] else None}
    print(f"vswitch / kernel macvlan (bridge): tcp {ratios['tcp']}x  rtt {ratios['rtt']}x (lower is better)")
json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "kernel": platform.release(), "medians": med, "runs": runs, "ratios": ratios},
          open(sys.argv[2], "w"), indent=2)
EOF
