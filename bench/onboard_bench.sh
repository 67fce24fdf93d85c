#!/usr/bin/env bash
# End-to-end onboarding: users (examples/data/generate.lua) created and added to one group by
# examples/onboard.lua with the DEFAULT policy (no --policy; the workflow's concurrency, 256,
# unless CONCURRENCY is set) and by bench/python_onboard.py (sequential requests + tenacity,
# 100 members per PATCH: what a careful team runs today), each against its own fresh server,
# in several scenarios. Prints users/s and the ratio scimrun/python per scenario, the requests
# each client sent as the server counted them (all, successful per second, share answered 429,
# membership PATCHes), what each run left behind (read back from the server's /_admin/dump:
# users missing, duplicate userNames, memberships missing, rows the client gave up on) and the
# CPU seconds of client and server, so it is visible which side limits a run.
#
#   bench/onboard_bench.sh                  TARGET=sandbox: a fresh `scimrun sandbox --seed 1`
#   TARGET=scimmy bench/onboard_bench.sh    spec/interop/server.js (scimmy, an independent npm
#                                           SCIM server; needs `npm ci --prefix spec/interop`)
#
# Scenarios (SCENARIOS, space-separated; default "none mixed ratelimit 429 patchcost" on the
# sandbox, "none 429" on scimmy):
#   none       no faults                                   scimrun ROWS, python ROWS rows
#   mixed      FAULTS (10% mixed, sandbox only)            scimrun ROWS, python PY_FAULT_ROWS
#   ratelimit  ratelimit:RATE/s (sandbox only); prints utilization = successful requests/s
#              / RATE                                      both RL_ROWS rows
#   429        R429 (random 429s, Retry-After: 1)          scimrun ROWS, python PY_FAULT_ROWS
#   patchcost  patchcost:PATCHCOST (sandbox only): a group PATCH costs PATCHCOST per member,
#              the PATCHes of a group served one at a time, as on real servers  both PC_ROWS
# env: SCIMRUN_BIN=./build-bench/scimrun  PYTHON=/usr/bin/python3  TARGET=sandbox|scimmy
#      ROWS=10000 (scimmy: 1000)  PY_FAULT_ROWS=500  RL_ROWS=600  RATE=30  PC_ROWS=2000
#      FAULTS=503:0.04,429:0.02@retry-after=1,reset:0.02,lost:0.02
#      R429=429:0.03@retry-after=1  PATCHCOST=50us  PATCHCOST_ALL= (1: add patchcost:PATCHCOST
#      to every sandbox scenario, a "real-server-like" run)  CONCURRENCY= (workflow default 256)
#      DURABILITY=full (or "full normal")  POLICY= (a tuned policy: one more scimrun row per
#      scenario, labelled with it, e.g. POLICY=bench/policy-bench.lua)  RUN_TIMEOUT=1800 (s)
# The sequential script waits out every retry delay in turn, so with faults it runs the first
# PY_FAULT_ROWS rows only (users/s is a rate; PY_FAULT_ROWS=$ROWS runs them all).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SCIMRUN_BIN:-./build-bench/scimrun}
TARGET=${TARGET:-sandbox}
case $TARGET in
  sandbox) ROWS=${ROWS:-10000}; SCENARIOS=${SCENARIOS:-none mixed ratelimit 429 patchcost} ;;
  scimmy) ROWS=${ROWS:-1000}; SCENARIOS=${SCENARIOS:-none 429} ;;
  *) echo "TARGET must be sandbox or scimmy, not '$TARGET'" >&2; exit 2 ;;
