#!/usr/bin/env bash
# Mutation testing (issue 22) of the pure crates and modules with cargo-mutants: every mutant
# (a function body replaced by a default value, an operator swapped, a condition negated, ...)
# is built and the crate's unit tests are run against it; a mutant the tests still pass on is
# "missed" (MISSED in the log, listed in missed.txt).
#
#   bench/mutants.sh                     every group: encap ipam wire fdb pipeline
#   bench/mutants.sh ipam fdb            some groups
#   bench/mutants.sh wire:2/4            one slice of a group (cargo-mutants --shard, round-robin)
#   ITERATE=1 bench/mutants.sh ipam      retest only what the last run of that group did not catch
#   bench/mutants.sh --summary           only print the table of what was run so far
#
# Groups: encap, ipam and wire (switch/wire) are crates; fdb (switch/src/fdb.rs) and pipeline
# (switch/src/pipeline.rs) are modules of the switch crate. Each group (or slice) is one
# cargo-mutants invocation; its output goes to bench/results/mutants/GROUP[-K-of-N]/mutants.out
# (gitignored; missed.txt, caught.txt, timeout.txt, unviable.txt, outcomes.json, logs/).
# Only the unit tests (`cargo test --lib`) of the mutated crate run; for switch, three slow
# tests of control/ that never reach these modules are skipped (SWITCH_SKIP below).
# The build profile is `mutants` (Cargo.toml: dev without debug info); one mutant at a time
# (-j 1) under `nice -n 15`, because the machine is shared. Needs cargo-mutants
# (`cargo install --locked cargo-mutants`). Not run by CI: the full set takes hours (README).
#
# While the file $QUIET_FILE (default bench/results/mutants/QUIET) exists, the script waits (polling every
# 30 s) before starting each invocation, so that a benchmark can have the cores.
#
# Prints one row per group: mutants tested, caught, missed, timeout, unviable, and
# score = (caught + timeout) / (caught + missed + timeout): a mutant that makes the tests hang
# past cargo-mutants' timeout counts as caught; unviable mutants (do not build) are not counted.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/results/mutants
QUIET_FILE=${QUIET_FILE:-$OUT/QUIET}
ALL=(encap ipam wire fdb pipeline)
SWITCH_SKIP=(--skip control::server::tests::read_line_splits_and_bounds_arbitrary_input
  --skip control::server::tests::a_slow_or_idle_client_times_out
  --skip control::state::tests::from_json_never_panics)
cd "$ROOT" || exit 2
mkdir -p "$OUT"

