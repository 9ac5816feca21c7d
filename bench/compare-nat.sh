#!/usr/bin/env bash
# Networking beyond the host, measured in ONE run on this machine, single-stream TCP (iperf3):
#   egress:  a container -> a server "out there" (a namespace routed from the host by a veth)
#   inbound: a client on the host -> a published port -> a server in the container
# for
#   vswitch  (this project: the gateway stage terminates TCP, host sockets, no firewall rule)
#   slirp    (Debian's slirp4netns, --mtu=65520; inbound via its API's add_hostfwd)
#   pasta    (Debian's passt; inbound via -t)
#   kernel   (what Docker does: veth + routing + MASQUERADE for egress; inbound here is the host
#             reaching the container's address directly, which bounds DNAT from above)
# Prints Gbps and vswitch's ratio to each peer, and writes bench/results/compare-nat.json.
# The kernel row adds one MASQUERADE rule in its own nftables table and turns on ip_forward,
# both undone right after.
#
# The machine is shared and noisy, so the whole comparison runs ROUNDS times (default 3, every
# peer once per round) and the summary gives the median of each cell and the median of the
# per-round ratios; the rounds' own tables are printed too.
#
# Usage (root): [ROUNDS=N] bench/compare-nat.sh [SECONDS]      needs: iperf3 slirp4netns passt nftables
set -u
T=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
ROUNDS=${ROUNDS:-3}
if [ -z "${NAT_ROUND:-}" ]; then
  [ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
  for r in $(seq "$ROUNDS"); do
    echo "round $r of $ROUNDS:"
    NAT_ROUND=$r NAT_JSON=$OUT/compare-nat.round$r.json VSWITCH_BIN=$BIN "$0" "$T" | sed 's/^/  /'
  done
  python3 - "$OUT" "$ROUNDS" "$ROOT/bench" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[3])
from rounds import load, median, ratio
out, n = sys.argv[1], int(sys.argv[2])
rounds = load(out + "/compare-nat.round{}.json", n)
if not rounds:
    sys.exit(1)
peers = ["vswitch", "slirp4netns", "pasta", "kernel"]
summary = {"seconds": rounds[0]["seconds"], "unit": "Gbps", "rounds": len(rounds)}
print(f"median of {len(rounds)} rounds (Gbps; ratios are medians of the per-round ratios):")
print("%-8s %10s %10s %10s %10s   %s" % ("", "vswitch", "slirp", "pasta", "kernel", "vswitch / slirp, pasta, kernel"))
for row in ["egress", "inbound"]:
    med = {p: median(rounds, lambda r: r[row][p]) for p in peers}
    rat = {p: ratio(rounds, lambda r: r[row]["vswitch"], lambda r: r[row][p]) for p in peers[1:]}
    summary[row] = med
    summary[row + "_ratio"] = rat
    fmt = lambda x: "n/a" if x is None else "%.2fx" % x
    print("%-8s %10.2f %10.2f %10.2f %10.2f   %s %s %s" % (row, *[med[p] for p in peers],
          *[fmt(rat[p]) for p in peers[1:]]))
json.dump(summary, open(f"{out}/compare-nat.json", "w"), indent=2)
PY
  exit $?
fi
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
for t in iperf3 slirp4netns pasta nft python3 nsenter; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y iperf3 slirp4netns passt nftables util-linux" >&2; exit 1; }
done
TAG=nb$$
WORK=$(mktemp -d /tmp/vswitch-compare-nat.XXXXXX)
VPID=""
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"
# Unique-ish subnets for this run.
N=$(( ($$ % 200) + 20 ))
SUB=10.$N.71          # vswitch network
HOSTNET=10.$N.72      # the "outside" veth whose host side serves egress
KNET=10.$N.73         # kernel path

