#!/usr/bin/env bash
# Docker on vswitch against Docker on its own bridge, measured in ONE run (issue 17): a dockerd
# started here for the benchmark only (its own data root, exec root and socket; no iptables
# rules, no docker0), two busybox containers on a vswitch network (`docker network create -d
# PLUGIN --ipam-driver PLUGIN`, the daemon serving Docker's plugin protocol) and two on a
# network of Docker's own bridge driver (a kernel bridge, as docker0 is: veth pairs, Linux
# forwarding). For each, in every round: single-stream TCP (iperf3 from the host's binary
# run in the containers' network namespaces, so the traffic crosses each container's eth0),
# 64-byte frames forwarded per second (trafgen in one container towards the other's MAC,
# counted at the other's eth0; once with trafgen's default of a sender per CPU, once with one
# sender, as bench/compare.sh) and ping RTT. Rounds alternate the two networks; the table
# gives the median of the rounds and vswitch's ratio to Docker's bridge, with the machine's
# load beside it, and writes bench/results/compare-docker.json.
#
# Usage (root): bench/compare-docker.sh [SECONDS] [ROUNDS]     (default 5 s, 3 rounds)
# Needs: docker.io busybox-static iperf3 netsniff-ng iputils-ping util-linux (nsenter)
set -u
T=${1:-5}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
OUT=$ROOT/bench/results
DOCKERD=/usr/sbin/dockerd
DOCKER_BIN=/usr/bin/docker
mkdir -p "$OUT"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
for t in iperf3 trafgen ping nsenter python3 tar $DOCKERD $DOCKER_BIN /bin/busybox; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y docker.io busybox-static iperf3 netsniff-ng iputils-ping util-linux" >&2; exit 1; }
done
TAG=dkb$$
PLUGIN=vswitch-$TAG
WORK=$(mktemp -d /tmp/vswitch-compare-docker.XXXXXX)
VPID="" DPID=""
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"
. "$ROOT/bench/trafgen.sh"
docker() { "$DOCKER_BIN" -H "unix://$WORK/docker.sock" "$@"; }
vs() { "$BIN" --socket "$WORK/vswitch.sock" "$@"; }

cleanup() {
  stop_servers
  tg_sockmem_restore
  if [ -n "$DPID" ]; then
    docker rm -f ${TAG}v1 ${TAG}v2 ${TAG}b1 ${TAG}b2 >/dev/null 2>&1
    docker network rm ${TAG}vs ${TAG}br >/dev/null 2>&1
    kill "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null
  fi
  if [ -n "$VPID" ]; then kill "$VPID" 2>/dev/null; wait "$VPID" 2>/dev/null; fi
  # The daemon does not remove its plugin socket when it is stopped: this run's own one goes.
  rm -f "/run/docker/plugins/$PLUGIN.sock"
  rm -rf "$WORK"
}
trap cleanup EXIT

# vswitch first (dockerd finds the plugin's socket when a network names it), then dockerd.
"$BIN" --socket "$WORK/vswitch.sock" daemon --state-dir "$WORK/state" --docker-plugin "$PLUGIN" \
  >"$WORK/vswitch.log" 2>&1 &
VPID=$!
for _ in $(seq 100); do vs network ls >/dev/null 2>&1 && break; sleep 0.1; done
vs network ls >/dev/null || { echo "vswitch did not start: $(cat "$WORK/vswitch.log")" >&2; exit 1; }
echo '{}' >"$WORK/daemon.json"
"$DOCKERD" --config-file "$WORK/daemon.json" --data-root "$WORK/data" --exec-root "$WORK/exec" \
  --pidfile "$WORK/dockerd.pid" -H "unix://$WORK/docker.sock" --iptables=false --ip6tables=false \
  --bridge=none --ip-forward=false --ip-masq=false >"$WORK/dockerd.log" 2>&1 &
DPID=$!
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version >/dev/null 2>&1 || { echo "dockerd did not start: $(tail -5 "$WORK/dockerd.log")" >&2; exit 1; }

# The image: busybox-static's applets.
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc" "$WORK/rootfs/tmp" "$WORK/rootfs/proc" "$WORK/rootfs/sys" "$WORK/rootfs/dev"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$WORK/rootfs/bin/$a"; done
tar -C "$WORK/rootfs" -c . | docker import - ${TAG}img:1 >/dev/null || exit 1

# The host bridge path goes through no netfilter hook (as compare.sh sets it for the bridge).
sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null
docker network create -d "$PLUGIN" --ipam-driver "$PLUGIN" --subnet 10.78.0.0/24 ${TAG}vs >/dev/null || exit 1
docker network create -d bridge -o com.docker.network.bridge.name=${TAG}br --subnet 10.79.0.0/24 ${TAG}br >/dev/null || exit 1
for n in vs br; do
  for i in 1 2; do
    c=${TAG}${n:0:1}$i
    docker run -d --name "$c" --network ${TAG}$n ${TAG}img:1 sleep 100000 >/dev/null || exit 1
  done
