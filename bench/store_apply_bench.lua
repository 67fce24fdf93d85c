-- The state file's share of an onboarding: the group commit's writes as examples/onboard.lua
-- makes them for one user (two steps started, then completed with their results; two audit
-- rows: the create with its attribute changes, the membership), PER users per transaction,
-- durability normal (no fsync: the CPU of SQLite alone). Prints CPU microseconds per user with
-- the audit rows and without them (the comparator, same process), for 7 users per transaction
-- (about what a 10,000-user run at concurrency 64 gathers per loop turn) and for 30.
--
--   ./build-bench/scimrun -l bench/store_apply_bench.lua        N=10000 users per case
local store = require "scimrun.store"

local N = tonumber(os.getenv("N") or 10000)
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p '" .. dir .. "'")

local CHANGES = '[{"after":true,"attribute":"active","before":null},{"after":"Patrick OBrien",'
  .. '"attribute":"displayName","before":null},{"after":[{"value":"patrick.obrien@example.com",'
  .. '"type":"work","primary":true}],"attribute":"emails","before":null},{"after":"E100001",'
  .. '"attribute":"externalId","before":null},{"after":{"givenName":"Patrick","familyName":"OBrien"},'
  .. '"attribute":"name","before":null},{"after":"Account Executive","attribute":"title","before":null}]'

local function uuid()
  return ("%08x-%04x-%04x-%04x-%012x"):format(math.random(0, 2 ^ 31), math.random(0, 65535),
    math.random(0, 65535), math.random(0, 65535), math.random(0, 2 ^ 40))
end

-- CPU microseconds per user of N users written PER to a transaction.
local function case(with_audit, per)
  local path = ("%s/%s-%d.db"):format(dir, with_audit and "audit" or "steps", per)
  local db = assert(store.open(path, { durability = "normal" }))
  assert(db:run_create { id = "r", workflow_name = "onboard", workflow_path = "/onboard.lua", workflow_hash = "h" })
  math.randomseed(1)
  local t0, u = os.clock(), 0
  while u < N do
    local starts, ends = {}, {}
    for _ = 1, per do
      u = u + 1
      local name, id = ("user%d.x%d"):format(math.random(1e6), u), uuid() -- keys in random order
      for _, key in ipairs { "user:" .. name, "member:" .. name } do
        starts[#starts + 1] = { op = "step_start", run_id = "r", key = key, attempts = 1 }
        ends[#ends + 1] = { op = "step_complete", run_id = "r", key = key, attempts = 1,
                            result_json = '{"v":{"id":"' .. id .. '","created":true}}' }
      end
      if with_audit then
        ends[#ends + 1] = { op = "audit_add", run_id = "r", item = "user:" .. name, operation = "users.create",
          method = "POST", target = "127.0.0.1:1", resource_type = "users", resource_id = id,
          resource_name = name, changes_json = CHANGES, result = "created", status = 201 }
        ends[#ends + 1] = { op = "audit_add", run_id = "r", item = "member:" .. name,
          operation = "groups.add_members", method = "PATCH", target = "127.0.0.1:1", resource_type = "groups",
          resource_id = "g-1", resource_name = "Engineering", member_id = id, result = "added", status = 204 }
      end
    end
    assert(db:apply(starts))
    assert(db:apply(ends))
  end
  local us = (os.clock() - t0) / N * 1e6
  db:close()
  return us
end

print(("%-22s %14s %14s %8s"):format("users per transaction", "steps+audit", "steps only", "ratio"))
for _, per in ipairs { 7, 30 } do
  local all, steps = case(true, per), case(false, per)
  print(("%-22d %11.1f us %11.1f us %7.2fx"):format(per, all, steps, all / steps))
end
os.execute("rm -rf '" .. dir .. "'")