esac
FAULTS=${FAULTS:-503:0.04,429:0.02@retry-after=1,reset:0.02,lost:0.02}
R429=${R429:-429:0.03@retry-after=1}
PY_FAULT_ROWS=${PY_FAULT_ROWS:-500}
RL_ROWS=${RL_ROWS:-600}
RATE=${RATE:-30}
PC_ROWS=${PC_ROWS:-2000}
PATCHCOST=${PATCHCOST:-50us}
PATCHCOST_ALL=${PATCHCOST_ALL:-}
CONCURRENCY=${CONCURRENCY:-}
DURABILITY=${DURABILITY:-full}
POLICY=${POLICY:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
PYTHON=${PYTHON:-/usr/bin/python3}
GROUP=Engineering
export SCIM_TOKEN=${SCIM_TOKEN:-bench-$RANDOM$RANDOM}
tmp=$(mktemp -d)
SRV_PID=
stop_server() {
  if [ -n "$SRV_PID" ]; then kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; fi
  SRV_PID=
}
trap 'stop_server; rm -rf "$tmp"' EXIT

if [ "$TARGET" = scimmy ] && [ ! -f spec/interop/node_modules/scimmy-routers/package.json ]; then
  echo "TARGET=scimmy needs node and the interop server's packages: npm ci --prefix spec/interop" >&2
  exit 2
fi

# scenario_faults NAME -> the fault spec of a scenario; scenario_rows NAME -> "SCIMRUN_ROWS PYTHON_ROWS"
scenario_faults() {
  local f
  case $1 in
    none) f= ;;
    mixed) f=$FAULTS ;;
    ratelimit) f="ratelimit:$RATE/s" ;;
    429) f=$R429 ;;
    patchcost) f="patchcost:$PATCHCOST" ;;
    *) echo "unknown scenario '$1' (none mixed ratelimit 429 patchcost)" >&2; exit 2 ;;
  esac
  if [ "$TARGET" = sandbox ] && [ -n "$PATCHCOST_ALL" ] && [ "$1" != patchcost ]; then
    f="${f:+$f,}patchcost:$PATCHCOST"
  fi
  echo "$f"
}
scenario_rows() {
  case $1 in
    none) echo "$ROWS $ROWS" ;;
    mixed | 429) echo "$ROWS $PY_FAULT_ROWS" ;;
    ratelimit) echo "$RL_ROWS $RL_ROWS" ;;
    patchcost) echo "$PC_ROWS $PC_ROWS" ;;
  esac
}
for s in $SCENARIOS; do
  scenario_faults "$s" >/dev/null
  if [ "$TARGET" = scimmy ] && [ "$s" != none ] && [ "$s" != 429 ]; then
    echo "scenario '$s' needs the sandbox's faults; against scimmy: none, 429" >&2
    exit 2
  fi
done

# csv_of N -> path of a CSV of N generated users (made once per N)
csv_of() {
  [ -f "$tmp/users-$1.csv" ] || "$BIN" -l examples/data/generate.lua --rows "$1" --out "$tmp/users-$1.csv" >/dev/null
  echo "$tmp/users-$1.csv"
}

# start_server FAULTS -> sets SRV_PID, BASE (and ROOT, the server without the SCIM base path)
start_server() {
  rm -f "$tmp/port" "$tmp/server.out"
  if [ "$TARGET" = sandbox ]; then
    "$BIN" sandbox --port 0 --quiet ${1:+--faults "$1"} --seed 1 >"$tmp/server.out" 2>"$tmp/server.err" &
  else
    node spec/interop/server.js --port 0 --port-file "$tmp/port" ${1:+--faults "$1"} --seed 1 \
      >"$tmp/server.out" 2>"$tmp/server.err" &
  fi
  SRV_PID=$!
  BASE=
  for _ in $(seq 200); do
    if [ "$TARGET" = sandbox ]; then
      BASE=$(awk '/url:/ { print $2 }' "$tmp/server.out" 2>/dev/null)
    elif [ -s "$tmp/port" ]; then
      BASE="http://127.0.0.1:$(cat "$tmp/port")/scim/v2"
    fi
    if [ -n "$BASE" ]; then ROOT=${BASE%/scim/v2}; return 0; fi
    sleep 0.05
  done
  echo "$TARGET did not start: $(cat "$tmp/server.err")" >&2
  exit 1
}

cpu_of() { awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }

# check LIMIT CSV -> "missing dup no_grp requests ok n429 patches patchcost_s" from the server's
# dump and request counts: the first LIMIT rows of CSV, all requests the server answered.
check() {
  curl -fsS -H "Authorization: Bearer $SCIM_TOKEN" "$ROOT/_admin/dump" >"$tmp/dump.json"
  if [ "$TARGET" = sandbox ]; then
    curl -fsS -H "Authorization: Bearer $SCIM_TOKEN" "$ROOT/_admin/stats" >"$tmp/stats.json"
  else
    echo null >"$tmp/stats.json"
  fi
  "$PYTHON" - "$2" "$tmp/dump.json" "$tmp/stats.json" "$1" "$GROUP" <<'PY'
import collections, csv, json, sys
path, dump_path, stats_path, limit, group_name = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
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
stats = json.load(open(stats_path, encoding="utf-8"))
if stats:  # the sandbox: by_status {"METHOD OUTCOME": n}, by_route {"METHOD ROUTE": n}
    outcomes = collections.Counter()
    for key, n in stats["by_status"].items():
        outcomes[key.split(" ", 1)[1]] += n
    requests = stats["requests"]
    ok = sum(n for o, n in outcomes.items() if o[:1] == "2" and not o.endswith("lost"))
    n429 = outcomes.get("429", 0)
    patches = stats["by_route"].get("PATCH /Groups/{id}", 0)
    patchcost = "%.1f" % stats.get("patchcost_s", 0)
else:  # scimmy: stats {requests {"METHOD /Kind": n}, statuses {"STATUS": n}}
    st = dump["stats"]
    requests = sum(st["statuses"].values())
    ok = sum(n for s, n in st["statuses"].items() if s[:1] == "2")
    n429 = st["statuses"].get("429", 0)
    patches = st["requests"].get("PATCH /Groups", 0)
    patchcost = "-"
print(missing, duplicates, no_membership, requests, ok, n429, patches, patchcost)
PY
}

