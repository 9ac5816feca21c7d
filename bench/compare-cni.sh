#!/usr/bin/env bash
# Podman on vswitch against podman on the reference CNI `bridge` plugin (a kernel bridge with
# host-local IPAM), measured in ONE run on this machine: two podman containers per target,
# single-stream TCP between them (the host's iperf3 run in their network namespaces with
# nsenter: the traffic still crosses each container's interface) and ping RTT. Rounds
# alternate the targets; the table gives the medians and vswitch's ratio to the bridge plugin,
# also written as JSON to bench/results/compare-cni.json.
#
# Podman runs with its own containers.conf/storage.conf under a temporary directory (nothing
# under /etc changes): CNI backend, runc, cgroupfs, file events, no default ulimits, no port
# reservation.
#
# Usage (root): bench/compare-cni.sh [SECONDS] [ROUNDS]
#   needs: podman runc containernetworking-plugins busybox-static iperf3
#   CHECK_ONLY=1 bench/compare-cni.sh: set both targets up, check that the containers ping
#   each other, tear down; no measurement.
set -u
T=${1:-5}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
CNI=${VSWITCH_CNI_BIN:-$ROOT/target/release/vswitch-cni}
REF=${CNI_PLUGINS:-/usr/lib/cni}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
[ -x "$BIN" ] && [ -x "$CNI" ] || (cd "$ROOT" && cargo build --release -p switch --bins) || exit 1
for t in podman runc iperf3 nsenter ping python3 tar; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y podman runc containernetworking-plugins busybox-static iperf3" >&2; exit 1; }
done
[ -x "$REF/bridge" ] && [ -x "$REF/host-local" ] || { echo "missing $REF/bridge, $REF/host-local: apt-get install -y containernetworking-plugins" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "missing /bin/busybox: apt-get install -y busybox-static" >&2; exit 1; }

TAG=cc$$
WORK=$(mktemp -d /tmp/vswitch-compare-cni.XXXXXX)
VPID=""
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"

mkdir -p $WORK/plugins $WORK/net.d $WORK/podman/tmp $WORK/rootfs/bin
cp "$CNI" $WORK/plugins/vswitch-cni
cp "$REF/bridge" "$REF/host-local" "$REF/loopback" $WORK/plugins/ 2>/dev/null
cat >$WORK/containers.conf <<EOF
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$WORK/podman/events.log"
runtime = "runc"
enable_port_reservation = false
tmp_dir = "$WORK/podman/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$WORK/plugins"]
network_config_dir = "$WORK/net.d"
EOF
printf '[storage]\ndriver = "vfs"\nrunroot = "%s/podman/run"\ngraphroot = "%s/podman/root"\n' $WORK $WORK >$WORK/storage.conf
export CONTAINERS_CONF=$WORK/containers.conf CONTAINERS_STORAGE_CONF=$WORK/storage.conf

cat >$WORK/net.d/${TAG}vs.conflist <<EOF
{ "cniVersion": "1.0.0", "name": "${TAG}vs",
  "plugins": [ { "type": "vswitch-cni", "socket": "$WORK/s", "subnet": "10.78.0.0/24" } ] }
EOF
cat >$WORK/net.d/${TAG}br.conflist <<EOF
{ "cniVersion": "1.0.0", "name": "${TAG}br",
  "plugins": [ { "type": "bridge", "bridge": "${TAG}b0", "isGateway": true, "ipMasq": false,
                 "ipam": { "type": "host-local", "subnet": "10.79.0.0/24",
                           "dataDir": "$WORK/ipam" } } ] }
EOF

