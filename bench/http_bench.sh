#!/usr/bin/env bash
# HTTP client throughput: 20,000 GETs against one local nginx at concurrency 1, 16 and 64,
# through scimrun and through wrk in the same script. Prints requests/s of each, the ratio
# scimrun/wrk (goal: >= 0.7 at concurrency 64) and scimrun's user CPU time per request.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BIN=${SCIMRUN_BIN:-./build/scimrun}
N=${N:-20000}
start_nginx
trap stop_nginx EXIT
printf "%-12s %12s %12s %8s %16s\n" concurrency scimrun_rps wrk_rps ratio cpu_us_per_req
for c in 1 16 64; do
  read -r rps cpu errs < <("$BIN" -l bench/http_client.lua "$NGINX_URL" "$N" "$c")
  wrk=$(wrk_rps "$NGINX_URL" "$c" 3)
  ratio=$(awk -v a="$rps" -v b="$wrk" 'BEGIN { printf "%.2f", a / b }')
  printf "%-12s %12s %12s %8s %16s%s\n" "$c" "$rps" "$wrk" "$ratio" "$cpu" \
    "$([ "$errs" != 0 ] && echo "  ($errs errors)")"
done
