#!/usr/bin/env bash
# Coverage-guided fuzzing of the switch's untrusted-input paths (libFuzzer through cargo fuzz).
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default 20 s, every target)
#   RUNS=10000000 bench/fuzz.sh 0 tunnel_rx              (a number of executions instead)
#   SANITIZER=none bench/fuzz.sh 600 worker_round        (no AddressSanitizer: several times
#                                                          faster, for long runs; safe Rust
#                                                          needs no ASAN to find a panic)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Targets are built
# as cargo fuzz does by default: optimized, with debug assertions and overflow checks, and
# AddressSanitizer. Each target starts from its committed corpus (switch/fuzz/corpus/TARGET,
# seeded by `cargo test -p switch --test fuzz_corpus -- --ignored write_seeds`) and adds what
# it finds there, so a long run leaves a better corpus to commit. A crash leaves its input in
# switch/fuzz/artifacts/TARGET/ and makes the script exit non-zero.
# Prints one line per target: executions, executions per second, coverage (edges), features,
# corpus size, crashes.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(worker_round tunnel_rx tunnel_tx gro decap control_request state_file ipam_store nat_tcp docker_request cni_input etcd_json)
fuzz=(cargo +nightly fuzz)
"${fuzz[@]}" --version >/dev/null 2>&1 || { echo "fuzz.sh: needs cargo-fuzz and a nightly toolchain (cargo install cargo-fuzz)" >&2; exit 2; }
# Seeds: only writes the seed-NN files, never removes what fuzzing found.
cargo test -q --release -p switch --test fuzz_corpus -- --ignored write_seeds >/dev/null
san=(--sanitizer "${SANITIZER:-address}")
(cd switch && "${fuzz[@]}" build "${san[@]}") || exit 2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
printf '%-14s %12s %9s %8s %8s %7s %8s\n' target execs exec/s cov ft corpus crashes
for t in "${targets[@]}"; do
  mkdir -p "switch/fuzz/corpus/$t"
  limit=(-max_total_time="$secs")
  [ -n "${RUNS:-}" ] && limit=(-runs="$RUNS")
  (cd switch && "${fuzz[@]}" run "${san[@]}" "$t" "fuzz/corpus/$t" -- "${limit[@]}" \
      -print_final_stats=1 -max_len=70000 -timeout=10 -rss_limit_mb=4096) >"$out/$t.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$')
  last=$(grep -E '^#[0-9]+' "$out/$t.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(ls "switch/fuzz/corpus/$t" | wc -l)
  crashes=0
  if [ $rc -ne 0 ]; then
    crashes=1
    status=1
    echo "--- $t failed (exit $rc); its log:" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|artifact' "$out/$t.log" >&2 || tail -20 "$out/$t.log" >&2
  fi
  printf '%-14s %12s %9s %8s %8s %7s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$corp" "$crashes"
done
exit $status
