#!/usr/bin/env bash
# Soak: SOAK_SECS (default 600) of container churn on a running switch while traffic flows, to
# show that nothing grows. Every second one container is created on each of two networks
# (`vswitch run -d -- sleep`, veth and TAP in turn) and the ones created two seconds earlier are
# removed (`vswitch rm -f`), while iperf3 (rate SOAK_RATE, default 1G) and ping (5/s) run between
# two long-lived containers. The daemon runs in a network namespace of its own (under
# `nsenter --net`, like the multi-host tests), so every switch-side link counted is this run's.
#
# Samples the daemon's RSS (VmRSS), open descriptors, threads and children, and this run's
# namespaces, /etc/netns entries and vsw* links, at these points:
#   before   long-lived containers and traffic only
#   start    after a warm-up of SOAK_WARMUP seconds of churn (default 30, or a tenth of SOAK_SECS
#            if shorter), at the end of a churn cycle
#   end      at the end of the last churn cycle (as many churn containers alive as at start)
#   after    churn containers removed (compared with `before`)
# and fails when end exceeds start (or after exceeds before) beyond the tolerance:
# RSS SOAK_RSS_TOL_KIB (default 4096) KiB, descriptors SOAK_FD_TOL (default 2) and threads 1
# (a client's socket and thread may still be closing when sampled), and none at all for
# children, namespaces, /etc/netns entries and links. Also fails if a churn
# command failed, iperf3 did not run to the end, or ping lost more than SOAK_MAX_LOSS (default 1)
# percent. Everything it started is stopped by PID and removed on exit, also when interrupted.
#
# Prints the daemon's RSS and descriptors every 30 cycles on the way. SOAK_DAEMON_ARGS adds
# flags to `vswitch daemon`.
#
# Usage (root): [SOAK_SECS=600] bench/soak.sh          needs: iperf3 iputils-ping iproute2 python3
set -u
SECS=${SOAK_SECS:-600}
WARM=${SOAK_WARMUP:-30}
[ "$WARM" -gt $((SECS / 10)) ] && WARM=$((SECS / 10))
RATE=${SOAK_RATE:-1G}
RSS_TOL=${SOAK_RSS_TOL_KIB:-4096}
FD_TOL=${SOAK_FD_TOL:-2}
MAX_LOSS=${SOAK_MAX_LOSS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VSWITCH_BIN:-$ROOT/target/release/vswitch}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -p switch --bin vswitch) || exit 1
for t in iperf3 ping ip nsenter python3; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install -y iperf3 iputils-ping iproute2 util-linux python3" >&2; exit 1; }
done
TAG=sk$$
WORK=$(mktemp -d /tmp/vswitch-soak.XXXXXX)
SERVERS=$WORK/servers
. "$ROOT/bench/servers.sh"
HOSTNS=${TAG}h
N=$(( ($$ % 200) + 20 ))
V() { "$BIN" --socket "$WORK/s" "$@"; }
VPID=""
LIVE=()

