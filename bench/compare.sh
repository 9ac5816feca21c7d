#!/usr/bin/env bash
# Peer comparison, measured in ONE run on this machine: two netns "containers" joined by
#   vswitch  (this project: userspace switch, veth host ends as AF_PACKET ports)
#   kbr      (the Linux kernel bridge: what docker0 is)
#   ovs      (Open vSwitch userspace datapath, datapath_type=netdev)
#   vswitch-xdp (vswitch with --attach xdp, the same topology: veth host ends read and
#               written through AF_XDP sockets, an XDP program redirecting to them)
#   vswitch-bp (vswitch with --busy-poll 20000: the worker polls instead of sleeping between
#               frames 10 ms apart; only with TARGETS=..., it needs a core to spare)
#   afp, afp2   (the AF_PACKET ceiling: bench's afpacket-fwd, a forwarder with no switching
#               logic on vswitch's default mechanism and socket options -- recvmmsg/sendmmsg in
#               batches of 64, vnet headers, qdisc bypass, 4 MiB socket buffers -- between the
#               two host ends, at the worker's nice -10; afp with one thread, as vswitch has
#               one worker, afp2 with one thread per CPU, each with its own sockets in a
#               PACKET_FANOUT_CPU group, not pinned)
#   axp         (the same for the AF_XDP mode: afpacket-fwd --xdp, vswitch's own AF_XDP ports --
#               its XDP program, an XSK on queue 0 in copy mode -- with no pipeline between them;
#               the containers' offloads off, as --attach xdp sets them)
# For each, in every round: single-stream TCP (iperf3), 64-byte frames forwarded per second
# (trafgen in c1 towards c2's MAC, counted at c2's eth0; once with trafgen's default, one sender
# process per CPU, once with one sender process; trafgen runs with the send buffer it would set
# itself outside a namespace, and a run that stops early fails: bench/trafgen.sh) and ping RTT.
# Each round measures every target once (the order rotates from round to round) and notes the
# machine's load; the summary
# is the median of each number and the median of the per-round ratios of vswitch to each peer.
# Writes bench/results/compare.json.
#
# Usage (root): bench/compare.sh [SECONDS] [ROUNDS]   (default 5 s, 3 rounds)
#               TARGETS="vswitch kbr" bench/compare.sh   (a subset)
#   needs: iperf3 netsniff-ng openvswitch-switch
set -u
T=${1:-5}
ROUNDS=${2:-3}
TARGETS=${TARGETS:-vswitch vswitch-xdp kbr ovs afp afp2 axp}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
AFP_BIN=${AFP_BIN:-$ROOT/target/release/afpacket-fwd}
case " $TARGETS " in *" afp"*|*" axp"*)
  [ -x "$AFP_BIN" ] || (cd "$ROOT" && cargo build --release -p bench --bin afpacket-fwd) || exit 1 ;;
esac
for t in iperf3 trafgen ovs-vsctl ping python3; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y iperf3 netsniff-ng openvswitch-switch iputils-ping" >&2; exit 1; }
done
TAG=cmp$$
WORK=$(mktemp -d /tmp/vswitch-compare.XXXXXX)
VPID=""
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"
. "$ROOT/bench/trafgen.sh"

