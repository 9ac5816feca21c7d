#!/usr/bin/env bash
# Peer comparison, measured in ONE run on this machine: two netns "containers" joined by
#   vswitch  (this project: userspace switch, veth host ends as AF_PACKET ports)
#   xdp      (this project, the same topology with --attach xdp: veth host ends read and
#             written through AF_XDP sockets, an XDP program redirecting to them)
#   kbr      (the Linux kernel bridge: what docker0 is)
#   ovs      (Open vSwitch userspace datapath, datapath_type=netdev)
# For each: single-stream TCP (iperf3), 64-byte frames forwarded per second (trafgen in c1
# towards c2's MAC, counted at c2's eth0) and ping RTT. Prints a table with vswitch's ratio to
# each peer, and writes it as JSON to bench/results/compare.json.
#
# Usage (root): bench/compare.sh [SECONDS]      needs: iperf3 netsniff-ng openvswitch-switch
set -u
T=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
for t in iperf3 trafgen ovs-vsctl ping python3; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y iperf3 netsniff-ng openvswitch-switch iputils-ping" >&2; exit 1; }
done
TAG=cmp$$
WORK=$(mktemp -d /tmp/vswitch-compare.XXXXXX)
VPID=""
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"

cleanup_topo() {
  for i in 1 2; do ip netns del ${TAG}c$i 2>/dev/null; done
  ip link del ${TAG}br 2>/dev/null
  ovs-vsctl --if-exists del-br ${TAG}br >/dev/null 2>&1
  for i in 1 2; do ip link del ${TAG}v$i 2>/dev/null; done
}
cleanup() {
  stop_servers
  if [ -n "$VPID" ]; then
    "$BIN" --socket $WORK/s rm -f ${TAG}c1 ${TAG}c2 >/dev/null 2>&1
    kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; VPID=""
  fi
  cleanup_topo
  # OVS daemons this script started (by the PIDs they recorded), never others.
  for p in ovs-vswitchd ovsdb-server; do
    [ -f $WORK/$p.pid ] && kill "$(cat $WORK/$p.pid)" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Plain veth pairs with addresses (kernel bridge and OVS attach these host ends).
veth_topo() {
  for i in 1 2; do
    ip netns add ${TAG}c$i
    ip link add ${TAG}v$i type veth peer name eth0 netns ${TAG}c$i
    ip -n ${TAG}c$i addr add 10.77.0.$((i+1))/24 dev eth0
    ip -n ${TAG}c$i link set eth0 up; ip -n ${TAG}c$i link set lo up
    ip link set ${TAG}v$i up
  done
  IP2=10.77.0.3
}

setup() {
  case $1 in
  kbr)
    veth_topo
    sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null
    ip link add ${TAG}br type bridge; ip link set ${TAG}br up
    ip link set ${TAG}v1 master ${TAG}br; ip link set ${TAG}v2 master ${TAG}br ;;
  ovs)
    veth_topo
    # userspace datapaths see partial checksums from veth TX offload: the peers' scripts turn it off
    for i in 1 2; do ip netns exec ${TAG}c$i ethtool -K eth0 tx off >/dev/null 2>&1; done
    ovs-vsctl add-br ${TAG}br -- set bridge ${TAG}br datapath_type=netdev
    ovs-vsctl add-port ${TAG}br ${TAG}v1; ovs-vsctl add-port ${TAG}br ${TAG}v2
    ip link set ${TAG}br up ;;
  vswitch|xdp)
    local attach=veth; [ "$1" = xdp ] && attach=xdp
    "$BIN" --socket $WORK/s daemon --state-dir $WORK/state >$WORK/daemon.log 2>&1 &
    VPID=$!
    for _ in $(seq 100); do "$BIN" --socket $WORK/s network ls >/dev/null 2>&1 && break; sleep 0.1; done
    "$BIN" --socket $WORK/s network create --subnet 10.77.0.0/24 ${TAG}net >/dev/null || return 1
    "$BIN" --socket $WORK/s run --name ${TAG}c1 --network ${TAG}net --attach $attach >/dev/null || return 1
    "$BIN" --socket $WORK/s run --name ${TAG}c2 --network ${TAG}net --attach $attach >/dev/null || return 1
    IP2=$("$BIN" --socket $WORK/s ps --json | python3 -c "import json,sys;print([c for c in json.load(sys.stdin) if c['name']=='${TAG}c2'][0]['endpoints'][0]['ip'])") ;;
  esac
}

