#!/usr/bin/env bash
# Overlay throughput: vswitch's VXLAN path against the kernel's, measured in one run between the
# same two "hosts" (network namespaces joined by a veth underlay), single-stream TCP (iperf3).
#
#   kernel   : container ns -- veth -- kernel bridge -- vxlan0 (VNI 42, port 4789) == underlay == same on host B
#   vswitch  : container ns -- TAP -- vswitch daemon (tunnel port, UDP 4789)         == underlay == same on host B
#   anchor   : ../shared/peers/vxlan-peer-bench.sh from the repo root (iperf3 straight on the hosts'
#              vxlan devices); skipped (n/a) when that script is not there, PEERS=DIR names another place
#
# Usage: sudo [ROUNDS=N] [TUNNEL_OFFLOAD=auto|on|off] [ATTACH=veth|tap] [CAPTURE=ARGS] [PROFILE=1] \
#        bench/compare-overlay.sh [seconds]
# (builds vswitch in release mode first, unless VSWITCH_BIN names the binary to use).
# TUNNEL_OFFLOAD=off measures the socket-only path (every frame cut into datagrams).
# ATTACH=veth|tap attaches the containers that way (default: the daemon's, TAP on overlays).
# CAPTURE="ARGS" runs `vswitch capture ARGS -w FILE` on host A during the vswitch run (e.g.
# CAPTURE=--outer, or CAPTURE="--network ov" for the inner frames) and prints what it kept and
# dropped, so the cost of a capture at full rate is the ratio with and without it.
# PROFILE=1 also records each path with `perf record -a -g` (package linux-perf) and prints
# where its CPU went per GB moved, by category and by copy (bench/perf_cost.py).
# Needs: iproute2, iperf3, nsenter (util-linux), python3.
set -u
T=${1:-5}
cd "$(dirname "$0")/.."
# The machine is shared and noisy: ROUNDS runs (default 3), then the median of each number and
# of the per-round ratios.
ROUNDS=${ROUNDS:-3}
if [ -n "${PROFILE:-}" ] && ! command -v perf >/dev/null; then
    echo "PROFILE=1 needs perf: apt-get install linux-perf" >&2
    exit 1
fi
if [ -z "${OV_ROUND:-}" ]; then
  mkdir -p bench/results
  for r in $(seq "$ROUNDS"); do
    echo "round $r of $ROUNDS:"
    OV_ROUND=$r OV_JSON=bench/results/compare-overlay.round$r.json "$0" "$T" | sed 's/^/  /'
  done
  python3 - "$ROUNDS" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from rounds import load, median, ratio as ratio_of
rounds = load("bench/results/compare-overlay.round{}.json", int(sys.argv[1]))
if not rounds:
    sys.exit(1)
med = {k: median(rounds, lambda r: r[k]) for k in ("kernel", "vswitch", "anchor")}
ratio = ratio_of(rounds, lambda r: r["vswitch"], lambda r: r["kernel"]) or 0.0
cores = [r for r in rounds if r.get("vswitch_cores") and r.get("kernel_cores")]
for k in ("kernel_cores", "vswitch_cores"):
    med[k] = median(cores, lambda r: r[k]) if cores else 0.0
# Gbit/s per busy core of each path, and their ratio: what vswitch costs per byte against the
# kernel, the less noisy view of the same comparison.
eff = ratio_of(cores, lambda r: r["vswitch"] / r["vswitch_cores"],
               lambda r: r["kernel"] / r["kernel_cores"]) or 0.0
print(f"median of {len(rounds)} rounds, single-stream TCP (Gbit/s):")
print(f"  kernel vxlan + bridge (containers)   : {med['kernel']:.2f} ({med['kernel_cores']:.2f} cores busy)")
print(f"  vswitch overlay (containers)         : {med['vswitch']:.2f} ({med['vswitch_cores']:.2f} cores busy)")
print(f"  kernel vxlan, hosts' own (anchor)    : {med['anchor']:.2f}")
print(f"  ratio vswitch / kernel+bridge        : {ratio:.2f}x (median of per-round ratios)")
print(f"  ratio of Gbit/s per busy core        : {eff:.2f}x (median of per-round ratios)")
json.dump({"seconds": rounds[0]["seconds"], "unit": "Gbps", "rounds": len(rounds), **med,
           "ratio": ratio, "per_core_ratio": eff},
          open("bench/results/compare-overlay.json", "w"), indent=2)
PY
  exit $?
fi
if [ -n "${VSWITCH_BIN:-}" ]; then B=$VSWITCH_BIN; else
    cargo build --release -p switch -q || exit 1
    B=$PWD/target/release/vswitch
