#!/usr/bin/env bash
# The group commit against a slow disk: onboards ROWS users (examples/onboard.lua, default
# policy, --durability full) into a fresh sandbox, with the disk as it is and with every fsync
# made SLOW_FSYNC_US longer (bench/slow_fsync.c, an LD_PRELOAD shim), PAIRS times each,
# alternating SCIMRUN_BIN with BASE_BIN (a build to compare with, e.g. an older commit's) so a
# drifting machine speed hits both alike. Prints wall and client CPU seconds per run, the means
# and the ratio BASE_BIN / SCIMRUN_BIN of the mean wall times (> 1: SCIMRUN_BIN is faster).
# Without BASE_BIN it prints SCIMRUN_BIN alone, fast disk against slow.
#
#   BASE_BIN=/tmp/old/build/scimrun bench/fsync_bench.sh
# env: SCIMRUN_BIN=./build-bench/scimrun BASE_BIN= ROWS=10000 PAIRS=3 SLOW_FSYNC_US=2000
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SCIMRUN_BIN:-./build-bench/scimrun}
BASE_BIN=${BASE_BIN:-}
ROWS=${ROWS:-10000}
PAIRS=${PAIRS:-3}
export SLOW_FSYNC_US=${SLOW_FSYNC_US:-2000}
export SCIM_TOKEN=${SCIM_TOKEN:-bench-$RANDOM$RANDOM}
tmp=$(mktemp -d)
SRV=
trap '[ -n "$SRV" ] && kill "$SRV" 2>/dev/null; rm -rf "$tmp"' EXIT
cc -shared -fPIC -O2 -o "$tmp/slow_fsync.so" bench/slow_fsync.c -ldl
"$BIN" -l examples/data/generate.lua --rows "$ROWS" --out "$tmp/users.csv" >/dev/null

# one_run BIN DISK: prints "wall cpu" of one onboarding run into a fresh sandbox
one_run() {
  local bin=$1 disk=$2 base="" pre=""
  "$bin" sandbox --port 0 --quiet --seed 1 >"$tmp/srv.out" 2>"$tmp/srv.err" &
  SRV=$!
  for _ in $(seq 100); do
    base=$(awk '/url:/ { print $2 }' "$tmp/srv.out" 2>/dev/null)
    [ -n "$base" ] && break
    sleep 0.05
  done
  [ "$disk" = slow ] && pre="$tmp/slow_fsync.so"
  rm -f "$tmp"/state.db*
  /usr/bin/time -f "%e %U %S" -o "$tmp/time" env LD_PRELOAD="$pre" SCIM_BASE_URL="$base" "$bin" \
    examples/onboard.lua --param csv="$tmp/users.csv" --state "$tmp/state.db" >"$tmp/run.out" 2>"$tmp/run.err" \
    || { echo "run failed: $(tail -3 "$tmp/run.err")" >&2; exit 1; }
  kill "$SRV"; wait "$SRV" 2>/dev/null || true; SRV=
  awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }' "$tmp/time"
}

printf "%-6s %-40s %8s %8s\n" disk binary wall_s cpu_s
for disk in fast slow; do
  for _ in $(seq "$PAIRS"); do
    for bin in ${BASE_BIN:+"$BASE_BIN"} "$BIN"; do
      read -r wall cpu < <(one_run "$bin" "$disk")
      printf "%-6s %-40s %8s %8s\n" "$disk" "$bin" "$wall" "$cpu" | tee -a "$tmp/rows"
    done
  done
done
echo "means (disk slow: every fsync $SLOW_FSYNC_US us longer):"
awk -v base="$BASE_BIN" -v bin="$BIN" '
  { k = $1 " " $2; w[k] += $3; c[k] += $4; n[k]++ }
  function mean(k) { return w[k] / n[k] }
  END {
    for (k in w) printf "  %-48s wall %6.2f s  cpu %6.2f s  (n=%d)\n", k, mean(k), c[k] / n[k], n[k]
    if (base == "") {
      printf "  %s: slow disk / fast disk wall = %.2fx\n", bin, mean("slow " bin) / mean("fast " bin)
    } else {
      printf "  fast disk: base / this wall = %.2fx\n", mean("fast " base) / mean("fast " bin)
      printf "  slow disk: base / this wall = %.2fx\n", mean("slow " base) / mean("slow " bin)
    }
  }' "$tmp/rows"
