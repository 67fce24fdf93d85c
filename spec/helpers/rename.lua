-- Renames between two runs (issue 17 item 2), against any SCIM server: examples/onboard.lua
-- with the default mapping provisions 20 people, then 10 of them change their userName in the
-- source while keeping their employee_id (-> externalId). The second run must rename those
-- 10 accounts (same ids, new userNames), create nobody, touch nobody else, and a third run
-- must write nothing at all. Checked by the server's own records.
--
--   require("helpers.rename").scenario(server)
-- server: { env = "SCIM_BASE_URL=... SCIM_TOKEN=...",   how the binary reaches it
--           users = function() -> array of the server's User resources (its own records),
--           name = "sandbox" (for messages), policy = "fast-test" (optional) }
-- Returns the ids by externalId and the run ids, for further checks.
local assert = require "luassert"
local cjson = require "cjson"
local proc = require "helpers.proc"

local M = {}

local write = proc.write

local function read_lines(path)
  local out = {}
  local f = io.open(path)
  if not f then return out end
  for l in f:lines() do if l ~= "" then out[#out + 1] = cjson.decode(l) end end
  f:close()
  return out
end

-- 20 people with a tag of their own (servers may be shared by several specs).
local function people(tag, renamed)
  local lines = { "userName,email,first_name,last_name,employee_id,title" }
  for i = 1, 20 do
    local name = ("%s.p%02d"):format(tag, i)
    if renamed and i <= 10 then name = ("%s.renamed%02d"):format(tag, i) end
    lines[#lines + 1] = ("%s,%s.p%02d@example.com,First%d,Last%d,%s-E%03d,Engineer"):format(name, tag, i, i, i, tag, i)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- The server's users of this scenario, by externalId (asserting none is duplicated, by
-- externalId or by userName).
local function mine(server, tag)
  local by_ext, names = {}, {}
  for _, u in ipairs(server.users()) do
    local ext = u.externalId
    if type(ext) == "string" and ext:sub(1, #tag + 1) == tag .. "-" then
      assert.is_nil(by_ext[ext], server.name .. ": two users with externalId " .. ext)
      local k = u.userName:lower()
      assert.is_nil(names[k], server.name .. ": two users named " .. u.userName)
      by_ext[ext], names[k] = u, true
    end
  end
  return by_ext
end

local count = proc.count

function M.scenario(server)
  local dir = proc.tmpdir("rename")
  local tag = "rn" .. tostring(math.floor(scimrun.wall() * 1000) % 1e8)
  local before_csv = write(dir .. "/before.csv", people(tag, false))
  local after_csv = write(dir .. "/after.csv", people(tag, true))
  local state = dir .. "/state.db"
  local group = tag .. "-group"
  local function onboard(csv_path, extra)
    return proc.run_bg(dir, ("examples/onboard.lua --policy %s --state %s --param csv=%s --param group=%s %s")
      :format(server.policy or "fast-test", state, csv_path, group, extra or ""), server.env, 120)
  end
  local function last_run()
    local db = assert(require("scimrun.store").open(state, { readonly = true }))
    local r = db:runs_list { limit = 1 }[1]
    db:close()
    return r.id
  end

  local code, out, err = onboard(before_csv)
  assert.are.equal(0, code, server.name .. ": first run\n" .. out .. err)
  local first = mine(server, tag)
  assert.are.equal(20, count(first), server.name .. ": 20 users after the first run")
  local run1 = last_run()

  -- 10 renamed at the source: a dry run shows exactly those 10 renames, writes nothing
  code, out, err = onboard(after_csv, "--dry-run --diff " .. dir .. "/plan.jsonl")
  assert.are.equal(0, code, server.name .. ": dry run\n" .. out .. err)
  local plan = read_lines(dir .. "/plan.jsonl")
  assert.are.equal(10, #plan, server.name .. ": planned writes\n" .. out)
  for _, w in ipairs(plan) do
    assert.are.equal("users.patch", w.op)
    assert.are.equal("planned", w.result)
    assert.is_true(w.dry_run)
    assert.are.equal(1, #w.changes, cjson.encode(w))
    assert.are.equal("userName", w.changes[1].attribute)
    assert.matches("%.p%d%d$", w.changes[1].before)
    assert.matches("%.renamed%d%d$", w.changes[1].after)
  end
  local same = mine(server, tag)
  for ext, u in pairs(first) do assert.are.equal(u.userName, same[ext].userName, "the dry run wrote") end

  code, out, err = onboard(after_csv, "--diff " .. dir .. "/done.jsonl")
  assert.are.equal(0, code, server.name .. ": second run\n" .. out .. err)
  assert.matches("0 created, 10 updated, 10 skipped", out)
  local run2 = last_run()
  local second = mine(server, tag)
  assert.are.equal(20, count(second), server.name .. ": no duplicate after the renames")
  for i = 1, 20 do
    local ext = ("%s-E%03d"):format(tag, i)
    assert.are.equal(first[ext].id, second[ext].id, server.name .. ": " .. ext .. " kept its id")
    local want = i <= 10 and ("%s.renamed%02d"):format(tag, i) or ("%s.p%02d"):format(tag, i)
    assert.are.equal(want:lower(), second[ext].userName:lower(), server.name .. ": " .. ext .. " userName")
  end
  local done = read_lines(dir .. "/done.jsonl")
  assert.are.equal(10, #done, server.name .. ": writes of the second run\n" .. out)
  local renamed = {}
  for i = 1, 10 do renamed[first[("%s-E%03d"):format(tag, i)].id] = true end
  for _, w in ipairs(done) do
    assert.are.equal("updated", w.result)
    assert.is_true(renamed[w.id] or false, cjson.encode(w))
    renamed[w.id] = nil
    assert.are.same({ "userName" }, { w.changes[1].attribute, w.changes[2] })
  end

  -- the audit trail of the second run: the 10 renames, before -> after
  local acode, aout, aerr = proc.run(("audit --state %s --run %s --json"):format(state, run2))
  assert.are.equal(0, acode, aerr)
  local rows = cjson.decode(aout)
  assert.are.equal(10, #rows)
  for _, r in ipairs(rows) do
    assert.are.equal("users.patch", r.operation)
    assert.are.equal("userName", r.changes[1].attribute)
  end
  -- a renamed user is found by its old name too, with its whole history
  local ucode, uout = proc.run(("audit --state %s --user %s.p03 --json"):format(state, tag))
  assert.are.equal(0, ucode)
  local hist = cjson.decode(uout)
  local ops = {}
  for _, r in ipairs(hist) do ops[#ops + 1] = r.operation end
  assert.are.same({ "users.create", "groups.add_member", "users.patch" }, ops)

  -- nothing changed since: a third run writes nothing
  code, out, err = onboard(after_csv, "--diff " .. dir .. "/none.jsonl")
  assert.are.equal(0, code, server.name .. ": third run\n" .. out .. err)
  assert.matches("0 created, 0 updated, 20 skipped", out)
  assert.are.equal(0, #read_lines(dir .. "/none.jsonl"))
  os.execute("rm -rf '" .. dir .. "'")
  return { ids = second, runs = { run1, run2 } }
end

return M