cleanup_topo() {
  for i in 1 2; do ip netns del ${TAG}c$i 2>/dev/null; done
  ip link del ${TAG}br 2>/dev/null
  ovs-vsctl --if-exists del-br ${TAG}br >/dev/null 2>&1
  for i in 1 2; do ip link del ${TAG}v$i 2>/dev/null; done
}
# The forwarder's PID is kept in a file: measure runs in a subshell, and the main shell's
# cleanup must find it too (`wait` reaps it where it is a child, and is a no-op elsewhere).
stop_afp() {
  local p
  [ -f $WORK/afp.pid ] || return 0
  p=$(cat $WORK/afp.pid)
  kill $p 2>/dev/null; wait $p 2>/dev/null
  rm -f $WORK/afp.pid
}
cleanup() {
  stop_servers
  tg_sockmem_restore
  stop_afp
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
  afp|afp2|axp)
    veth_topo
    local args="--threads 1 --rcvbuf 4194304"
    [ "$1" = afp2 ] && args="--threads $(nproc) --no-pin --rcvbuf 4194304"
    if [ "$1" = axp ]; then
      args="--xdp"
      for i in 1 2; do ip netns exec ${TAG}c$i ethtool -K eth0 tx off sg off tso off gso off >/dev/null 2>&1; done
    fi
    nice -n -10 "$AFP_BIN" ${TAG}v1 ${TAG}v2 $args 2>>$WORK/afp.log &
    echo $! > $WORK/afp.pid
    sleep 0.3
    kill -0 "$(cat $WORK/afp.pid)" 2>/dev/null || { echo "afpacket-fwd: $(cat $WORK/afp.log)" >&2; return 1; } ;;
  vswitch|vswitch-bp|vswitch-xdp)
    local extra="" attach=veth
    [ "$1" = vswitch-bp ] && extra="--busy-poll 20000"
    [ "$1" = vswitch-xdp ] && attach=xdp
    "$BIN" --socket $WORK/s daemon --state-dir $WORK/state $extra >$WORK/daemon.log 2>&1 &
    VPID=$!
    for _ in $(seq 100); do "$BIN" --socket $WORK/s network ls >/dev/null 2>&1 && break; sleep 0.1; done
    "$BIN" --socket $WORK/s network create --subnet 10.77.0.0/24 ${TAG}net >/dev/null || return 1
    "$BIN" --socket $WORK/s run --name ${TAG}c1 --network ${TAG}net --attach $attach >/dev/null || return 1
    "$BIN" --socket $WORK/s run --name ${TAG}c2 --network ${TAG}net --attach $attach >/dev/null || return 1
    IP2=$("$BIN" --socket $WORK/s ps --json | python3 -c "import json,sys;print([c for c in json.load(sys.stdin) if c['name']=='${TAG}c2'][0]['endpoints'][0]['ip'])") ;;
  esac
}

teardown() {
  if [ -n "$VPID" ]; then
    "$BIN" --socket $WORK/s rm -f ${TAG}c1 ${TAG}c2 >/dev/null 2>&1
    kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; VPID=""
    rm -rf $WORK/state
  fi
  stop_afp
  cleanup_topo
}

