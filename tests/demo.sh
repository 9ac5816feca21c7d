#!/usr/bin/env bash
# Quick start: build vswitch, start the daemon with its default network (bridge), run two
# containers on it and show them talking. Leaves the switch running; `tests/demo.sh stop` ends it.
# Needs root (network namespaces, veth, AF_PACKET).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${VSWITCH_DEMO_DIR:-/tmp/vswitch-demo}
export VSWITCH_SOCKET=$DIR/vswitch.sock
BIN=$ROOT/target/release/vswitch
[ "$(id -u)" = 0 ] || { echo "run as root: namespaces, veth and AF_PACKET need it" >&2; exit 1; }

if [ "${1:-}" = stop ]; then
  "$BIN" rm -f c1 c2 2>/dev/null || true
  [ -f "$DIR/daemon.pid" ] && kill "$(cat "$DIR/daemon.pid")" 2>/dev/null || true
  rm -rf "$DIR"; echo "vswitch demo stopped"; exit 0
fi

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
(cd "$ROOT" && cargo build --release -p switch --bin vswitch)

mkdir -p "$DIR"
if ! "$BIN" network ls >/dev/null 2>&1; then
  # --docker-plugin off: the demo leaves Docker's plugin directory to a real daemon.
  "$BIN" daemon --state-dir "$DIR/state" --docker-plugin off >"$DIR/daemon.log" 2>&1 &
  echo $! >"$DIR/daemon.pid"
  for _ in $(seq 100); do "$BIN" network ls >/dev/null 2>&1 && break; sleep 0.1; done
fi
set -x
"$BIN" network ls
"$BIN" run --name c1 >/dev/null
"$BIN" run --name c2 >/dev/null
"$BIN" ps
IP2=$("$BIN" ps --json | python3 -c 'import json,sys;print([c for c in json.load(sys.stdin) if c["name"]=="c2"][0]["endpoints"][0]["ip"])')
GW=$("$BIN" network inspect bridge | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["gateway"])')
"$BIN" exec c1 -- ping -c 3 "$IP2"
"$BIN" exec c1 -- ping -c 2 "$GW"
"$BIN" fdb
"$BIN" ports
{ set +x; } 2>/dev/null
echo
echo "The switch is running (log: $DIR/daemon.log). Try: VSWITCH_SOCKET=$VSWITCH_SOCKET $BIN exec c2 -- ip addr"
echo "Stop it with: tests/demo.sh stop"
