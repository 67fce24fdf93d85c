#!/usr/bin/env bash
# End-to-end onboarding: $ROWS users (examples/data/generate.lua) created and added to one group,
# by examples/onboard.lua (concurrency 64, bench/policy-bench.lua, durability full and normal)
# and by bench/python_onboard.py (sequential requests + tenacity: what teams run today),
# each against its own fresh standalone `scimrun sandbox` (same build, same seed), at 0% faults
# and at 10% mixed faults. Prints users/s, the ratio scimrun/python, what each run left behind
# (read back from the sandbox's /_admin/dump: users missing, duplicate userNames, memberships
# missing, rows the client gave up on) and the CPU seconds of client and sandbox, so it is
# visible which side limits a run.
#   bench/onboard_bench.sh        env: SCIMRUN_BIN, ROWS=10000, FAULTS=..., PY_FAULT_ROWS=500,
#                                      CONCURRENCY=64, PYTHON=/usr/bin/python3,
#                                      POLICY=bench/policy-bench.lua
# The sequential script waits out every retry delay in turn (about 0.15 s per user at 10%
# faults), so with faults it runs on the first PY_FAULT_ROWS rows only (users/s is a rate;
# PY_FAULT_ROWS=$ROWS runs them all).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SCIMRUN_BIN:-./build-bench/scimrun}
ROWS=${ROWS:-10000}
FAULTS=${FAULTS:-503:0.04,429:0.02@retry-after=1,reset:0.02,lost:0.02}
PY_FAULT_ROWS=${PY_FAULT_ROWS:-500}
POLICY=${POLICY:-bench/policy-bench.lua}
CONCURRENCY=${CONCURRENCY:-64}
PYTHON=${PYTHON:-/usr/bin/python3}
GROUP=Engineering
export SCIM_TOKEN=${SCIM_TOKEN:-bench-$RANDOM$RANDOM}
tmp=$(mktemp -d)
SB_PID=
stop_sandbox() {
  if [ -n "$SB_PID" ]; then kill "$SB_PID" 2>/dev/null || true; wait "$SB_PID" 2>/dev/null || true; fi
  SB_PID=
}
trap 'stop_sandbox; rm -rf "$tmp"' EXIT

"$BIN" -l examples/data/generate.lua --rows "$ROWS" --out "$tmp/users.csv" >/dev/null

# start_sandbox FAULTS -> sets SB_PID, BASE
start_sandbox() {
  "$BIN" sandbox --port 0 --quiet ${1:+--faults "$1"} --seed 1 >"$tmp/sandbox.out" 2>"$tmp/sandbox.err" &
  SB_PID=$!
  BASE=
  for _ in $(seq 100); do
    BASE=$(awk '/url:/ { print $2 }' "$tmp/sandbox.out" 2>/dev/null)
    [ -n "$BASE" ] && return 0
    sleep 0.05
  done
  echo "sandbox did not start: $(cat "$tmp/sandbox.err")" >&2
  exit 1
}

