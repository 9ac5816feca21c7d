# Sourced by the bench/compare*.sh scripts: background servers (iperf3, and the helpers a peer
# needs running) started so that the script knows their PIDs, and its cleanup stops exactly the
# processes it started, also after a failed client or an interrupted run. Never by name.
#
# Set SERVERS to a file inside the script's own work directory before the first `serve`. The
# PIDs go to that file rather than to a variable so that servers started inside a $(...)
# subshell are known to the cleanup of the main shell too.

# serve CMD...: runs CMD (e.g. `ip netns exec NS iperf3 -s -1`) in the background with its
# output discarded and records its PID; sets SERVED to it. CMD must not daemonize (no -D).
serve() {
  "$@" >/dev/null 2>&1 &
  SERVED=$!
  echo $SERVED >>"$SERVERS"
}

# stop_servers: stops every process recorded by `serve` and the children it started itself
# (pasta and `unshare --fork` run their command as a child that outlives them), then forgets
# them. A server that already exited is skipped.
stop_servers() {
  [ -f "$SERVERS" ] || return 0
  local p c
  while read -r p; do
    for c in $(pgrep -P "$p"); do kill "$c" 2>/dev/null; done
    kill "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done <"$SERVERS"
  rm -f "$SERVERS"
}