done
pid_of() { docker inspect -f '{{.State.Pid}}' "$1"; }
ip_of() { docker inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1"; }
in_ns() { local p=$1; shift; nsenter -t "$p" -n "$@"; }
rx_packets() { in_ns "$1" ip -s link show eth0 | awk '/RX:/{getline; print $2}'; }

measure() {
  local n=$1 c1=${TAG}${1:0:1}1 c2=${TAG}${1:0:1}2 p1 p2 ip2 rtt tcp fwd fwd1 b a dmac
  p1=$(pid_of "$c1") p2=$(pid_of "$c2") ip2=$(ip_of "$c2" ${TAG}$n)
  in_ns "$p1" ping -c 3 -i 0.2 -W 2 "$ip2" >/dev/null || { echo "$n: no connectivity" >&2; return 1; }
  rtt=$(in_ns "$p1" ping -c 50 -i 0.01 -q "$ip2" | tail -1 | awk -F/ '{print $5}')
  serve nsenter -t "$p2" -n iperf3 -s -1
  for _ in $(seq 50); do in_ns "$p2" ss -Hltn 'sport = :5201' | grep -q . && break; sleep 0.1; done
  tcp=$(in_ns "$p1" iperf3 -c "$ip2" -t "$T" -J | python3 -c 'import json,sys;d=json.load(sys.stdin);print("%.2f"%(d["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null)
  stop_servers
  [ -n "$tcp" ] || { echo "$n: iperf3 failed" >&2; return 1; }
  dmac=$(in_ns "$p2" ip -br link show eth0 | awk '{print $3}')
  printf '{ eth(da=%s), ipv4(saddr=%s, daddr=%s), udp(sp=9, dp=9), fill(0x00, 18) }\n' \
    "$dmac" "$(ip_of "$c1" ${TAG}$n)" "$ip2" >"$WORK/udp.cfg"
  rx_p2() { rx_packets "$p2"; }
  fwd=$(tg_kpps 3 rx_p2 in_ns "$p1" timeout 3 trafgen --dev eth0 --conf "$WORK/udp.cfg" -q -b 0) ||
    { echo "$n: 64-byte run failed" >&2; return 1; }
  # Again with one sender process (trafgen -P 1), as bench/compare.sh does: it leaves the other
  # core to whoever forwards (the kernel bridge forwards in the sender's own context).
  fwd1=$(tg_kpps 3 rx_p2 in_ns "$p1" timeout 3 trafgen --dev eth0 --conf "$WORK/udp.cfg" -q -b 0 -P 1) ||
    { echo "$n: 64-byte run (one sender) failed" >&2; return 1; }
  echo "$tcp $fwd $fwd1 $rtt"
}

printf '%-6s %-8s %10s %14s %16s %10s %s\n' round network tcp_gbps l2fwd64_kpps l2fwd64_1tx_kpps rtt_ms load
RES=""
for r in $(seq "$ROUNDS"); do
  for n in vs br; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    m=$(measure $n) || continue
    printf '%-6s %-8s %10s %14s %16s %10s %s\n' "$r" "$n" $m "$load"
    RES="$RES$n $m $load;"
  done
done
python3 - "$RES" "$OUT/compare-docker.json" <<'EOF'
import json, sys, datetime, platform, statistics
rows = {"vs": [], "br": []}
for r in sys.argv[1].split(';'):
    if r.strip():
        n, tcp, fwd, fwd1, rtt, load = r.split()
        rows[n].append({"tcp_gbps": float(tcp), "l2fwd64_kpps": float(fwd), "l2fwd64_1tx_kpps": float(fwd1),
                        "rtt_ms": float(rtt), "load": float(load)})
med = {n: {k: statistics.median(x[k] for x in v) for k in ("tcp_gbps", "l2fwd64_kpps", "l2fwd64_1tx_kpps", "rtt_ms", "load")}
       for n, v in rows.items() if v}
ratios = {}
if "vs" in med and "br" in med:
    v, b = med["vs"], med["br"]
    ratios = {k: round(v[k] / b[k], 2) if b[k] else None
              for k in ("tcp_gbps", "l2fwd64_kpps", "l2fwd64_1tx_kpps", "rtt_ms")}
    print(f"median of {len(rows['vs'])} rounds, load {v['load']:.1f}: Docker on vswitch / Docker's bridge: "
          f"tcp {ratios['tcp_gbps']}x  l2fwd64 {ratios['l2fwd64_kpps']}x  "
          f"l2fwd64 one sender {ratios['l2fwd64_1tx_kpps']}x  rtt {ratios['rtt_ms']}x (lower is better)")
json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "kernel": platform.release(), "rounds": rows, "median": med, "ratios": ratios},
          open(sys.argv[2], "w"), indent=2)
EOF
