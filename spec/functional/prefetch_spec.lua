-- sp.users:prefetch reads a small target once, so lookups before creates come from memory:
-- what the provider sees is the evidence (its request counts), and what it holds at the end.
local scim = require "scimrun.scim"
local sbrun = require "helpers.sbrun"

local srv
setup(function() srv = sbrun.sandbox() end)
teardown(function() if srv then srv.close() end end)

local function gets()
  local st = sbrun.stats(srv)
  local n = 0
  for route, count in pairs(st.by_route or {}) do
    if route:match("^GET /Users") then n = n + count end
  end
  return n
end

local function connect()
  return scim.connect { base_url = srv.url, token = srv.token }
end

describe("sp.users:prefetch", function()
  before_each(function() sbrun.fresh(srv) end)

  it("answers lookups from one read of a small target: a rerun sends no per-user lookup", function()
    local sp = connect()
    for i = 1, 30 do assert(sp.users:ensure { userName = ("pre%02d"):format(i) }) end
    local again = connect()
    local before = gets()
    assert.are.equal(30, again.users:prefetch { max = 100 })
    local outcomes = {}
    for i = 1, 30 do
      local _, _, how = again.users:ensure { userName = ("PRE%02d"):format(i) } -- userName is case-insensitive
      outcomes[how] = (outcomes[how] or 0) + 1
    end
    assert.are.same({ skipped = 30 }, outcomes)
    assert.is_true(gets() - before <= 2, (gets() - before) .. " GETs for 30 users")
    -- a create is remembered by its id (not the whole resource: memory stays small in a long
    -- run): looking it up again costs one GET of it, no search
    assert(again.users:ensure { userName = "pre31" })
    local function route_count(route) return (sbrun.stats(srv).by_route or {})[route] or 0 end
    local searches, reads = route_count("GET /Users"), route_count("GET /Users/{id}")
    local _, _, how = again.users:ensure { userName = "pre31" }
    assert.are.equal("skipped", how)
    assert.are.same({ searches, reads + 1 }, { route_count("GET /Users"), route_count("GET /Users/{id}") })
  end)

  it("adopts, not duplicates, a user someone else created after the read", function()
    local sp = connect()
    assert.are.equal(0, sp.users:prefetch { max = 100 })
    local other = connect()
    assert(other.users:ensure { userName = "late" })
    local u, _, how = sp.users:ensure { userName = "late" }
    assert.are.equal("adopted", how) -- the create's 409 is resolved by a fresh lookup
    assert.is_string(u.id)
    local n = 0
    for _, x in ipairs(sbrun.dump(srv).users) do if x.userName == "late" then n = n + 1 end end
    assert.are.equal(1, n)
  end)

  it("keeps per-user lookups for a target larger than max", function()
    local sp = connect()
    for i = 1, 5 do assert(sp.users:ensure { userName = "big" .. i }) end
    local again = connect()
    assert.is_nil((again.users:prefetch { max = 3 }))
    local before = gets()
    assert.are.equal("skipped", select(3, again.users:ensure { userName = "big1" }))
    assert.are.equal(before + 1, gets())
  end)
end)
