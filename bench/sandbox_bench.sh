#!/usr/bin/env bash
# Raw throughput of the embedded SCIM sandbox (`scimrun sandbox`, standalone, no faults) under
# wrk, beside nginx serving a static answer in the same script, at 16 and 64 connections:
#   GET   /scim/v2/Users?filter=userName eq "..."  against a sandbox holding $USERS users
#   POST  /scim/v2/Users                           a new, unique userName on every request
#   PATCH /scim/v2/Groups/ID (add one member)      on a group holding all $USERS users: the
#                                                  request an onboarding run sends per user
# Prints requests/s of each and the ratio sandbox/nginx. A sandbox far above the rate an
# end-to-end run reaches means the client, not the sandbox, limits that run.
#   bench/sandbox_bench.sh            env: SCIMRUN_BIN, USERS=10000, SECONDS_PER_RUN=5
# Each PATCH measurement gets a fresh sandbox: when wrk stops it closes connections whose
# (slow) PATCH is still being answered, and a sandbox that dies of that (SIGPIPE) must not take
# the other measurements with it. A death is reported in the notes column.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
BIN=${SCIMRUN_BIN:-./build-bench/scimrun}
USERS=${USERS:-10000}
DUR=${SECONDS_PER_RUN:-5}
export SCIM_TOKEN=${SCIM_TOKEN:-bench-$RANDOM$RANDOM}
tmp=$(mktemp -d)
SB_PID=
sandbox_down() {
  if [ -n "$SB_PID" ]; then kill "$SB_PID" 2>/dev/null || true; wait "$SB_PID" 2>/dev/null || true; fi
  SB_PID=
}
trap 'sandbox_down; stop_nginx; rm -rf "$tmp"' EXIT

# Pre-fill: users bench.user.1 .. bench.user.N through scimrun's HTTP client at 64 tasks, then
# one group holding all of them (500 members per PATCH). Prints "failures creates/s group_id".
cat >"$tmp/fill.lua" <<'LUA'
local http, cjson = require "scimrun.http", require "cjson"
local base, n, ids_path, token = arg[1], tonumber(arg[2]), arg[3], os.getenv("SCIM_TOKEN")
local headers = { Authorization = "Bearer " .. token, ["Content-Type"] = "application/scim+json" }
local function call(method, path, body)
  local res = http.request { method = method, url = base .. path, headers = headers, body = cjson.encode(body) }
  if not res or res.status >= 300 then return nil end
  return res.body ~= "" and cjson.decode(res.body) or true -- a membership PATCH answers 204
end
local i, failed, ids = 0, 0, {}
local function worker()
  while i < n do
    i = i + 1
    local k, name = i, "bench.user." .. i
    local u = call("POST", "/Users", { schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" }, userName = name,
      name = { givenName = "Bench", familyName = "User " .. k }, displayName = "Bench User " .. k,
      emails = { { type = "work", value = name .. "@example.com", primary = true } }, active = true })
    if u then ids[k] = u.id else failed = failed + 1 end
  end
end
local t0, ws = scimrun.now(), {}
for k = 1, 64 do ws[k] = worker end
scimrun.all(ws)
local rate = n / (scimrun.now() - t0)
local g = call("POST", "/Groups", { schemas = { "urn:ietf:params:scim:schemas:core:2.0:Group" },
  displayName = "bench.group" })