teardown() {
  if [ "$1" = vswitch ] || [ "$1" = xdp ]; then
    "$BIN" --socket $WORK/s rm -f ${TAG}c1 ${TAG}c2 >/dev/null 2>&1
    kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; VPID=""
    rm -rf $WORK/state
  fi
  cleanup_topo
}

measure() {
  local mode=$1
  setup $mode || { echo "$mode: setup failed" >&2; teardown $mode; return 1; }
  sleep 1
  ip netns exec ${TAG}c1 ping -c 3 -i 0.2 -W 2 $IP2 >/dev/null || { echo "$mode: no connectivity" >&2; teardown $mode; return 1; }
  local rtt tcp fwd b a dmac
  rtt=$(ip netns exec ${TAG}c1 ping -c 50 -i 0.01 -q $IP2 | tail -1 | awk -F/ '{print $5}')
  serve ip netns exec ${TAG}c2 iperf3 -s -1; sleep 0.5
  tcp=$(ip netns exec ${TAG}c1 iperf3 -c $IP2 -t $T -J | python3 -c 'import json,sys;d=json.load(sys.stdin);print("%.2f"%(d["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null)
  stop_servers
  [ -n "$tcp" ] || { echo "$mode: iperf3 failed" >&2; teardown $mode; return 1; }
  dmac=$(ip -n ${TAG}c2 -br link show eth0 | awk '{print $3}')
  printf '{ eth(da=%s), ipv4(saddr=10.77.0.2, daddr=%s), udp(sp=9, dp=9), fill(0x00, 18) }\n' "$dmac" "$IP2" > $WORK/udp.cfg
  b=$(ip -n ${TAG}c2 -s link show eth0 | awk '/RX:/{getline; print $2}')
  ip netns exec ${TAG}c1 timeout 3 trafgen --dev eth0 --conf $WORK/udp.cfg -q -b 0 >/dev/null 2>&1
  sleep 0.5
  a=$(ip -n ${TAG}c2 -s link show eth0 | awk '/RX:/{getline; print $2}')
  fwd=$(( (a-b)/3000 ))
  teardown $mode
  echo "$mode $tcp $fwd $rtt"
}

# Open vSwitch's daemons, started here (nothing starts services on this machine) unless running.
if ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
  mkdir -p /var/run/openvswitch /etc/openvswitch
  [ -f /etc/openvswitch/conf.db ] || ovsdb-tool create /etc/openvswitch/conf.db /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server --remote=punix:/var/run/openvswitch/db.sock --pidfile=$WORK/ovsdb-server.pid --detach --log-file=$WORK/ovsdb.log >/dev/null 2>&1
  ovs-vsctl --no-wait init >/dev/null
  ovs-vswitchd --pidfile=$WORK/ovs-vswitchd.pid --detach --log-file=$WORK/ovs-vswitchd.log >/dev/null 2>&1
  sleep 1
fi

printf '%-8s %10s %14s %10s\n' target tcp_gbps l2fwd64_kpps rtt_ms
RES=""
for m in vswitch xdp kbr ovs; do
  r=$(measure $m) || continue
  set -- $r
  printf '%-8s %10s %14s %10s\n' $1 $2 $3 $4
  RES="$RES$r;"
done
python3 - "$RES" "$OUT/compare.json" <<'EOF'
import json, sys, datetime, platform
rows = {}
for r in sys.argv[1].split(';'):
    if r.strip():
        m, tcp, fwd, rtt = r.split()
        rows[m] = {"tcp_gbps": float(tcp), "l2fwd64_kpps": float(fwd), "rtt_ms": float(rtt)}
def ratio_of(v, p):
    return {
        "tcp": round(v["tcp_gbps"] / p["tcp_gbps"], 2) if p["tcp_gbps"] else None,
        "l2fwd64": round(v["l2fwd64_kpps"] / p["l2fwd64_kpps"], 2) if p["l2fwd64_kpps"] else None,
        "rtt": round(v["rtt_ms"] / p["rtt_ms"], 2) if p["rtt_ms"] else None,
    }
# "ratios": vswitch (veth attach) to each peer, as before; "xdp_ratios": the xdp row's.
out = {}
for row, key in (("vswitch", "ratios"), ("xdp", "xdp_ratios")):
    v = rows.get(row)
    out[key] = {}
    for peer in ("kbr", "ovs"):
        p = rows.get(peer)
        if v and p:
            r = out[key][peer] = ratio_of(v, p)
            print(f"{row} / {peer}: tcp {r['tcp']}x  l2fwd64 {r['l2fwd64']}x  rtt {r['rtt']}x (lower is better)")
json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "kernel": platform.release(), "results": rows, **out}, open(sys.argv[2], "w"), indent=2)
EOF