gbps() { python3 -c 'import json,sys
try: print("%.2f"%(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("0")'; }

cleanup() {
  stop_servers
  if [ -n "$VPID" ]; then
    "$BIN" --socket $WORK/s rm -f ${TAG}c >/dev/null 2>&1
    kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; VPID=""
  fi
  ip netns del ${TAG}o 2>/dev/null; ip netns del ${TAG}k 2>/dev/null
  ip link del ${TAG}h 2>/dev/null; ip link del ${TAG}kv 2>/dev/null
  nft delete table ip ${TAG} 2>/dev/null
  [ -n "${OLDFWD:-}" ] && sysctl -qw net.ipv4.ip_forward=$OLDFWD
  rm -rf "$WORK"
}
trap cleanup EXIT

# A server address on the host outside any container network (what the container dials).
ip netns add ${TAG}o
ip link add ${TAG}h type veth peer name eth0 netns ${TAG}o
ip addr add $HOSTNET.1/24 dev ${TAG}h; ip link set ${TAG}h up
ip -n ${TAG}o addr add $HOSTNET.2/24 dev eth0; ip -n ${TAG}o link set eth0 up; ip -n ${TAG}o link set lo up
srv() { serve ip netns exec ${TAG}o iperf3 -s -1 -B $HOSTNET.2 -p $1; sleep 0.3; }

declare -A EG IN

# ---- vswitch ----
"$BIN" --socket $WORK/s daemon --state-dir $WORK/st >$WORK/vswitch.log 2>&1 & VPID=$!
for _ in $(seq 50); do "$BIN" --socket $WORK/s network ls >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" --socket $WORK/s network create --subnet $SUB.0/24 ${TAG}n >/dev/null
"$BIN" --socket $WORK/s run -d --name ${TAG}c --network ${TAG}n -p 127.0.0.1:15301:5201 -- iperf3 -s >/dev/null
srv 5311; sleep 0.2
EG[vswitch]=$("$BIN" --socket $WORK/s exec ${TAG}c -- iperf3 -c $HOSTNET.2 -p 5311 -t $T -J | gbps)
sleep 0.3
IN[vswitch]=$(iperf3 -c 127.0.0.1 -p 15301 -t $T -J | gbps)
"$BIN" --socket $WORK/s stats | grep -E "nat_(drop|tcp)" >$WORK/natstats
"$BIN" --socket $WORK/s rm -f ${TAG}c >/dev/null
kill $VPID; wait $VPID 2>/dev/null; VPID=""

# ---- slirp4netns ----
serve unshare --net --fork sleep 600; UPID=$SERVED; sleep 0.3
NSPID=$(pgrep -P $UPID sleep || echo $UPID)
serve slirp4netns --configure --mtu=65520 --api-socket $WORK/slirp.sock $NSPID tap0; sleep 1
srv 5312
EG[slirp]=$(nsenter -t $NSPID -n iperf3 -c $HOSTNET.2 -p 5312 -t $T -J | gbps)
serve nsenter -t $NSPID -n iperf3 -s -1 -p 5201; sleep 0.3
python3 - "$WORK/slirp.sock" <<'EOF' >/dev/null
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(json.dumps({"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 15302, "guest_port": 5201}}).encode())
print(s.recv(4096))
EOF
IN[slirp]=$(iperf3 -c 127.0.0.1 -p 15302 -t $T -J | gbps)
stop_servers

# ---- pasta ----
srv 5313
EG[pasta]=$(pasta --runas 0 --config-net -q -- iperf3 -c $HOSTNET.2 -p 5313 -t $T -J 2>>$WORK/pasta.log | gbps)
serve pasta --runas 0 --config-net -q -t 15303:5201 -- iperf3 -s -1 -p 5201; sleep 1.5
IN[pasta]=$(iperf3 -c 127.0.0.1 -p 15303 -t $T -J | gbps)
stop_servers

# ---- kernel path (veth + routing + MASQUERADE) ----
ip netns add ${TAG}k
ip link add ${TAG}kv type veth peer name eth0 netns ${TAG}k
ip addr add $KNET.1/24 dev ${TAG}kv; ip link set ${TAG}kv up
ip -n ${TAG}k addr add $KNET.2/24 dev eth0; ip -n ${TAG}k link set eth0 up; ip -n ${TAG}k link set lo up
ip -n ${TAG}k route add default via $KNET.1
OLDFWD=$(sysctl -n net.ipv4.ip_forward); sysctl -qw net.ipv4.ip_forward=1   # Docker sets it too
nft add table ip ${TAG}
nft add chain ip ${TAG} post '{ type nat hook postrouting priority 100 ; }'
nft add rule ip ${TAG} post ip saddr $KNET.0/24 oifname != ${TAG}kv masquerade
srv 5314
EG[kernel]=$(ip netns exec ${TAG}k iperf3 -c $HOSTNET.2 -p 5314 -t $T -J | gbps)
serve ip netns exec ${TAG}k iperf3 -s -1 -p 5201; sleep 0.3
IN[kernel]=$(iperf3 -c $KNET.2 -p 5201 -t $T -J | gbps)
stop_servers
nft delete table ip ${TAG}
sysctl -qw net.ipv4.ip_forward=$OLDFWD; OLDFWD=""

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2fx'%(a/b) if b>0 else 'n/a')" "$1" "$2"; }
printf "%-8s %10s %10s %10s %10s   %s\n" "" vswitch slirp pasta kernel "vswitch / slirp, pasta, kernel"
for row in egress inbound; do
  if [ $row = egress ]; then declare -n R=EG; else declare -n R=IN; fi
  printf "%-8s %10s %10s %10s %10s   %s %s %s\n" $row "${R[vswitch]}" "${R[slirp]}" "${R[pasta]}" "${R[kernel]}" \
    "$(ratio ${R[vswitch]} ${R[slirp]})" "$(ratio ${R[vswitch]} ${R[pasta]})" "$(ratio ${R[vswitch]} ${R[kernel]})"
  unset -n R
done
echo "(Gbps, single-stream TCP, ${T}s each; vswitch NAT counters:)"; cat $WORK/natstats
python3 - "${NAT_JSON:-$OUT/compare-nat.json}" <<EOF
import json, sys
d = {"seconds": $T, "unit": "Gbps",
     "egress": {"vswitch": ${EG[vswitch]}, "slirp4netns": ${EG[slirp]}, "pasta": ${EG[pasta]}, "kernel": ${EG[kernel]}},
     "inbound": {"vswitch": ${IN[vswitch]}, "slirp4netns": ${IN[slirp]}, "pasta": ${IN[pasta]}, "kernel": ${IN[kernel]}}}
json.dump(d, open(sys.argv[1], "w"), indent=2)
EOF
