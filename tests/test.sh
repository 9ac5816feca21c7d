#!/usr/bin/env bash
# Runs `cargo test ARGS...` (default: --workspace --release) and lists at the end every test
# that skipped because a precondition was missing (root, a kernel feature, a tool), grouped by
# reason. Skips are recorded by switch::testing in $CARGO_TARGET_DIR/vswitch-skips.txt (cargo
# hides a passing test's output, so this is where a developer sees them). Under CI=true or
# VSWITCH_TESTS_REQUIRE_ALL=1 nothing skips: a missing precondition fails its test.
# Exit status: cargo's.
set -uo pipefail
cd "$(dirname "$0")/.."
skips="${VSWITCH_SKIPS_FILE:-${CARGO_TARGET_DIR:-target}/vswitch-skips.txt}"
mkdir -p "$(dirname "$skips")"
: >"$skips"
[ $# -gt 0 ] || set -- --workspace --release
cargo test "$@"
rc=$?
if [ -s "$skips" ]; then
  n=$(sort -u "$skips" | cut -f1 | sort -u | wc -l)
  echo
  echo "=== $n test(s) skipped a precondition (run with VSWITCH_TESTS_REQUIRE_ALL=1 to fail instead):"
  sort -u "$skips" | awk -F'\t' '{c[$2]++; t[$2]=t[$2] "\n    " $1} END {for (r in c) printf "  %d skipped: %s%s\n", c[r], r, t[r]}'
else
  echo
  echo "=== no test skipped a precondition"
fi
exit $rc
