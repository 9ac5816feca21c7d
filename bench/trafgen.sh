# Sourced by the bench/compare*.sh scripts: the 64-byte frame rate, measured with trafgen from
# inside a container's namespace, so that a generator that gives up is never read as a slow
# switch.
#
# trafgen raises the host's socket-buffer defaults itself before it sends (net.core.wmem_default
# and friends, unless --no-sock-mem), but inside a network namespace those sysctls are the
# host's and read-only: it then sends with the default 208 KiB send buffer. Where the next hop
# holds a sender's skbs for a while (a veth end with native XDP, as `--attach xdp` sets up,
# queues up to 256 of them in its NAPI ring, each still charged to the sender's socket), the
# flush of trafgen's TX ring fails with EAGAIN and trafgen exits ("Flushing TX_RING failed:
# Resource temporarily unavailable!") 50-100 ms into a 3 s run. The rate, counted over 3 s,
# then reads 5-30 times too low (measured 2026-12-05: vswitch-xdp with both cores sending 208
# kpps that way, 737-789 kpps with the buffer trafgen asks for). So: raise the send buffer the
# way trafgen would, around each trafgen run only, and treat a run that ends before its timeout
# as a failed measurement (tg_kpps).

# Only the send side: trafgen's socket is the one that runs out. Raised around each trafgen run
# only (tg_kpps), so that no other socket of the benchmark (iperf3, ping, the switches' own) is
# opened with the raised defaults. The values found are kept in a file in the script's work
# directory ($WORK, set before sourcing), so that the script's cleanup can put them back after an
# interrupted run, even one whose trafgen ran in a $(...) subshell.
TG_SOCKMEM_KEYS="net.core.wmem_max net.core.wmem_default"
TG_SOCKMEM_FILE=$WORK/trafgen-sockmem

# tg_sockmem_raise: sets the sysctls to at least 4 MiB (trafgen's own choice), remembering the
# values found; wmem_max first, so that wmem_default never exceeds it on the way up.
tg_sockmem_raise() {
  local k v
  [ -f "$TG_SOCKMEM_FILE" ] && return 0
  for k in $TG_SOCKMEM_KEYS; do
    v=$(sysctl -n "$k") || return 1
    echo "$k=$v" >>"$TG_SOCKMEM_FILE"
    [ "$v" -ge 4194304 ] || sysctl -qw "$k=4194304" || return 1
  done
}

# tg_sockmem_restore: puts back what tg_sockmem_raise found (safe to call twice, or without a
# raise). wmem_default first, so that it never exceeds wmem_max on the way back.
tg_sockmem_restore() {
  local kv
  [ -f "$TG_SOCKMEM_FILE" ] || return 0
  for kv in $(tac "$TG_SOCKMEM_FILE"); do sysctl -qw "$kv" >/dev/null 2>&1; done
  rm -f "$TG_SOCKMEM_FILE"
}

# tg_kpps SECONDS COUNT_FN CMD...: runs CMD, a trafgen run under `timeout SECONDS` in the
# sender's namespace (e.g. `ip netns exec c1 timeout 3 trafgen --dev eth0 ...`), reading the
# receiver's frame counter with the shell function COUNT_FN before and 0.5 s after; prints the
# rate in kframes/s. When trafgen exits before its timeout (exit status other than timeout's
# 124), prints why on stderr and returns 1.
tg_kpps() {
  local secs=$1 count=$2 b a rc t0 ms log
  shift 2
  log=$(mktemp)
  b=$($count)
  tg_sockmem_raise || { echo "cannot raise the socket-buffer sysctls for trafgen" >&2; return 1; }
  t0=$(date +%s%N)
  "$@" >"$log" 2>&1
  rc=$?
  tg_sockmem_restore
  ms=$((($(date +%s%N) - t0) / 1000000))
  sleep 0.5
  a=$($count)
  local why
  why=$(grep -v 'socket memory' "$log" | grep -i -m1 -E 'fail|error|cannot')
  rm -f "$log"
  if [ "$rc" -ne 124 ]; then
    echo "trafgen stopped after $ms ms of $secs s (exit $rc): $why" >&2
    return 1
  fi
  echo $(((a - b) / (secs * 1000)))
}