cleanup() {
  stop_servers
  if [ -n "$VPID" ]; then
    V rm -f ${TAG}srv ${TAG}cli "${LIVE[@]}" >/dev/null 2>&1
    kill "$VPID" 2>/dev/null; wait "$VPID" 2>/dev/null; VPID=""
  fi
  # Whatever is left of this run's containers (their names carry TAG).
  for ns in $(ip netns list | awk '{print $1}' | grep "^${TAG}"); do ip netns del "$ns"; done
  for d in /etc/netns/${TAG}*; do [ -d "$d" ] && rm -rf "$d"; done
  ip netns del $HOSTNS 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bgrun OUT CMD...: CMD (a program, not a shell function, so that the PID is its own) in the
# background, output to OUT, PID recorded for stop_servers.
bgrun() { local out=$1; shift; "$@" >"$out" 2>&1 & echo $! >>"$SERVERS"; BGPID=$!; }

ip netns add $HOSTNS
ip -n $HOSTNS link set lo up
# shellcheck disable=SC2086 # SOAK_DAEMON_ARGS: extra daemon flags, split on spaces
nsenter --net=/run/netns/$HOSTNS -- "$BIN" --socket "$WORK/s" daemon --state-dir "$WORK/st" \
  ${SOAK_DAEMON_ARGS:-} >"$WORK/daemon.log" 2>&1 &
VPID=$!
for _ in $(seq 100); do V network ls >/dev/null 2>&1 && break; sleep 0.1; done
V network ls >/dev/null || { cat "$WORK/daemon.log"; exit 1; }
[ "$(cat /proc/$VPID/comm)" = vswitch ] || { echo "pid $VPID is not the daemon" >&2; exit 1; }
V network create --subnet 10.$N.81.0/24 ${TAG}a >/dev/null || exit 1
V network create --subnet 10.$N.82.0/24 ${TAG}b >/dev/null || exit 1
V run -d --name ${TAG}srv --network ${TAG}a -- iperf3 -s >/dev/null || exit 1
V run --name ${TAG}cli --network ${TAG}a >/dev/null || exit 1
SRV_IP=$(V ps --json | python3 -c 'import json,sys
print(next(c["endpoints"][0]["ip"] for c in json.load(sys.stdin) if c["name"]==sys.argv[1]))' ${TAG}srv)
for _ in $(seq 50); do V exec ${TAG}cli -- ping -c1 -W1 "$SRV_IP" >/dev/null 2>&1 && break; sleep 0.2; done
sleep 0.5 # iperf3 -s listening

# sample LABEL: one row of measurements into $WORK/samples.
sample() {
  local rss fds thr kids ns etc links
  rss=$(awk '/^VmRSS/{print $2}' /proc/$VPID/status)
  thr=$(awk '/^Threads/{print $2}' /proc/$VPID/status)
  fds=$(ls /proc/$VPID/fd | wc -l)
  kids=$(pgrep -P $VPID | wc -l)
  ns=$(ip netns list | awk '{print $1}' | grep -c "^${TAG}[^h]")
  etc=$(ls -d /etc/netns/${TAG}* 2>/dev/null | wc -l)
  links=$(ip -n $HOSTNS -br link | grep -c '^vsw')
  echo "$1 $rss $fds $thr $kids $ns $etc $links ${#LIVE[@]}" >>"$WORK/samples"
}

bgrun "$WORK/iperf3.json" "$BIN" --socket "$WORK/s" exec ${TAG}cli -- iperf3 -c "$SRV_IP" -t "$SECS" -b "$RATE" -J
IPERF=$BGPID
bgrun "$WORK/ping.log" "$BIN" --socket "$WORK/s" exec ${TAG}cli -- ping -i 0.2 -w "$SECS" -q "$SRV_IP"
PING=$BGPID
sleep 1
sample before

# Churn: each cycle creates one container on each network and removes those of two cycles ago.
FAILS=0; i=0; t0=$(date +%s); STARTED=""
echo "soak: $SECS s of churn on ${TAG}a and ${TAG}b (warm-up $WARM s), iperf3 at $RATE and ping between ${TAG}cli and ${TAG}srv"
while [ $(( $(date +%s) - t0 )) -lt "$SECS" ]; do
  cycle_start=$(date +%s%N)
  attach=veth; [ $((i % 2)) -eq 1 ] && attach=tap
  for net in a b; do
    name=${TAG}c$i$net
    if V run -d --name "$name" --network ${TAG}$net --attach $attach -- sleep 100000 >/dev/null 2>>"$WORK/churn.err"; then
      LIVE+=("$name")
    else
      FAILS=$((FAILS + 1))
    fi
  done
  while [ ${#LIVE[@]} -gt 4 ]; do
    V rm -f "${LIVE[0]}" >/dev/null 2>>"$WORK/churn.err" || FAILS=$((FAILS + 1))
    LIVE=("${LIVE[@]:1}")
  done
  i=$((i + 1))
  if [ $((i % 30)) -eq 0 ]; then
    echo "  $(( $(date +%s) - t0 )) s: $i cycles, daemon RSS $(awk '/^VmRSS/{print $2}' /proc/$VPID/status) KiB, $(ls /proc/$VPID/fd | wc -l) fds"
  fi
  if [ -z "$STARTED" ] && [ $(( $(date +%s) - t0 )) -ge "$WARM" ]; then sample start; STARTED=1; fi
  left=$(( 1000000000 - ($(date +%s%N) - cycle_start) ))
  [ $left -gt 0 ] && sleep "0.$(printf %09d $left)"
done
sample end
# The traffic ends by itself within a few seconds of the churn.
for p in $IPERF $PING; do
  for _ in $(seq 150); do kill -0 $p 2>/dev/null || break; sleep 0.1; done
done
IPERF_OK=1; wait $IPERF || IPERF_OK=0
wait $PING
V rm -f "${LIVE[@]}" >/dev/null 2>>"$WORK/churn.err" || FAILS=$((FAILS + 1))
LIVE=()
# Namespaces and links go asynchronously in the kernel: wait (10 s at most) for `before`'s counts.
read -r _ _ _ _ _ bns betc blinks _ < <(grep '^before' "$WORK/samples")
for _ in $(seq 100); do
  ns=$(ip netns list | awk '{print $1}' | grep -c "^${TAG}[^h]")
  links=$(ip -n $HOSTNS -br link | grep -c '^vsw')
  [ "$ns" -le "$bns" ] && [ "$links" -le "$blinks" ] && break
  sleep 0.1
done
sample after

python3 - "$WORK" "$i" "$FAILS" "$IPERF_OK" "$RSS_TOL" "$FD_TOL" "$MAX_LOSS" "$SECS" <<'PY'
import json, re, sys
work, cycles, fails, iperf_ok = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
rss_tol, fd_tol, max_loss, secs = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
cols = ["rss_kib", "fds", "threads", "children", "netns", "etc_netns", "vsw_links", "churn_alive"]
rows = {}
for line in open(work + "/samples"):
    f = line.split()
    rows[f[0]] = dict(zip(cols, map(int, f[1:])))
print("%-7s %9s %5s %8s %9s %6s %10s %10s %12s" % ("sample", "RSS KiB", "fds", "threads", "children",
      "netns", "etc/netns", "vsw links", "churn alive"))
for name in ["before", "start", "end", "after"]:
    if name in rows:
        r = rows[name]
        print("%-7s %9d %5d %8d %9d %6d %10d %10d %12d" % (name, *[r[c] for c in cols]))
bad = []
def check(a, b, col, tol):
    if a in rows and b in rows and rows[b][col] > rows[a][col] + tol:
        bad.append(f"{col} grew from {rows[a][col]} ({a}) to {rows[b][col]} ({b}), tolerance {tol}")
for a, b in [("start", "end"), ("before", "after")]:
    check(a, b, "rss_kib", rss_tol)
    check(a, b, "fds", fd_tol)
    check(a, b, "threads", 1)
    for col in ["children", "netns", "etc_netns", "vsw_links"]:
        check(a, b, col, 0)
if "start" not in rows:
    bad.append("no start sample (the churn ran shorter than its warm-up)")
print(f"churn: {cycles} cycles, {2 * cycles} containers created and removed, {fails} failed commands")
if fails:
    bad.append(f"{fails} churn commands failed (see below)")
try:
    v = json.load(open(work + "/iperf3.json"))
    gbps = v["end"]["sum_received"]["bits_per_second"] / 1e9
    dur = v["end"]["sum_received"]["seconds"]
    print(f"iperf3: {gbps:.2f} Gbit/s for {dur:.0f} s")
    if not iperf_ok or dur < secs - 2:
        bad.append(f"iperf3 ran {dur:.0f} of {secs} s")
except Exception as e:
    bad.append(f"iperf3 gave no result ({e})")
ping = open(work + "/ping.log").read()
m = re.search(r"(\d+) packets transmitted, (\d+) received.*?([\d.]+)% packet loss", ping, re.S)
if m:
    print(f"ping: {m.group(1)} sent, {m.group(2)} received, {m.group(3)}% loss")
    if float(m.group(3)) > max_loss:
        bad.append(f"ping lost {m.group(3)}% (at most {max_loss}%)")
else:
    bad.append("ping gave no summary: " + ping[-300:])
if bad:
    print("FAIL: " + "; ".join(bad))
    sys.exit(1)
print("OK: flat")
PY
rc=$?
if [ -s "$WORK/churn.err" ]; then echo "churn errors (first 5):"; head -5 "$WORK/churn.err"; fi
[ $rc -ne 0 ] && { echo "daemon log (last 20 lines):"; tail -20 "$WORK/daemon.log"; }
exit $rc