results=()
# record SCENARIO LABEL ROWS WALL CLIENT_CPU SERVER_CPU GAVE_UP CSV
record() {
  local scen=$1 label=$2 rows=$3 wall=$4 ccpu=$5 scpu=$6 gave_up=$7 csvf=$8
  local missing dup nomember requests ok n429 patches pcost ups okps pct util
  read -r missing dup nomember requests ok n429 patches pcost < <(check "$rows" "$csvf")
  # users/s counts the users onboarded (present and in the group), so a run that failed early
  # does not look fast
  ups=$(awk -v n="$rows" -v m="$missing" -v g="$nomember" -v t="$wall" 'BEGIN { printf "%.1f", (n - m - g) / t }')
  okps=$(awk -v n="$ok" -v t="$wall" 'BEGIN { printf "%.1f", n / t }')
  pct=$(awk -v a="$n429" -v n="$requests" 'BEGIN { printf "%.1f", n ? 100 * a / n : 0 }')
  util=-
  [ "$scen" = ratelimit ] && util=$(awk -v r="$okps" -v l="$RATE" 'BEGIN { printf "%.2f", r / l }')
  results+=("$scen|$label|$ups|$util|$patches|$rows|$gave_up")
  printf "%-40s %-9s %6s %7.1f %8s %6s %7s %5s %5s %7s %4s %3s %6s %7s %7s %7s\n" "$label" "$scen" "$rows" "$wall" \
    "$ups" "$requests" "$okps" "$pct" "$util" "$patches" "$missing" "$dup" "$nomember" "$gave_up" "$ccpu" "$scpu"
  case $pcost in -|0.0) ;; *) echo "    sandbox: patchcost charged ${pcost} s in all on $patches group PATCHes" ;; esac
}

# run_scimrun SCENARIO FAULTS ROWS DURABILITY [POLICY]
run_scimrun() {
  local scen=$1 faults=$2 rows=$3 dur=$4 policy=${5:-} csvf label
  csvf=$(csv_of "$rows")
  if [ -n "$policy" ]; then label="scimrun policy=$(basename "$policy" .lua)"; else label="scimrun default"; fi
  label="$label c=${CONCURRENCY:-256} $dur"
  start_server "$faults"
  local s0 t0 t1 rc=0
  s0=$(cpu_of "$SRV_PID")
  rm -f "$tmp"/state.db*
  t0=$(date +%s.%N)
  SCIM_BASE_URL=$BASE /usr/bin/time -f "%U %S" -o "$tmp/time" timeout "$RUN_TIMEOUT" "$BIN" examples/onboard.lua \
    --param csv="$csvf" --param group="$GROUP" ${CONCURRENCY:+--param concurrency="$CONCURRENCY"} \
    ${policy:+--policy "$policy"} --durability "$dur" --continue-on-error --state "$tmp/state.db" \
    >"$tmp/run.out" 2>"$tmp/run.err" || rc=$?
  t1=$(date +%s.%N)
  local scpu ccpu failed
  scpu=$(awk -v a="$s0" -v b="$(cpu_of "$SRV_PID")" 'BEGIN { printf "%.1f", b - a }')
  ccpu=$(awk 'END { printf "%.1f", $1 + $2 }' "$tmp/time")
  failed=$(awk '/^ *items/ { for (i = 1; i <= NF; i++) if ($i ~ /^failed/) print $(i - 1) }' "$tmp/run.out")
  record "$scen" "$label" "$rows" "$(elapsed "$t0" "$t1")" "$ccpu" "$scpu" \
    "${failed:-?}$([ "$rc" = 0 ] || echo " rc=$rc")" "$csvf"
  if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then sed 's/^/    /' "$tmp/run.out" "$tmp/run.err" | tail -8; fi
  grep -E '^ *(requests|items)' "$tmp/run.out" | sed 's/^ */    scimrun: /' || true
  stop_server
}

