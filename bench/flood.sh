#!/usr/bin/env bash
# Storms and floods (issue 15): what one container's flood of random-source-MAC broadcasts and
# unknown unicast costs two others, measured in ONE run on this machine.
#
# One vswitch daemon, one network with -o port_security=off (so the forged sources get in) and
# the default storm control; containers c1 (iperf3 server), c2 (iperf3 client), c3 (flooder).
# Each round: c2 -> c1 single-stream TCP for SECONDS alone, then again for SECONDS while c3 runs
# trafgen at FLOOD_PPS frames per second, half broadcast, half to random unknown unicast
# addresses, every frame from a new random (locally administered, unicast) source MAC. Per
# round it prints both throughputs and their ratio, the frames c3 sent and the switch read, the
# drop counters (storm control's refusals and holds), the MAC table's size and the daemon's
# RSS, beside /proc/loadavg; the summary
# is the median of the per-round ratios (goal: >= 0.9), the largest MAC table seen and the RSS
# before the first round and after the last. Writes bench/results/flood.json.
#
# The peer, in the same rounds: three more namespaces on a Linux bridge (docker0's kind, its
# defaults: no storm control, no limit on learned MACs) get the same two phases and the same
# flood, so the ratio of each is measured on the same machine at the same time. The flooder's
# own CPU (trafgen and the kernel's veth path) is on the same two cores in both cases.
#
# Usage (root): [ROUNDS=N] [FLOOD_PPS=N] bench/flood.sh [SECONDS]      needs: iperf3 netsniff-ng
set -u
T=${1:-10}
ROUNDS=${ROUNDS:-3}
PPS=${FLOOD_PPS:-200000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
for t in iperf3 trafgen python3 ip; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y iperf3 netsniff-ng python3 iproute2" >&2; exit 1; }
done
TAG=fl$$
WORK=$(mktemp -d /tmp/vswitch-flood.XXXXXX)
VPID=""
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"
V() { "$BIN" --socket "$WORK/s" "$@"; }

BR=brfl$$
cleanup() {
  stop_servers
  ip link del "$BR" 2>/dev/null
  for i in 1 2 3; do ip netns del ${TAG}b$i 2>/dev/null; done
  if [ -n "$VPID" ]; then
    V rm -f ${TAG}c1 ${TAG}c2 ${TAG}c3 >/dev/null 2>&1
    kill $VPID 2>/dev/null; wait $VPID 2>/dev/null
  fi
  for i in 1 2 3; do ip netns del ${TAG}c$i 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" --socket "$WORK/s" daemon --state-dir "$WORK/state" >"$WORK/daemon.log" 2>&1 &
VPID=$!
for _ in $(seq 100); do V network ls >/dev/null 2>&1 && break; sleep 0.1; done
V network create --subnet 10.76.0.0/24 -o port_security=off ${TAG}n >/dev/null || { cat "$WORK/daemon.log"; exit 1; }
for i in 1 2 3; do V run --name ${TAG}c$i --network ${TAG}n >/dev/null || exit 1; done
IP1=$(V ps --json | python3 -c "import json,sys;print([c for c in json.load(sys.stdin) if c['name']=='${TAG}c1'][0]['endpoints'][0]['ip'])")
ip netns exec ${TAG}c2 ping -c 3 -i 0.2 -W 2 "$IP1" >/dev/null || { echo "no connectivity" >&2; exit 1; }

# The peer: the same three containers on a kernel bridge.
ip link add "$BR" type bridge && ip link set "$BR" up || exit 1
for i in 1 2 3; do
  ip netns add ${TAG}b$i || exit 1
  ip link add ${TAG}b${i}h type veth peer name eth0 netns ${TAG}b$i || exit 1
  ip link set ${TAG}b${i}h master "$BR" up
  ip -n ${TAG}b$i addr add 10.77.0.$((i + 1))/24 dev eth0
  ip -n ${TAG}b$i link set eth0 up
  ip -n ${TAG}b$i link set lo up
done
BIP1=10.77.0.2
ip netns exec ${TAG}b2 ping -c 3 -i 0.2 -W 2 "$BIP1" >/dev/null || { echo "no connectivity on the bridge" >&2; exit 1; }

# Two frames, sent in turn: a broadcast and an unknown unicast, each from a random source.
cat >"$WORK/flood.cfg" <<'EOF'
{ fill(0xff, 6), 0x02, drnd(5), c16(0x88b5), fill(0x00, 46) }
{ 0x02, drnd(5), 0x02, drnd(5), c16(0x88b5), fill(0x00, 46) }
EOF

rss_kib() { awk '/^VmRSS/{print $2}' /proc/$VPID/status; }
# CPU time of the switch's worker thread so far, in clock ticks (100 a second).
WSTAT=$(grep -lx vswitch-worker /proc/$VPID/task/*/comm | head -1 | xargs dirname)/stat
worker_ticks() { awk '{print $14 + $15}' "$WSTAT"; }
tx_packets() { ip -n "$1" -s link show eth0 | awk '/TX:/{getline; print $2}'; }
# iperf3 client -> server for T seconds; prints Gbps (empty when iperf3 gave no result).
# Arguments: server namespace, client namespace, server address (default: c1, c2, IP1).
tcp() {
  local srv=${1:-${TAG}c1} cli=${2:-${TAG}c2} ip=${3:-$IP1}
  serve ip netns exec "$srv" iperf3 -s -1
  sleep 0.5
  ip netns exec "$cli" iperf3 -c "$ip" -t "$T" -J 2>/dev/null |
    python3 -c 'import json,sys
try: print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception: pass'
}

RSS0=$(rss_kib)
echo "flood: ${T}s rounds, c3 offers ${PPS} fps (random source MACs), daemon RSS ${RSS0} KiB"
for r in $(seq "$ROUNDS"); do
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  w0=$(worker_ticks)
  alone=$(tcp); stop_servers
  w1=$(worker_ticks)
  rss_alone=$(rss_kib)
  sent0=$(tx_packets ${TAG}c3)
  t0=$(date +%s.%N)
  # The flood starts first and outlasts the iperf3 run.
  serve ip netns exec ${TAG}c3 timeout $((T + 2)) trafgen --dev eth0 --conf "$WORK/flood.cfg" \
    -P 1 -b "${PPS}pps" --no-sock-mem -Q -C
  sleep 0.5
  flooded=$(tcp); stop_servers
  w2=$(worker_ticks)
  secs=$(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || python3 -c "print($(date +%s.%N) - $t0)")
  sent=$(( $(tx_packets ${TAG}c3) - sent0 ))
  # The same two phases on the kernel bridge.
  b_alone=$(tcp ${TAG}b1 ${TAG}b2 $BIP1); stop_servers
  serve ip netns exec ${TAG}b3 timeout $((T + 2)) trafgen --dev eth0 --conf "$WORK/flood.cfg" \
    -P 1 -b "${PPS}pps" --no-sock-mem -Q -C
  sleep 0.5
  b_flooded=$(tcp ${TAG}b1 ${TAG}b2 $BIP1); stop_servers
  V stats --json >"$WORK/stats.json"
  V ports --json >"$WORK/ports.json"
  python3 - "$WORK" "$r" "$T" "$PPS" "${alone:-0}" "${flooded:-0}" "$sent" "$(rss_kib)" "$load" "$TAG" "$secs" "$rss_alone" "$((w1 - w0))" "$((w2 - w1))" "${b_alone:-0}" "${b_flooded:-0}" <<'PY'
import json, sys
work, r, t, pps, alone, flooded, sent, rss, load, tag, secs, rss_alone, wa, wf, b_alone, b_flooded = sys.argv[1:]
stats = json.load(open(f"{work}/stats.json"))
ports = json.load(open(f"{work}/ports.json"))
c3 = next(p for p in ports if p["container"] == f"{tag}c3")
c = stats["counters"]
# Counters run from the daemon's start: this round's share is the change since the last one.
try:
    prev = json.load(open(f"{work}/round{int(r) - 1}.json"))["totals"]
except (OSError, ValueError, KeyError):
    prev = {}
totals = {"flooder_rx": c3["rx_frames"], "flooder_kernel_drops": c3["rx_dropped"],
          "flood_limited": c3["flood_limited"], "storm_holds": c3.get("storm_holds", 0),
          "storm_held": c3.get("storm_held", 0),
          "drops": {k[5:]: v for k, v in c.items() if k.startswith("drop_")}}
delta = lambda k: totals[k] - prev.get(k, 0)
row = {
    "alone_gbps": float(alone), "flooded_gbps": float(flooded),
    "ratio": float(flooded) / float(alone) if float(alone) > 0 else None,
    "flood_sent": int(sent), "flood_secs": float(secs),
    "flood_sent_fps": int(sent) / float(secs), "offered_fps": int(pps),
    "flooder_rx": delta("flooder_rx"), "flooder_kernel_drops": delta("flooder_kernel_drops"),
    "flood_limited": delta("flood_limited"), "storm_holds": delta("storm_holds"),
    "storm_held": delta("storm_held"), "fdb_entries": stats["fdb_entries"],
    "drops": {k: v - prev.get("drops", {}).get(k, 0) for k, v in totals["drops"].items()
              if v - prev.get("drops", {}).get(k, 0)},
    "totals": totals,
    # The worker's CPU over each phase (the flooded one runs 0.5 s longer: the flood starts first).
    "worker_cpu_alone": int(wa) / float(t), "worker_cpu_flooded": int(wf) / float(secs),
    "rss_kib_after_alone": int(rss_alone), "rss_kib": int(rss), "loadavg": load,
    "bridge_alone_gbps": float(b_alone), "bridge_flooded_gbps": float(b_flooded),
    "bridge_ratio": float(b_flooded) / float(b_alone) if float(b_alone) > 0 else None,
}
json.dump(row, open(f"{work}/round{r}.json", "w"))
ratio = "n/a" if row["ratio"] is None else "%.2f" % row["ratio"]
print(f"round {r}: alone {row['alone_gbps']:.2f} Gbps, flooded {row['flooded_gbps']:.2f} Gbps, "
      f"ratio {ratio} | c3 sent {row['flood_sent']} ({row['flood_sent_fps'] / 1e3:.0f} kfps), "
      f"switch read {row['flooder_rx']}, kernel dropped {row['flooder_kernel_drops']}, "
      f"flood_limited {row['flood_limited']}, held {row['storm_held']} in {row['storm_holds']} holds"
      f" | worker cpu {row['worker_cpu_alone']:.0f}% -> "
      f"{row['worker_cpu_flooded']:.0f}% | fdb {row['fdb_entries']} | "
      f"rss {row['rss_kib_after_alone'] / 1024:.1f} -> {row['rss_kib'] / 1024:.1f} MiB | load {load}")
print(f"  drops: {row['drops']}")
bratio = "n/a" if row["bridge_ratio"] is None else "%.2f" % row["bridge_ratio"]
print(f"  kernel bridge: alone {row['bridge_alone_gbps']:.2f} Gbps, flooded "
      f"{row['bridge_flooded_gbps']:.2f} Gbps, ratio {bratio}")
PY
done

python3 - "$WORK" "$ROUNDS" "$ROOT/bench" "$OUT/flood.json" "$RSS0" "$(rss_kib)" "$T" <<'PY'
import json, sys, datetime, platform
sys.path.insert(0, sys.argv[3])
from rounds import load, median, ratio
work, n, out, rss0, rss1, t = sys.argv[1], int(sys.argv[2]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
rounds = load(work + "/round{}.json", n)
if not rounds:
    sys.exit(1)
summary = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
    "kernel": platform.release(), "seconds": int(t), "rounds": len(rounds),
    "alone_gbps": median(rounds, lambda r: r["alone_gbps"]),
    "flooded_gbps": median(rounds, lambda r: r["flooded_gbps"]),
    "ratio": ratio(rounds, lambda r: r["flooded_gbps"], lambda r: r["alone_gbps"]),
    "flood_sent_fps": median(rounds, lambda r: r["flood_sent_fps"]),
    "random_source_macs": sum(r["flood_sent"] for r in rounds),
    "fdb_entries_max": max(r["fdb_entries"] for r in rounds),
    "rss_kib_before": rss0, "rss_kib_after": rss1,
    "loadavg": [r["loadavg"] for r in rounds],
    "bridge_alone_gbps": median(rounds, lambda r: r["bridge_alone_gbps"]),
    "bridge_flooded_gbps": median(rounds, lambda r: r["bridge_flooded_gbps"]),
    "bridge_ratio": ratio(rounds, lambda r: r["bridge_flooded_gbps"], lambda r: r["bridge_alone_gbps"]),
    "per_round": rounds,
}
fmt = "n/a" if summary["ratio"] is None else "%.2f" % summary["ratio"]
print(f"median of {len(rounds)} rounds: alone {summary['alone_gbps']:.2f} Gbps, flooded "
      f"{summary['flooded_gbps']:.2f} Gbps, ratio {fmt} (median of per-round ratios; goal >= 0.9); "
      f"flood {summary['flood_sent_fps'] / 1e3:.0f} kfps, {summary['random_source_macs']} random "
      f"source MACs in all; fdb at most {summary['fdb_entries_max']} entries; daemon RSS "
      f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
bfmt = "n/a" if summary["bridge_ratio"] is None else "%.2f" % summary["bridge_ratio"]
print(f"kernel bridge, same rounds: alone {summary['bridge_alone_gbps']:.2f} Gbps, flooded "
      f"{summary['bridge_flooded_gbps']:.2f} Gbps, ratio {bfmt}")
json.dump(summary, open(out, "w"), indent=2)
PY
