#!/usr/bin/env bash
# Durable-step throughput and resume cost:
#  1. steps/s committed for N no-op steps at concurrency 64, durability full and normal,
#     against a plain one-transaction-per-row SQLite loop in the same script (ratio);
#  2. time to resume a 100,000-step run that is 99% complete (goal < 1 s);
#  3. peak RSS of wf:each over 1,000,000 items (goal < 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SCIMRUN_BIN:-./build/scimrun}
N=${N:-100000}
ROWS=${ROWS:-3000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }

printf "%-10s %14s %18s %8s\n" durability steps_per_s one_txn_rows_per_s ratio
for d in full normal; do
  t0=$(now)
  "$BIN" bench/noop_steps.lua --param n="$N" --durability "$d" --state "$tmp/$d.db" >/dev/null 2>&1
  t1=$(now)
  sps=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
  rps=$("$BIN" -l bench/sqlite_rows.lua "$tmp/rows-$d.db" "$ROWS" "$d")
  printf "%-10s %14s %18s %8.1f\n" "$d" "$sps" "$rps" "$(awk -v a="$sps" -v b="$rps" 'BEGIN { print a / b }')"
done

# A run stopped at 99%: items from 99,001 on fail, then --resume --retry-failed finishes it.
FAIL_FROM=$((N * 99 / 100 + 1)) "$BIN" bench/noop_steps.lua --param n="$N" --durability normal \
  --state "$tmp/resume.db" >/dev/null 2>&1 || true
t0=$(now)
"$BIN" bench/noop_steps.lua --resume --retry-failed --durability normal --state "$tmp/resume.db" >/dev/null 2>&1
t1=$(now)
printf "resume of a %d-step run at 99%%: %.3f s (goal < 1 s)\n" "$N" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"

rss=$("$BIN" bench/noop_steps.lua --param n=1000000 --param steps=false --state "$tmp/rss.db" 2>&1 >/dev/null \
  | awk '/peak_rss_kib/ { print $2 }')
printf "peak RSS of wf:each over 1,000,000 items: %.1f MiB (goal < 64 MiB)\n" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
rss=$("$BIN" bench/noop_steps.lua --param n=1000000 --durability normal --state "$tmp/rss-steps.db" 2>&1 >/dev/null \
  | awk '/peak_rss_kib/ { print $2 }')
printf "peak RSS of wf:each over 1,000,000 items with one durable step each: %.1f MiB\n" \
  "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')"