flabel() { if [ -n "$1" ]; then echo faults; else echo none; fi; }
cpu_of() { awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

# check LIMIT -> "missing duplicates memberships_missing" for the first LIMIT rows of the CSV
check() {
  curl -fsS -H "Authorization: Bearer $SCIM_TOKEN" "${BASE%/scim/v2}/_admin/dump" >"$tmp/dump.json"
  "$PYTHON" - "$tmp/users.csv" "$tmp/dump.json" "$1" "$GROUP" <<'PY'
import collections, csv, json, sys
path, dump_path, limit, group_name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(path, newline="", encoding="utf-8") as f:
    wanted = [row["userName"].lower() for _, row in zip(range(limit), csv.DictReader(f))]
dump = json.load(open(dump_path, encoding="utf-8"))
by_name = collections.defaultdict(list)
for u in dump["users"]:
    by_name[u["userName"].lower()].append(u["id"])
missing = sum(1 for n in wanted if n not in by_name)
duplicates = sum(len(ids) - 1 for ids in by_name.values() if len(ids) > 1)
members = set()
for g in dump["groups"]:
    if g["displayName"].lower() == group_name.lower():
        members.update(m["value"] for m in g.get("members") or [])
no_membership = sum(1 for n in wanted if n in by_name and not members.intersection(by_name[n]))
print(missing, duplicates, no_membership)
PY
}

results=()
# record LABEL FAULTS ROWS WALL CLIENT_CPU SANDBOX_CPU GAVE_UP
record() {
  local label=$1 faults=$2 rows=$3 wall=$4 ccpu=$5 scpu=$6 gave_up=$7 missing dup nomember
  read -r missing dup nomember < <(check "$rows")
  local ups
  ups=$(awk -v n="$rows" -v t="$wall" 'BEGIN { printf "%.1f", n / t }')
  results+=("$faults|$label|$ups")
  printf "%-35s %-6s %6s %8.1f %11s %7s %4s %6s %7s %7s %7s\n" "$label" "$faults" "$rows" "$wall" "$ups" \
    "$missing" "$dup" "$nomember" "$gave_up" "$ccpu" "$scpu"
}

# run_scimrun DURABILITY FAULTS
run_scimrun() {
  start_sandbox "$2"
  local s0 t0 t1 rc=0
  s0=$(cpu_of "$SB_PID")
  rm -f "$tmp"/state.db*
  t0=$(date +%s.%N)
  SCIM_BASE_URL=$BASE /usr/bin/time -f "%U %S" -o "$tmp/time" "$BIN" examples/onboard.lua \
    --param csv="$tmp/users.csv" --param group="$GROUP" --param concurrency="$CONCURRENCY" \
    --policy "$POLICY" --durability "$1" --continue-on-error --state "$tmp/state.db" \
    >"$tmp/run.out" 2>"$tmp/run.err" || rc=$?
  t1=$(date +%s.%N)
  local scpu ccpu failed
  scpu=$(awk -v a="$s0" -v b="$(cpu_of "$SB_PID")" 'BEGIN { printf "%.1f", b - a }')
  ccpu=$(awk '{ printf "%.1f", $1 + $2 }' "$tmp/time")
  failed=$(awk '/items/ { for (i = 1; i <= NF; i++) if ($i ~ /^failed/) print $(i - 1) }' "$tmp/run.out")
  record "scimrun c=$CONCURRENCY durability=$1" "$(flabel "$2")" "$ROWS" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$ccpu" "$scpu" "${failed:-?}$([ "$rc" = 0 ] || echo " rc=$rc")"
  if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then sed 's/^/    /' "$tmp/run.out" "$tmp/run.err" | tail -15 >&2; fi
  grep -E '^ *(requests|items)' "$tmp/run.out" | sed 's/^ */    scimrun: /' >"$tmp/detail"
  stop_sandbox
}

# run_python FAULTS ROWS
run_python() {
  start_sandbox "$1"
  local s0 t0 t1 rc=0
  s0=$(cpu_of "$SB_PID")
  t0=$(date +%s.%N)
  SCIM_BASE_URL=$BASE /usr/bin/time -f "%U %S" -o "$tmp/time" "$PYTHON" bench/python_onboard.py \
    --csv "$tmp/users.csv" --group "$GROUP" --limit "$2" >"$tmp/run.out" 2>"$tmp/run.err" || rc=$?
  t1=$(date +%s.%N)
  local scpu ccpu gave_up
  scpu=$(awk -v a="$s0" -v b="$(cpu_of "$SB_PID")" 'BEGIN { printf "%.1f", b - a }')
  ccpu=$(awk '{ printf "%.1f", $1 + $2 }' "$tmp/time")
  [ "$rc" = 0 ] || { echo "python script failed (rc=$rc):" >&2; tail -5 "$tmp/run.err" >&2; }
  gave_up=$(tr ' ' '\n' <"$tmp/run.out" | awk -F= '/^(unresolved_409|failed|membership_failed)=/ { s += $2 } END { print s + 0 }')
  record "python requests+tenacity" "$(flabel "$1")" "$2" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$ccpu" "$scpu" "$gave_up"
  sed 's/^/    python: /' "$tmp/run.out" >"$tmp/detail"
  stop_sandbox
}

echo "onboarding $ROWS users into group $GROUP; policy $POLICY; faults: $FAULTS (seed 1)"
printf "%-35s %-6s %6s %8s %11s %7s %4s %6s %7s %7s %7s\n" client faults users wall_s users_per_s \
  missing dup no_grp gave_up cpu_cli cpu_sbx
for faults in "" "$FAULTS"; do
  run_python "$faults" "$([ -n "$faults" ] && echo "$PY_FAULT_ROWS" || echo "$ROWS")"; cat "$tmp/detail"
  for d in full normal; do run_scimrun "$d" "$faults"; cat "$tmp/detail"; done
done

echo
echo "ratio users/s scimrun / python (goal >= 20):"
for f in none faults; do
  py=$(printf '%s\n' "${results[@]}" | awk -F'|' -v f="$f" '$1 == f && $2 ~ /^python/ { print $3 }')
  for d in full normal; do
    sr=$(printf '%s\n' "${results[@]}" | awk -F'|' -v f="$f" -v d="durability=$d" '$1 == f && index($2, d) { print $3 }')
    printf "  faults %-6s durability %-7s %8s / %-8s = %6.1fx\n" "$f" "$d" "$sr" "$py" \
      "$(awk -v a="$sr" -v b="$py" 'BEGIN { print a / b }')"
  done
done
echo "missing/dup/no_grp: users of the CSV absent from the sandbox, extra accounts per userName, users"
echo "present but not in the group; gave_up: rows the client reported as failed (scimrun: failed items"
echo "in the dead-letter queue; python: failed creates + unresolved 409s + failed PATCHes);"
echo "cpu_cli / cpu_sbx: CPU seconds of the client process and of the sandbox during the run."