if not g then failed = failed + 1 end
for first = 1, n, 500 do
  local values = {}
  for k = first, math.min(n, first + 499) do values[#values + 1] = { value = ids[k] } end
  if g and not call("PATCH", "/Groups/" .. g.id, { schemas = { "urn:ietf:params:scim:api:messages:2.0:PatchOp" },
    Operations = { { op = "add", path = "members", value = values } } }) then failed = failed + 1 end
end
local f = assert(io.open(ids_path, "w"))
for k = 1, n do f:write(ids[k] or "", "\n") end
f:close()
print(("%d %.0f %s"):format(failed, rate, g and g.id or "-"))
LUA

# sandbox_up: a fresh sandbox on a port the kernel picks (read back from its banner), filled,
# with the wrk scripts written for it. Sets SB_PID, BASE, FILL_RATE.
sandbox_up() {
  start_sandbox "$tmp/sandbox.out" "$tmp/sandbox.err" || exit 1
  local failed group_id path=${BASE#http://*/}
  read -r failed FILL_RATE group_id < <("$BIN" -l "$tmp/fill.lua" "$BASE" "$USERS" "$tmp/ids.txt")
  [ "$failed" = 0 ] || { echo "pre-fill: $failed requests failed" >&2; exit 1; }

  cat >"$tmp/filter.lua" <<LUA
-- GET by filter, cycling over the pre-filled userNames (each lookup matches exactly one user).
local n, i = $USERS, 0
function request()
  i = i % n + 1
  local f = ('userName eq "bench.user.%d"'):format(i):gsub('[^%w%.]', function(c)
    return ("%%%02X"):format(c:byte()) end)
  return wrk.format("GET", "/$path/Users?filter=" .. f)
end
LUA
  cat >"$tmp/create.lua" <<LUA
-- POST create with a userName never used before (a run prefix keeps reruns unique too).
local run, i = tostring(os.time()) .. tostring(math.random(1e6)), 0
wrk.headers["Content-Type"] = "application/scim+json"
function request()
  i = i + 1
  local name = ("wrk.%s.%d"):format(run, i)
  return wrk.format("POST", "/$path/Users", nil, ('{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],'
    .. '"userName":"%s","name":{"givenName":"Wrk","familyName":"User %d"},"displayName":"Wrk User %d",'
    .. '"emails":[{"type":"work","value":"%s@example.com","primary":true}],"active":true}'):format(name, i, i, name))
end
LUA
  cat >"$tmp/patch.lua" <<LUA
-- PATCH add-member on the group holding all $USERS users (a re-add: the group keeps its size).
local ids, i = {}, 0
for line in io.lines("$tmp/ids.txt") do ids[#ids + 1] = line end
wrk.headers["Content-Type"] = "application/scim+json"
function request()
  i = i % #ids + 1
  return wrk.format("PATCH", "/$path/Groups/$group_id", nil,
    '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],'
    .. '"Operations":[{"op":"add","path":"members","value":[{"value":"' .. ids[i] .. '"}]}]}')
end
LUA
}

# wrk_run URL CONNECTIONS [SCRIPT] -> "requests/s non_2xx_responses socket_errors"
wrk_run() {
  local out
  out=$(wrk -t1 -c"$2" -d"${DUR}s" --timeout 30s -H "Authorization: Bearer $SCIM_TOKEN" ${3:+-s "$3"} "$1" 2>&1)
  awk '/Requests\/sec/ { rps = $2 } /Non-2xx/ { bad = $NF }
       /Socket errors/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
       END { printf "%s %d %d\n", rps == "" ? 0 : rps, bad, err }' <<<"$out"
}

declare -A NGINX
# measure LABEL KIND CONNECTIONS: one wrk run against the current sandbox, one table row
measure() {
  local rps bad err notes=""
  read -r rps bad err < <(wrk_run "$BASE/Users" "$3" "$tmp/$2.lua")
  [ "$bad" != 0 ] && notes="$bad non-2xx; "
  [ "$err" != 0 ] && notes="$notes$err socket errors; "
  sleep 0.2
  kill -0 "$SB_PID" 2>/dev/null || { wait "$SB_PID" 2>/dev/null || notes="${notes}sandbox died (exit $?)"; SB_PID=; }
  printf "%-36s %6s %12s %12s %8s  %s\n" "$1" "$3" "$rps" "${NGINX[$3]}" \
    "$(awk -v a="$rps" -v b="${NGINX[$3]}" 'BEGIN { printf "%.4f", a / b }')" "$notes"
}

start_nginx
for c in 16 64; do read -r NGINX[$c] _ _ < <(wrk_run "$NGINX_URL" "$c"); done
sandbox_up
echo "sandbox pre-filled with $USERS users ($FILL_RATE creates/s through scimrun's client at 64 tasks)"
echo "and one group holding all of them; wrk -t1, ${DUR}s per row"
printf "%-36s %6s %12s %12s %8s  %s\n" request conns sandbox_rps nginx_rps ratio notes
for c in 16 64; do measure 'GET Users?filter=userName eq' filter "$c"; done
for c in 16 64; do measure 'POST Users (create)' create "$c"; done
sandbox_down
for c in 16 64; do
  sandbox_up
  measure "PATCH Group +1 member ($USERS members)" patch "$c"
  sandbox_down
done