fi
P=cmpov$$
D=$(mktemp -d)
SERVERS=$D/servers
. bench/servers.sh
cleanup() {
    stop_servers
    for k in A B; do
        [ -S "$D/s$k" ] && for c in $("$B" --socket "$D/s$k" ps --json 2>/dev/null | python3 -c 'import json,sys;[print(c["name"]) for c in json.load(sys.stdin)]'); do "$B" --socket "$D/s$k" rm -f "$c" >/dev/null 2>&1; done
        [ -f "$D/pid$k" ] && kill "$(cat "$D/pid$k")" 2>/dev/null
    done
    sleep 0.3
    for n in hA hB kA kB; do ip netns del "$P$n" 2>/dev/null; done
    rm -rf "$D"
}
trap cleanup EXIT

# measure NS IP TAG: one iperf3 client run from NS to IP; prints "GBPS CORES", where CORES is
# how many of the machine's cores were busy (not idle) in the middle of the run, from /proc/stat.
# Both paths run the same work on the same cores, so Gbit/s per busy core is what a path costs
# per byte, and it moves far less from round to round than the speed itself. With PROFILE=1 the
# middle of the run is also recorded system-wide by perf into $D/TAG.perf (bench/perf_cost.py
# reads it).
measure() {
    ip netns exec "$1" iperf3 -c "$2" -t "$T" -J >"$D/client.json" &
    local pid=$! w=$((T > 3 ? T - 2 : 1)) a b
    sleep 1; a=$(head -1 /proc/stat)
    if [ -n "${PROFILE:-}" ]; then
        perf record -q -a -g -o "$D/$3.perf" -- sleep "$w" >/dev/null 2>&1
    else
        sleep "$w"
    fi
    b=$(head -1 /proc/stat)
    wait "$pid"
    python3 - "$a" "$b" "$(nproc)" "$D/client.json" <<'PY'
import json, sys
a, b = ([int(x) for x in s.split()[1:9]] for s in sys.argv[1:3])
d = [y - x for x, y in zip(a, b)]
busy = (sum(d) - d[3] - d[4]) / max(sum(d), 1) * int(sys.argv[3])  # idle and iowait are not busy
try:
    g = json.load(open(sys.argv[4]))["end"]["sum_received"]["bits_per_second"] / 1e9
except (OSError, ValueError, KeyError) as e:
    print(f"iperf3 gave no result ({e!r})", file=sys.stderr)
    g = 0.0
print(f"{g:.2f} {busy:.2f}")
PY
}

# Two hosts and the underlay.
ip netns add ${P}hA; ip netns add ${P}hB
ip -n ${P}hA link add ul0 type veth peer name ul0 netns ${P}hB
ip -n ${P}hA addr add 10.77.0.1/24 dev ul0; ip -n ${P}hB addr add 10.77.0.2/24 dev ul0
for h in A B; do ip -n ${P}h$h link set ul0 up; ip -n ${P}h$h link set lo up; done

# 1. Kernel VXLAN + kernel bridge, a namespace behind it on each host.
for h in A B; do
    [ $h = A ] && { L=10.77.0.1; R=10.77.0.2; X=10.78.0.1; } || { L=10.77.0.2; R=10.77.0.1; X=10.78.0.2; }
    ip netns add ${P}k$h; ip -n ${P}k$h link set lo up
    ip -n ${P}h$h link add vx0 type vxlan id 42 dstport 4789 local $L remote $R dev ul0
    ip -n ${P}h$h link add br0 type bridge
    ip -n ${P}h$h link set vx0 master br0 up
    ip -n ${P}h$h link add kv type veth peer name eth0 netns ${P}k$h
    ip -n ${P}h$h link set kv master br0 mtu 1450 up; ip -n ${P}h$h link set br0 up
    ip netns exec ${P}h$h sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null
    ip -n ${P}k$h link set eth0 mtu 1450 up; ip -n ${P}k$h addr add $X/24 dev eth0
done
serve ip netns exec ${P}kB iperf3 -s -1; sleep 0.5
read -r KERNEL KCORES < <(measure ${P}kA 10.78.0.2 kernel)
stop_servers
for h in A B; do ip -n ${P}h$h link del vx0; ip -n ${P}h$h link del br0; ip netns del ${P}k$h; done

# 2. vswitch in each host, one overlay network, one container on each side.
for h in A B; do
    nsenter --net=/run/netns/${P}h$h -- "$B" --socket "$D/s$h" daemon --state-dir "$D/st$h" \
        --tunnel-offload "${TUNNEL_OFFLOAD:-auto}" >"$D/log$h" 2>&1 &
    echo $! >"$D/pid$h"