measure() {
  local mode=$1
  setup $mode || { echo "$mode: setup failed" >&2; teardown $mode; return 1; }
  sleep 1
  ip netns exec ${TAG}c1 ping -c 3 -i 0.2 -W 2 $IP2 >/dev/null || { echo "$mode: no connectivity" >&2; teardown $mode; return 1; }
  local rtt tcp fwd fwd1 b a dmac
  rtt=$(ip netns exec ${TAG}c1 ping -c 50 -i 0.01 -q $IP2 | tail -1 | awk -F/ '{print $5}')
  serve ip netns exec ${TAG}c2 iperf3 -s -1; sleep 0.5
  tcp=$(ip netns exec ${TAG}c1 iperf3 -c $IP2 -t $T -J | python3 -c 'import json,sys;d=json.load(sys.stdin);print("%.2f"%(d["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null)
  stop_servers
  [ -n "$tcp" ] || { echo "$mode: iperf3 failed" >&2; teardown $mode; return 1; }
  dmac=$(ip -n ${TAG}c2 -br link show eth0 | awk '{print $3}')
  printf '{ eth(da=%s), ipv4(saddr=10.77.0.2, daddr=%s), udp(sp=9, dp=9), fill(0x00, 18) }\n' "$dmac" "$IP2" > $WORK/udp.cfg
  rx_c2() { ip -n ${TAG}c2 -s link show eth0 | awk '/RX:/{getline; print $2}'; }
  fwd=$(tg_kpps 3 rx_c2 ip netns exec ${TAG}c1 timeout 3 trafgen --dev eth0 --conf $WORK/udp.cfg -q -b 0) ||
    { echo "$mode: 64-byte run failed" >&2; teardown $mode; return 1; }
  # Again with one sender process (trafgen -P 1): a single-threaded sender, which leaves the
  # other core to whoever forwards (the kernel bridge forwards in the sender's own context).
  fwd1=$(tg_kpps 3 rx_c2 ip netns exec ${TAG}c1 timeout 3 trafgen --dev eth0 --conf $WORK/udp.cfg -q -b 0 -P 1) ||
    { echo "$mode: 64-byte run (one sender) failed" >&2; teardown $mode; return 1; }
  teardown $mode
  echo "$mode $tcp $fwd $fwd1 $rtt"
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

printf '%-6s %-11s %10s %14s %16s %10s %s\n' round target tcp_gbps l2fwd64_kpps l2fwd64_1tx_kpps rtt_ms load
RES=""
read -r -a TL <<< "$TARGETS"
for r in $(seq "$ROUNDS"); do
  n=${#TL[@]}
  for k in $(seq 0 $((n - 1))); do
    m=${TL[$(( (k + r - 1) % n ))]}
    load=$(cut -d' ' -f1 /proc/loadavg)
    res=$(measure $m) || continue
    set -- $res
    printf '%-6s %-11s %10s %14s %16s %10s %s\n' $r $1 $2 $3 $4 $5 $load
    RES="$RES$r $res $load;"
  done
done
python3 - "$RES" "$OUT/compare.json" <<'EOF'
import json, sys, datetime, platform, statistics
rounds = {}
for line in sys.argv[1].split(';'):
    if line.strip():
        r, m, tcp, fwd, fwd1, rtt, load = line.split()
        rounds.setdefault(int(r), {})[m] = {"tcp_gbps": float(tcp), "l2fwd64_kpps": float(fwd),
                                            "l2fwd64_1tx_kpps": float(fwd1),
                                            "rtt_ms": float(rtt), "load": float(load)}
if not rounds:
    sys.exit("no result")
keys = ("tcp_gbps", "l2fwd64_kpps", "l2fwd64_1tx_kpps", "rtt_ms", "load")
targets = sorted({m for x in rounds.values() for m in x})
med = {m: {k: statistics.median(x[m][k] for x in rounds.values() if m in x) for k in keys} for m in targets}
loads = [x[m]["load"] for x in rounds.values() for m in x]
print(f"median of {len(rounds)} rounds (load {min(loads):.1f}-{max(loads):.1f}):")
for m in targets:
    v = med[m]
    print(f"  {m:<11} tcp {v['tcp_gbps']:.2f} Gbit/s  64 B {v['l2fwd64_kpps']:.0f} kpps  "
          f"64 B one sender {v['l2fwd64_1tx_kpps']:.0f} kpps  rtt {v['rtt_ms']:.3f} ms")
ratios = {}
for sw in ("vswitch", "vswitch-bp", "vswitch-xdp", "afp", "afp2", "axp"):
    for peer in ("kbr", "ovs", "afp", "afp2", "axp"):
        if peer == sw or (sw in ("afp", "afp2", "axp") and peer != "kbr"):
            continue
        per = [x for x in rounds.values() if sw in x and peer in x]
        if not per:
            continue
        rat = {}
        for k in ("tcp_gbps", "l2fwd64_kpps", "l2fwd64_1tx_kpps", "rtt_ms"):
            q = [x[sw][k] / x[peer][k] for x in per if x[peer][k]]
            rat[k] = round(statistics.median(q), 2) if q else None
        ratios[f"{sw}/{peer}"] = rat
        print(f"{sw} / {peer}: tcp {rat['tcp_gbps']}x  l2fwd64 {rat['l2fwd64_kpps']}x  "
              f"one sender {rat['l2fwd64_1tx_kpps']}x  "
              f"rtt {rat['rtt_ms']}x (lower is better; median of {len(per)} per-round ratios)")
json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "kernel": platform.release(), "rounds": rounds, "median": med, "ratios": ratios},
          open(sys.argv[2], "w"), indent=2)
EOF
