#!/usr/bin/env bash
# CPU time per call of the sandbox's JSON and of SHA-256: the hand-written Lua copies scimrun
# had until issue 11 (taken from git history, commit $BEFORE) against what replaced them
# (lua-cjson under lua/scimrun/sandbox/json.lua, OpenSSL's SHA-256 as scimrun.sha256).
#   bench/libs_bench.sh            env: SCIMRUN_BIN, BEFORE=48633cf
# Prints one row per operation: microseconds per call, hand-written then library, and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SCIMRUN_BIN:-./build-bench/scimrun}
BEFORE=${BEFORE:-48633cf}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git show "$BEFORE:lua/scimrun/sandbox/json.lua" >"$tmp/json_old.lua"
git show "$BEFORE:lua/scimrun/_sha256.lua" >"$tmp/sha256_old.lua"

cat >"$tmp/bench.lua" <<'LUA'
local dir = arg[1]
local OLD, NEW = dofile(dir .. "/json_old.lua"), require "scimrun.sandbox.json"
local SHA_OLD, SHA_NEW = dofile(dir .. "/sha256_old.lua"), require "scimrun.sha256"

-- CPU seconds per call (os.clock: the machine may be shared), the best of 3 rounds after a
-- warm-up round that lets the JIT compile the code.
local function per_call(n, fn)
  local best = math.huge
  for round = 0, 3 do
    collectgarbage()
    local t0 = os.clock()
    for _ = 1, n do fn() end
    if round > 0 then best = math.min(best, (os.clock() - t0) / n) end
  end
  return best
end

local function user(j, i)
  return { schemas = j.array({ "urn:ietf:params:scim:schemas:core:2.0:User" }),
    id = ("%08x-0000-4000-8000-%012x"):format(i, i), userName = "bench.user." .. i,
    name = { givenName = "Bench", familyName = "User " .. i }, displayName = "Bench User " .. i,
    emails = j.array({ { type = "work", value = "bench.user." .. i .. "@example.com", primary = true } }),
    groups = j.array({}), active = true,
    meta = { resourceType = "User", created = "2024-05-01T10:00:00Z", lastModified = "2024-05-01T10:00:00Z",
             location = "http://127.0.0.1:8080/scim/v2/Users/" .. i, version = 'W/"1"' } }
end

local function documents(j)
  local d = { user = user(j, 7) }
  local page, users, members = j.array({}), j.array({}), j.array({})
  for i = 1, 100 do page[i] = user(j, i) end
  for i = 1, 10000 do
    users[i] = user(j, i)
    members[i] = { value = users[i].id, display = users[i].userName }
  end
  d.list = { schemas = j.array({ "urn:ietf:params:scim:api:messages:2.0:ListResponse" }), totalResults = 100,
             startIndex = 1, itemsPerPage = 100, Resources = page }
  d.snapshot = { serial = 10001, Users = users, Groups = j.array({ { id = "g1", displayName = "g",
    schemas = j.array({ "urn:ietf:params:scim:schemas:core:2.0:Group" }), members = members } }) }
  return d
end
local old_docs, new_docs = documents(OLD), documents(NEW)
local snapshot_text = NEW.encode(new_docs.snapshot)

local PATCH = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add",'
  .. '"path":"members","value":[{"value":"0000001a-0000-4000-8000-00000000001a"}]}]}'
local CREATE = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"wrk.1.1","name":'
  .. '{"givenName":"Wrk","familyName":"User 1"},"displayName":"Wrk User 1","emails":[{"type":"work",'
  .. '"value":"wrk.1.1@example.com","primary":true}],"active":true}'
local MIXED = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","emails":[],"name":{}}'
local WORST = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x [] y","emails":[],"name":{}}'
local CHUNK = ("0123456789abcdef"):rep(4096) -- 64 KiB
local function hash_10mib(S)
  local h = S.new()
  for _ = 1, 160 do h:update(CHUNK) end
  return h:hex()
end
assert(hash_10mib(SHA_OLD) == hash_10mib(SHA_NEW))
local POLICY = ("x"):rep(2000)

local rows = {
  { "decode PATCH add-member body (" .. #PATCH .. " B)", 20000,
    function() OLD.decode(PATCH) end, function() NEW.decode(PATCH) end },
  { "decode POST /Users body (" .. #CREATE .. " B)", 20000,
    function() OLD.decode(CREATE) end, function() NEW.decode(CREATE) end },
  { "decode body holding [] and {}", 20000, function() OLD.decode(MIXED) end, function() NEW.decode(MIXED) end },
  { "  same, and \"[]\" inside a string", 20000, function() OLD.decode(WORST) end, function() NEW.decode(WORST) end },
  { "encode one User (" .. #NEW.encode(new_docs.user) .. " B)", 20000,
    function() OLD.encode(old_docs.user) end, function() NEW.encode(new_docs.user) end },
  { "encode ListResponse of 100 Users", 300,
    function() OLD.encode(old_docs.list) end, function() NEW.encode(new_docs.list) end },
  { ("encode journal snapshot, 10k users (%.1f MB)"):format(#snapshot_text / 1e6), 3,
    function() OLD.encode(old_docs.snapshot) end, function() NEW.encode(new_docs.snapshot) end },
  { "decode journal snapshot, 10k users", 3,
    function() OLD.decode(snapshot_text) end, function() NEW.decode(snapshot_text) end },
  { "sha256 of 10 MiB in 64 KiB chunks", 3, function() hash_10mib(SHA_OLD) end, function() hash_10mib(SHA_NEW) end },
  { "sha256.hex of 2 kB (a policy snapshot)", 3000,
    function() SHA_OLD.hex(POLICY) end, function() SHA_NEW.hex(POLICY) end },
}
print(("%-46s %14s %14s %9s"):format("operation (CPU time per call)", "hand-written", "library", "speed-up"))
for _, r in ipairs(rows) do
  local a, b = per_call(r[2], r[3]), per_call(r[2], r[4])
  print(("%-46s %11.1f us %11.1f us %8.1fx"):format(r[1], a * 1e6, b * 1e6, a / b))
end
LUA
"$BIN" -l "$tmp/bench.lua" "$tmp"