# run_python SCENARIO FAULTS ROWS CSV_ROWS
run_python() {
  local scen=$1 faults=$2 rows=$3 csvf
  csvf=$(csv_of "$4")
  start_server "$faults"
  local s0 t0 t1 rc=0
  s0=$(cpu_of "$SRV_PID")
  t0=$(date +%s.%N)
  SCIM_BASE_URL=$BASE /usr/bin/time -f "%U %S" -o "$tmp/time" timeout "$RUN_TIMEOUT" "$PYTHON" bench/python_onboard.py \
    --csv "$csvf" --group "$GROUP" --limit "$rows" >"$tmp/run.out" 2>"$tmp/run.err" || rc=$?
  t1=$(date +%s.%N)
  local scpu ccpu gave_up
  scpu=$(awk -v a="$s0" -v b="$(cpu_of "$SRV_PID")" 'BEGIN { printf "%.1f", b - a }')
  ccpu=$(awk 'END { printf "%.1f", $1 + $2 }' "$tmp/time")
  gave_up=$(tr ' ' '\n' <"$tmp/run.out" | awk -F= '/^(unresolved_409|failed|membership_failed)=/ { s += $2 } END { print s + 0 }')
  record "$scen" "python requests+tenacity" "$rows" "$(elapsed "$t0" "$t1")" "$ccpu" "$scpu" \
    "$gave_up$([ "$rc" = 0 ] || echo " rc=$rc")" "$csvf"
  [ "$rc" = 0 ] || { echo "    python script failed (rc=$rc):"; tail -5 "$tmp/run.err" | sed 's/^/    /'; }
  sed 's/^/    python: /' "$tmp/run.out"
  stop_server
}

echo "onboard_bench: target $TARGET; scimrun policy default${POLICY:+ (and $POLICY)}, concurrency ${CONCURRENCY:-256 (workflow default)}, durability $DURABILITY; seed 1"
for s in $SCENARIOS; do
  read -r srows prows < <(scenario_rows "$s")
  f=$(scenario_faults "$s")
  printf "  %-9s faults %-50s scimrun %s rows, python %s rows\n" "$s" "${f:-none}" "$srows" "$prows"
done
printf "%-40s %-9s %6s %7s %8s %6s %7s %5s %5s %7s %4s %3s %6s %7s %7s %7s\n" client scenario users wall_s \
  users/s reqs ok/s 429% util patches miss dup no_grp gave_up cpu_cli cpu_srv
for s in $SCENARIOS; do
  read -r srows prows < <(scenario_rows "$s")
  f=$(scenario_faults "$s")
  run_python "$s" "$f" "$prows" "$srows"
  for d in $DURABILITY; do run_scimrun "$s" "$f" "$srows" "$d"; done
  if [ -n "$POLICY" ]; then for d in $DURABILITY; do run_scimrun "$s" "$f" "$srows" "$d" "$POLICY"; done; fi
done

echo
echo "ratio users/s scimrun / python, per scenario (goals of issue 10, default policy:"
echo "sandbox none >= 4, mixed >= 20, ratelimit utilization >= 0.95, scimmy none >= 1; >= 1 everywhere):"
for s in $SCENARIOS; do
  py=$(printf '%s\n' "${results[@]}" | awk -F'|' -v s="$s" '$1 == s && $2 ~ /^python/ { print $3 }')
  printf '%s\n' "${results[@]}" | awk -F'|' -v s="$s" '$1 == s && $2 ~ /^scimrun/' |
    while IFS='|' read -r _ label ups util patches rows gave_up; do
      printf "  %-9s %-40s %8s / %-8s = %6.2fx" "$s" "$label" "$ups" "$py" "$(awk -v a="$ups" -v b="$py" 'BEGIN { print b ? a / b : 0 }')"
      [ "$util" != - ] && printf "   utilization %s" "$util"
      printf "   membership PATCHes %s (N/8+1 = %d)" "$patches" "$((rows / 8 + 1))"
      case $gave_up in *rc=*) printf "   (scimrun %s)" "${gave_up#* }" ;; esac
      echo
    done
done
echo "users/s: users present and in the group at the end, per second of the client's wall time;"
echo "reqs: requests the server answered (retries included); ok/s: those answered 2xx per second of the"
echo "client's wall time; 429%: share answered 429; util: ok/s / RATE (ratelimit scenario; the sandbox's"
echo "bucket starts full, RATE requests of burst); patches: PATCH requests on /Groups/{id} (retries included);"
echo "miss/dup/no_grp: users of the CSV absent from the server, extra accounts per userName, users present"
echo "but not in the group; gave_up: rows the client reported as failed (scimrun: failed items in the"
echo "dead-letter queue, rc = its exit code when not 0; python: failed creates + unresolved 409s + users of"
echo "failed membership PATCHes); cpu_cli / cpu_srv: CPU seconds of the client process and of the server."
