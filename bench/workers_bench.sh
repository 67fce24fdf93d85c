#!/usr/bin/env bash
# Workers sharing one run in PostgreSQL (issue 16): users/s of examples/onboard.lua with 1, 2 and
# 4 `--worker` processes against one sandbox with LATENCY per request and a rate limit above what
# one worker reaches, printed as the ratio to one worker; and the same run in one process on the
# SQLite store, as the reference. Default policy. Starts its own throwaway PostgreSQL cluster
# (initdb + pg_ctl, Unix socket in a temporary directory, fsync off) and removes it after.
#
#   bench/workers_bench.sh                      ROWS=3000 CONCURRENCY=16 LATENCY=50ms RATE=5000
# env: SCIMRUN_BIN=./build-bench/scimrun  WORKERS="1 2 4"
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BIN=${SCIMRUN_BIN:-./build-bench/scimrun}
ROWS=${ROWS:-3000}
CONCURRENCY=${CONCURRENCY:-16}
LATENCY=${LATENCY:-50ms}
RATE=${RATE:-5000}
WORKERS=${WORKERS:-"1 2 4"}
[ -x "$BIN" ] || { echo "no scimrun at $BIN (build it, see bench/README.md)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/scimrun-wb.XXXXXX)
chmod 755 "$tmp"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$tmp"
SB_PID=
cleanup() {
  [ -n "$SB_PID" ] && kill "$SB_PID" 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
  if [ -n "$KEEP_LOGS" ]; then echo "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
KEEP_LOGS=${KEEP_LOGS:-}
as_pg "$pgbin/initdb" -D "$tmp/data" -A trust -U postgres --no-sync >/dev/null
port=$((20000 + RANDOM % 30000))
as_pg "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/pg.log" \
  -o "-k $tmp -c listen_addresses='' -p $port -c fsync=off -c max_connections=50" -w start >/dev/null
pgurl() { echo "postgres://postgres@/$1?host=$tmp&port=$port"; }

"$BIN" -l examples/data/generate.lua --rows "$ROWS" --out "$tmp/users.csv" >/dev/null
# one token for every sandbox this script starts (each reads $SCIM_TOKEN)
SCIM_TOKEN=bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
export SCIM_TOKEN

start_server() {
  start_sandbox "$tmp/server.out" "$tmp/server.out" --faults "latency:$LATENCY,ratelimit:$RATE/s" --seed 1 || exit 1
  ROOT=${BASE%/scim/v2}
  export SCIM_BASE_URL=$BASE
}
stop_server() { kill "$SB_PID"; wait "$SB_PID" 2>/dev/null || true; SB_PID=; }
users_at_server() {
  curl -fsS -H "Authorization: Bearer $SCIM_TOKEN" "$ROOT/_admin/stats" |
    /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["users"], sum(v for k, v in s["by_status"].items() if k.endswith(" 429")))'
}
now() { date +%s.%N; }
# CPU ticks of the whole machine, busy and all, from /proc/stat: the share busy during a run
# says whether two cores were the limit
cpu_ticks() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat; }
busy_pct() { awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" 'BEGIN { printf "%.0f%%", 100 * (c - a) / (d - b) }'; }
args="examples/onboard.lua --continue-on-error --param csv=$tmp/users.csv --param concurrency=$CONCURRENCY"

printf '%-22s %8s %8s %9s %8s %s\n' run users wall_s users/s ratio notes
# the reference: one process, the SQLite store
start_server
t0=$(now)
read -r busy0 all0 <<<"$(cpu_ticks)"
"$BIN" $args --state "$tmp/sqlite.db" >"$tmp/sqlite.log" 2>&1 || echo "  sqlite run exited $?"
t1=$(now)
read -r busy1 all1 <<<"$(cpu_ticks)"
read -r users _ <<<"$(users_at_server)"
stop_server
ref=$(awk -v n="$users" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
printf '%-22s %8s %8.2f %9s %8s %s\n' "sqlite, 1 process" "$users" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$ref" "-" "reference; CPU busy $(busy_pct "$busy0" "$all0" "$busy1" "$all1")"

one=
for n in $WORKERS; do
  start_server
  db="w$n"
  as_pg "$pgbin/createdb" -h "$tmp" -p "$port" -U postgres "$db"
  url=$(pgurl "$db")
  t0=$(now)
  read -r busy0 all0 <<<"$(cpu_ticks)"
  pids=()
  # the first worker records the run; the others join it (the join is locked: they may start at once)
  for i in $(seq "$n"); do
    "$BIN" $args --state "$url" --worker >"$tmp/worker-$n-$i.log" 2>&1 &
    pids+=($!)
  done

  rcs=""
  for p in "${pids[@]}"; do wait "$p" || rcs="$rcs $?"; done
  t1=$(now)
  read -r busy1 all1 <<<"$(cpu_ticks)"
  read -r users refused <<<"$(users_at_server)"
  stop_server
  rate=$(awk -v u="$users" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", u / (b - a) }')
  [ -z "$one" ] && one=$rate
  ratio=$(awk -v r="$rate" -v o="$one" 'BEGIN { printf "%.2fx", r / o }')
  notes="429s: $refused; CPU busy $(busy_pct "$busy0" "$all0" "$busy1" "$all1") of 2 cores"
  [ -n "$rcs" ] && notes="$notes; exit codes:$rcs"
  printf '%-22s %8s %8.2f %9s %8s %s\n' "postgres, $n worker(s)" "$users" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
    "$rate" "$ratio" "$notes"

done
echo
echo "ratio: users/s of N workers / users/s of 1 worker (goal: 2 workers >= 1.8x, 4 workers >= 3.2x)."
echo "Each run: a fresh sandbox with latency:$LATENCY and ratelimit:$RATE/s, $ROWS users, concurrency $CONCURRENCY per process,"
echo "the default policy, durability full. Two cores: the sandbox, PostgreSQL and every worker share them."