# The directory of a group or slice: wire:2/4 -> wire-2-of-4.
dir_of() { local g=${1%%:*} s=; [[ $1 == *:* ]] && s=${1#*:} && s=-${s%/*}-of-${s#*/}; echo "$OUT/$g$s"; }

count() { local n=0; [ -f "$1" ] && n=$(grep -c . "$1"); echo "${n:-0}"; }
# Lines of file $2 that are lines of file $1.
inter() { local n=0; [ -f "$2" ] && n=$(grep -Fxc -f "$1" "$2"); echo "${n:-0}"; }

summary() {
  printf '%-9s %-8s %7s %7s %7s %7s %8s %7s\n' group slices mutants caught missed timeout unviable score
  local g d n c m t u slices total_c=0 total_m=0 total_t=0
  for g in encap ipam wire fdb pipeline; do
    n=0 c=0 m=0 t=0 u=0 slices=
    for d in "$OUT/$g" "$OUT/$g"-*-of-*; do
      [ -d "$d/mutants.out" ] || continue
      [ "$d" = "$OUT/$g" ] && slices=all || slices="$slices${slices:+,}${d#"$OUT/$g"-}"
      # --iterate lists what earlier runs caught *or found unviable* in previously_caught.txt;
      # the script keeps the earlier unviable ones in earlier-unviable.txt to tell them apart.
      local eu=0
      [ -f "$d/mutants.out/previously_caught.txt" ] && eu=$(count "$d/earlier-unviable.txt")
      c=$((c + $(count "$d/mutants.out/caught.txt") + $(count "$d/mutants.out/previously_caught.txt") - eu))
      t=$((t + $(count "$d/mutants.out/timeout.txt")))
      u=$((u + $(count "$d/mutants.out/unviable.txt") + eu))
      if [ -d "$d/retest/mutants.out" ]; then
        # After ITERATE: the missed ones were retested; what the tests now catch moves over.
        local after=$(count "$d/retest/mutants.out/missed.txt")
        # Only the retested names count (a filter may match a mutant caught before).
        c=$((c + $(inter "$d/mutants.out/missed.txt" "$d/retest/mutants.out/caught.txt")))
        t=$((t + $(inter "$d/mutants.out/missed.txt" "$d/retest/mutants.out/timeout.txt")))
        u=$((u + $(inter "$d/mutants.out/missed.txt" "$d/retest/mutants.out/unviable.txt")))
        m=$((m + after))
      else
        m=$((m + $(count "$d/mutants.out/missed.txt")))
      fi
    done
    [ -n "$slices" ] || continue
    n=$((c + m + t + u))
    printf '%-9s %-8s %7d %7d %7d %7d %8d %7s\n' "$g" "${slices//-of-/\/}" "$n" "$c" "$m" "$t" "$u" \
      "$(awk -v c=$((c + t)) -v v=$((c + m + t)) 'BEGIN { if (v) printf "%.1f%%", 100 * c / v; else print "-" }')"
  done
}

if [ "${1:-}" = --summary ]; then summary; exit 0; fi
command -v cargo-mutants >/dev/null || { echo "mutants.sh: needs cargo-mutants (cargo install --locked cargo-mutants)" >&2; exit 2; }
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=("${ALL[@]}")
status=0
for spec in "${groups[@]}"; do
  g=${spec%%:*}
  case $g in
    # -C --lib: build and run only the unit tests (not the binary, integration tests or docs).
    # wire's mutants run only wire's own tests (a few seconds each), not the switch's.
    encap | ipam) args=(-p "$g" -C --lib) ;;
    # The test frame builders (wire::gso::testing) are not code under test.
    wire) args=(-p wire -C --lib --exclude-re 'testing::') ;;
    fdb | pipeline) args=(-p switch -f "switch/src/$g.rs" -C --lib -- -- "${SWITCH_SKIP[@]}") ;;
    *) echo "mutants.sh: unknown group $g (encap ipam wire fdb pipeline, optionally :K/N)" >&2; exit 2 ;;
  esac
  shard=()
  # cargo-mutants numbers shards from 0; the script's K/N from 1.
  [[ $spec == *:* ]] && { s=${spec#*:}; shard=(--shard "$((${s%/*} - 1))/${s#*/}" --sharding round-robin); }
  d=$(dir_of "$spec")
  out=$d
  mkdir -p "$d"
  if [ -n "${ITERATE:-}" ]; then
    # Retest, by name, the mutants the last run of this group or slice missed (cargo-mutants'
    # own --iterate re-shards what is left, which for a slice is another set of mutants).
    [ -s "$d/mutants.out/missed.txt" ] || { echo "mutants.sh: $spec: nothing missed to retest"; continue; }
    filters=()
    while IFS= read -r name; do
      filters+=(-F "^$(printf '%s' "$name" | sed 's/[][\\.^$*+?(){}|]/\\&/g')\$")
    done <"$d/mutants.out/missed.txt"
    shard=("${filters[@]}")
    out=$d/retest
    mkdir -p "$out"
  else
    rm -rf "$d/retest"
  fi
  while [ -e "$QUIET_FILE" ]; do
    echo "mutants.sh: $QUIET_FILE exists, waiting before $spec ($(date +%T))"
    sleep 30
  done
  echo "mutants.sh: $spec started $(date '+%F %T'), load $(cut -d' ' -f1-3 /proc/loadavg)"
  start=$(date +%s)
  nice -n 15 cargo mutants -j 1 --profile mutants --no-shuffle "${shard[@]}" \
    -o "$out" "${args[@]}" >"$out/run.log" 2>&1
  rc=$?
  # cargo-mutants exits 2 when some mutant was missed, 3 on timeouts: not a script failure.
  case $rc in 0 | 2 | 3) ;; *) status=1; echo "mutants.sh: $spec failed (exit $rc), see $out/run.log" >&2 ;; esac
  echo "mutants.sh: $spec done in $(($(date +%s) - start)) s, load $(cut -d' ' -f1-3 /proc/loadavg): $(tail -1 "$out/run.log")"
done
summary | tee "$OUT/summary.txt"
exit $status