# The bridge plugin with isGateway turns on the host's IPv4 forwarding (and leaves it on): the
# cleanup puts back what it was, so the benchmark changes nothing on the host (new namespaces
# inherit it, and a host that forwards answers for addresses it should not).
OLDFWD=$(sysctl -n net.ipv4.ip_forward)
cleanup() {
  sysctl -qw net.ipv4.ip_forward="$OLDFWD"
  stop_servers
  podman rm -f -a -t 0 >/dev/null 2>&1
  podman rmi -a -f >/dev/null 2>&1
  if [ -n "$VPID" ]; then kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; fi
  ip link del ${TAG}b0 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# The image: a busybox-static root file system.
cp /bin/busybox $WORK/rootfs/bin/
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox $WORK/rootfs/bin/$a; done
mkdir -p $WORK/rootfs/{etc,proc,sys,dev,tmp}
tar -C $WORK/rootfs -cf $WORK/rootfs.tar . && podman import -q $WORK/rootfs.tar localhost/${TAG}img >/dev/null || exit 1

"$BIN" --socket $WORK/s daemon --state-dir $WORK/state >$WORK/daemon.log 2>&1 &
VPID=$!
for _ in $(seq 100); do "$BIN" --socket $WORK/s network ls >/dev/null 2>&1 && break; sleep 0.1; done
# A running dockerd's br_netfilter would put the bridge's frames through iptables (FORWARD DROP).
sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null

pid_of() { podman inspect -f '{{.State.Pid}}' "$1"; }
addr_of() { nsenter -t "$1" -n ip -o -4 addr show eth0 | awk '{print $4}' | cut -d/ -f1; }

# measure TARGET: two containers on network ${TAG}TARGET; prints "TARGET tcp_gbps rtt_ms".
measure() {
  local net=${TAG}$1 p1 p2 ip2 tcp rtt
  podman run -d --name ${net}c1 --network $net localhost/${TAG}img sleep 3600 >/dev/null || return 1
  podman run -d --name ${net}c2 --network $net localhost/${TAG}img sleep 3600 >/dev/null || return 1
  p1=$(pid_of ${net}c1); p2=$(pid_of ${net}c2); ip2=$(addr_of $p2)
  if ! nsenter -t $p1 -n ping -c 3 -i 0.2 -W 2 $ip2 >/dev/null; then
    echo "$1: no connectivity" >&2; podman rm -f -t 0 ${net}c1 ${net}c2 >/dev/null; return 1
  fi
  if [ "${CHECK_ONLY:-0}" = 1 ]; then
    echo "$1 ok ok"
  else
    rtt=$(nsenter -t $p1 -n ping -c 50 -i 0.01 -q $ip2 | tail -1 | awk -F/ '{print $5}')
    serve nsenter -t $p2 -n iperf3 -s -1; sleep 0.5
    tcp=$(nsenter -t $p1 -n iperf3 -c $ip2 -t $T -J | python3 -c 'import json,sys;d=json.load(sys.stdin);print("%.2f"%(d["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null)
    stop_servers
    echo "$1 ${tcp:-0} ${rtt:-0}"
  fi
  podman rm -f -t 0 ${net}c1 ${net}c2 >/dev/null
}

printf '%-8s %6s %10s %10s\n' target round tcp_gbps rtt_ms
RES=""
for r in $(seq $ROUNDS); do
  for m in vs br; do
    x=$(measure $m) || continue
    set -- $x
    printf '%-8s %6s %10s %10s\n' $1 $r $2 $3
    RES="$RES$x;"
  done
  [ "${CHECK_ONLY:-0}" = 1 ] && exit 0
done
python3 - "$RES" "$OUT/compare-cni.json" <<'EOF'
import json, sys, statistics, datetime, platform
rows = {}
for r in sys.argv[1].split(';'):
    if r.strip():
        m, tcp, rtt = r.split()
        rows.setdefault(m, {"tcp_gbps": [], "rtt_ms": []})
        rows[m]["tcp_gbps"].append(float(tcp)); rows[m]["rtt_ms"].append(float(rtt))
med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in rows.items()}
names = {"vs": "podman on vswitch-cni", "br": "podman on the bridge plugin"}
for m, d in med.items():
    print(f"{names[m]}: tcp {d['tcp_gbps']:.2f} Gbps, rtt {d['rtt_ms']:.3f} ms (medians)")
ratios = {}
if "vs" in med and "br" in med and med["br"]["tcp_gbps"] and med["br"]["rtt_ms"]:
    ratios = {"tcp": round(med["vs"]["tcp_gbps"] / med["br"]["tcp_gbps"], 2),
              "rtt": round(med["vs"]["rtt_ms"] / med["br"]["rtt_ms"], 2)}
    print(f"vswitch / bridge plugin: tcp {ratios['tcp']}x, rtt {ratios['rtt']}x (lower is better)")
json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "kernel": platform.release(), "rounds": rows, "medians": med, "ratios": ratios},
          open(sys.argv[2], "w"), indent=2)
EOF