done
for h in A B; do
    for _ in $(seq 100); do "$B" --socket "$D/s$h" network ls >/dev/null 2>&1 && break; sleep 0.05; done
done
"$B" --socket "$D/sA" network create --driver overlay --subnet 10.79.0.0/16 --ip-range 10.79.1.0/24 \
    -o vni=42 -o vtep=10.77.0.1 -o peers=10.77.0.2 ov >/dev/null
"$B" --socket "$D/sB" network create --driver overlay --subnet 10.79.0.0/16 --ip-range 10.79.2.0/24 \
    -o vni=42 -o vtep=10.77.0.2 -o peers=10.77.0.1 ov >/dev/null
"$B" --socket "$D/sA" run --name ${P}cA ${ATTACH:+--attach "$ATTACH"} --network ov --ip 10.79.1.10 >/dev/null
"$B" --socket "$D/sB" run --name ${P}cB ${ATTACH:+--attach "$ATTACH"} --network ov --ip 10.79.2.10 >/dev/null
serve ip netns exec ${P}cB iperf3 -s -1; sleep 0.5
ip netns exec ${P}cA ping -c 2 -W 2 -q 10.79.2.10 >/dev/null
CAPPID=""
if [ -n "${CAPTURE:-}" ]; then
    # A capture on host A during the vswitch run (CAPTURE holds its arguments, e.g. --outer):
    # what it costs the path, and what it kept and dropped.
    # shellcheck disable=SC2086
    "$B" --socket "$D/sA" capture $CAPTURE -w "$D/cap.pcapng" 2>"$D/cap.err" &
    CAPPID=$!
    for _ in $(seq 100); do grep -q "capturing on" "$D/cap.err" 2>/dev/null && break; sleep 0.05; done
fi
read -r VSW VCORES < <(measure ${P}cA 10.79.2.10 vswitch)
if [ -n "$CAPPID" ]; then
    kill -INT "$CAPPID"; wait "$CAPPID"
    echo "capture ($CAPTURE) during the vswitch run: $(tail -1 "$D/cap.err")"
fi
stop_servers
[ -n "${VERBOSE:-}" ] && for h in A B; do "$B" --socket "$D/s$h" stats --json | python3 -c "import json,sys;print(json.dumps(json.load(sys.stdin)[\"tunnels\"]))"; done

# 3. The shared anchor (iperf3 on the hosts' own vxlan devices).
PEERS=${PEERS:-../shared/peers}
ANCHOR=""
if [ -x "$PEERS/vxlan-peer-bench.sh" ]; then
  ANCHOR=$("$PEERS/vxlan-peer-bench.sh" "$T" 2>/dev/null | sed -n 's/.*tcp_gbps=\([0-9.]*\).*/\1/p')
else
  echo "note: no $PEERS/vxlan-peer-bench.sh: the anchor is skipped (PEERS=DIR names its folder)" >&2
fi

echo "overlay single-stream TCP (Gbit/s), one run:"
echo "  kernel vxlan + bridge (containers)   : $KERNEL ($KCORES cores busy)"
echo "  vswitch overlay (containers)         : $VSW ($VCORES cores busy)"
echo "  kernel vxlan, hosts' own (anchor)    : ${ANCHOR:-n/a}"
python3 - "$VSW" "$KERNEL" "${ANCHOR:-0}" "$VCORES" "$KCORES" "${OV_JSON:-}" "$T" <<'PY'
import json, sys
v, k, a, vc, kc = (float(x or 0) for x in sys.argv[1:6])
if sys.argv[6]:
    json.dump({"seconds": int(sys.argv[7]), "kernel": k, "vswitch": v, "anchor": a,
               "kernel_cores": kc, "vswitch_cores": vc}, open(sys.argv[6], "w"))
print(f"  ratio vswitch / kernel+bridge        : {v / k:.2f}x" if k else "  ratio: n/a")
if a:
    print(f"  ratio vswitch / anchor               : {v / a:.2f}x")
if vc and kc and k:
    print(f"  Gbit/s per busy core                 : vswitch {v / vc:.2f}, kernel {k / kc:.2f}, "
          f"ratio {(v / vc) / (k / kc):.2f}x")
PY
if [ -n "${PROFILE:-}" ]; then
    for t in kernel vswitch; do perf script -i "$D/$t.perf" -F tid,ip,sym >"$D/$t.script" 2>/dev/null; done
    python3 bench/perf_cost.py "kernel=$D/kernel.script:$KERNEL:$(nproc)" \
        "vswitch=$D/vswitch.script:$VSW:$(nproc)"
fi
