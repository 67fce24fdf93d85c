-- Coalesced group membership (scimrun.scim.member_batch): concurrent add_members /
-- remove_members calls for one group share one PATCH. Through the binary and the workflow
-- engine (spec/fixtures/workflows/members.lua, one membership step per user) against a sandbox
-- in this process, whose own records and request counts are the evidence; then in-process
-- against the sandbox with a recording executor. No assertion depends on timing.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"
local scim = require "scimrun.scim"
local member_batch = require "scimrun.scim.member_batch"

local PATCHES = "PATCH /Groups/{id}"

local function patches(srv) return sbrun.stats(srv).by_route[PATCHES] or 0 end

local function count(set)
  local n = 0
  for _ in pairs(set or {}) do n = n + 1 end
  return n
end

local dlq = proc.dlq

describe("membership coalescing through the workflow engine", function()
  local srv, dir
  setup(function()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("members")
  end)
  teardown(function() srv.close() end)
  before_each(function() sbrun.fresh(srv) end)

  -- A generous window: on a loaded machine the last of 16 tasks may arrive late; the leader
  -- still sends as soon as every task of the connection has joined.
  local function args(state, extra)
    return "spec/fixtures/workflows/members.lua --policy fast-test --param window=0.25 --state " .. state
      .. " " .. (extra or "")
  end

  it("adds 64 users at concurrency 16 with at most 64/8 + 1 PATCHes, every one a member", function()
    local state = dir .. "/add.db"
    local code, out = sbrun.run(args(state, "--param n=64 --param concurrency=16"), srv.env)
    assert.are.equal(0, code, out)
    local users, members = sbrun.state(srv, "Batch")
    assert.are.equal(64, count(users))
    for name, u in pairs(users) do assert.is_true(members[u.id], name .. " is not a member") end
    assert.are.equal(64, count(members))
    local n = patches(srv)
    assert.is_true(n >= 1 and n <= 64 / 8 + 1, n .. " membership PATCHes for 64 users")
    local steps = sbrun.steps(state)
    for i = 1, 64 do
      assert.are.equal("completed", steps[("add:m%04d"):format(i)].state)
      assert.same({ count = 1 }, cjson.decode(steps[("add:m%04d"):format(i)].result_json).v)
    end
  end)

  it("coalesces removals too", function()
    local code, out = sbrun.run(args(dir .. "/radd.db", "--param n=48"), srv.env)
    assert.are.equal(0, code, out)
    local before = patches(srv)
    code, out = sbrun.run(args(dir .. "/rm.db", "--param n=48 --param mode=remove"), srv.env)
    assert.are.equal(0, code, out)
    local _, members = sbrun.state(srv, "Batch")
    assert.are.equal(0, count(members))
    local n = patches(srv) - before
    assert.is_true(n >= 1 and n <= 48 / 8 + 1, n .. " removal PATCHes for 48 users")
    local steps = sbrun.steps(dir .. "/rm.db")
    for i = 1, 48 do assert.are.equal("completed", steps[("remove:m%04d"):format(i)].state) end
  end)

  it("fails only the step whose member the provider rejects; the batch's others are added", function()
    local state = dir .. "/bad.db"
    local code, out = sbrun.run(args(state, "--param n=32 --param bad=5 --continue-on-error"), srv.env)
    assert.are.equal(3, code, out)
    local users, members = sbrun.state(srv, "Batch")
    assert.are.equal(32, count(users))
    assert.are.equal(31, count(members))
    for name, u in pairs(users) do
      if name ~= "m0005" then assert.is_true(members[u.id], name .. " is not a member") end
    end
    local steps = sbrun.steps(state)
    for i = 1, 32 do
      assert.are.equal(i == 5 and "failed" or "completed", steps[("add:m%04d"):format(i)].state, "item " .. i)
    end
    local entries = dlq(state)
    assert.are.equal(1, #entries)
    assert.are.equal("add:m0005", entries[1].step_key)
    assert.are.equal("groups.add_member", entries[1].operation)
    assert.are.equal(400, entries[1].status)
    assert.matches("no%-such%-user%-5", entries[1].last_error)
    -- the dead letter carries the failed caller's member only: a replay adds nobody else
    local body = cjson.decode(entries[1].request_body)
    assert.same({ { value = "no-such-user-5" } }, body.Operations[1].value)
  end)
end)

describe("membership coalescing in-process", function()
  local srv
  setup(function() srv = sbrun.sandbox() end)
  teardown(function() srv.close() end)
  before_each(function() sbrun.fresh(srv) end)

  -- An executor that records every operation (and the PATCHes in flight at once) and makes
  -- each attempt once; fail(op, payload) may raise.
  local function recorder(fail)
    local rec = { calls = {}, in_flight = 0, max_in_flight = 0 }
    rec.run = function(_, op, _, fn, opts)
      rec.calls[#rec.calls + 1] = { op = op, method = opts.method, payload = opts.payload }
      if fail then fail(op, opts.payload) end
      if opts.method ~= "PATCH" then return fn(1) end
      rec.in_flight = rec.in_flight + 1
      rec.max_in_flight = math.max(rec.max_in_flight, rec.in_flight)
      scimrun.sleep(0.002) -- a PATCH takes a while: later callers arrive while it is in flight
      local res, err = fn(1)
      rec.in_flight = rec.in_flight - 1
      return res, err
    end
    return rec
  end

  local function patch_calls(rec)
    local out = {}
    for _, c in ipairs(rec.calls) do if c.method == "PATCH" then out[#out + 1] = c end end
    return out
  end

  local function connect(o)
    local opts = { base_url = srv.url, token = srv.token }
    for k, v in pairs(o or {}) do opts[k] = v end
    return scim.connect(opts)
  end

  -- n users and a group, made through a plain connection.
  local function fixture(n)
    local sp = connect()
    local g = assert(sp.groups:create { displayName = "G" })
    local ids = {}
    for i = 1, n do ids[i] = assert(sp.users:create { userName = ("p%03d"):format(i) }).id end
    return g.id, ids
  end

  -- Runs fn(i) for i = 1..n as concurrent tasks; returns {r, err} per task (a raise: {raised}).
  local function concurrently(n, fn)
    local fns = {}
    for i = 1, n do
      fns[i] = function()
        local ok, r, err = pcall(fn, i)
        if not ok then return { raised = r } end
        return { r = r, err = err }
      end
    end
    return scimrun.all(fns)
  end

  it("sends 40 concurrent calls as max_members_per_patch-sized PATCHes, one at a time", function()
    local gid, ids = fixture(40)
    local rec = recorder()
    local sp = connect { executor = rec, max_members_per_patch = 10 }
    local out = concurrently(40, function(i) return sp.groups:add_members(gid, { ids[i] }) end)
    for i, o in ipairs(out) do
      assert.is_nil(o.err, "caller " .. i)
      assert.same({ group_id = gid, count = 1, requests = 1 }, o.r)
    end
    local calls = patch_calls(rec)
    assert.are.equal(4, #calls)
    for _, c in ipairs(calls) do
      assert.are.equal("groups.add_member", c.op)
      assert.are.equal(10, #c.payload.Operations[1].value)
    end
    assert.are.equal(1, rec.max_in_flight)
    local _, members = sbrun.state(srv, "G")
    assert.are.equal(40, count(members))
    assert.same({}, member_batch.pending(sp))
  end)

  it("sends an id given by several callers once", function()
    local gid, ids = fixture(9)
    local rec = recorder()
    local sp = connect { executor = rec }
    local out = concurrently(8, function(i) return sp.groups:add_members(gid, { ids[i], ids[9] }) end)
    for _, o in ipairs(out) do assert.are.equal(2, o.r.count) end
    local calls = patch_calls(rec)
    assert.are.equal(1, #calls)
    local values = calls[1].payload.Operations[1].value
    assert.are.equal(9, #values)
    local seen = {}
    for _, v in ipairs(values) do
      assert.is_nil(seen[v.value])
      seen[v.value] = true
    end
  end)

  it("answers each caller for its own members when one of the batch is rejected", function()
    local gid, ids = fixture(15)
    local sp = connect { executor = recorder() }
    local out = concurrently(16, function(i) return sp.groups:add_members(gid, { ids[i] or "nobody" }) end)
    for i = 1, 15 do assert.is_nil(out[i].err, "caller " .. i) end
    assert.is_nil(out[16].r)
    assert.are.equal(400, out[16].err.status)
    assert.are.equal("groups.add_member", out[16].err.op)
    local _, members = sbrun.state(srv, "G")
    assert.are.equal(15, count(members))
  end)

  it("fails every caller, without splitting, when the group itself is gone", function()
    local _, ids = fixture(4)
    local rec = recorder()
    local sp = connect { executor = rec }
    local out = concurrently(4, function(i) return sp.groups:add_members("no-such-group", { ids[i] }) end)
    for i, o in ipairs(out) do
      assert.is_nil(o.r, "caller " .. i)
      assert.are.equal(404, o.err.status)
    end
    assert.are.equal(1, #patch_calls(rec))
  end)

  it("coalesces remove_members into one PATCH of remove operations", function()
    local gid, ids = fixture(12)
    assert(connect().groups:add_members(gid, ids))
    local rec = recorder()
    local sp = connect { executor = rec }
    local out = concurrently(12, function(i) return sp.groups:remove_members(gid, { ids[i] }) end)
    for i, o in ipairs(out) do assert.is_nil(o.err, "caller " .. i) end
    local calls = patch_calls(rec)
    assert.are.equal(1, #calls)
    assert.are.equal("groups.remove_member", calls[1].op)
    assert.are.equal(12, #calls[1].payload.Operations)
    local _, members = sbrun.state(srv, "G")
    assert.are.equal(0, count(members))
  end)

  it("wakes every waiting caller with an error when the leader's send raises", function()
    local gid, ids = fixture(6)
    local rec = recorder(function(op) if op == "groups.add_member" then error("executor blew up") end end)
    local sp = connect { executor = rec }
    local away = 0 -- wf:each slots lent by the callers: every one comes back, the leader's too
    local out = concurrently(6, function(i)
      scimrun.ctx().item = { lend = function(on) away = away + (on and 1 or -1) end }
      return sp.groups:add_members(gid, { ids[i] })
    end)
    assert.are.equal(0, away)
    local raised, failed = 0, 0
    for _, o in ipairs(out) do
      if o.raised then
        raised = raised + 1
        assert.matches("executor blew up", tostring(o.raised))
      else
        failed = failed + 1
        assert.is_nil(o.r)
        assert.matches("executor blew up", o.err.detail)
      end
    end
    assert.are.equal(1, raised) -- the leader
    assert.are.equal(5, failed)
    assert.same({}, member_batch.pending(sp))
    -- the connection is usable afterwards
    local ok = connect { executor = recorder() }.groups:add_members(gid, { ids[1] })
    assert.are.equal(1, ok.count)
  end)

  it("lends each caller's wf:each slot from joining a batch until its outcome", function()
    -- waiting for a PATCH is not using the connection: new items may create users meanwhile,
    -- whose members fill the next batch
    local gid, ids = fixture(6)
    local rec = recorder()
    local inner = rec.run
    local away, seen_during_patch = {}, nil
    rec.run = function(self, op, target, fn, opts)
      if opts.method == "PATCH" then
        seen_during_patch = 0
        for _, n in pairs(away) do seen_during_patch = seen_during_patch + n end
      end
      return inner(self, op, target, fn, opts)
    end
    local sp = connect { executor = rec }
    local out = concurrently(6, function(i)
      away[i] = 0
      scimrun.ctx().item = { lend = function(on) away[i] = away[i] + (on and 1 or -1) end }
      return sp.groups:add_members(gid, { ids[i] })
    end)
    for i, o in ipairs(out) do
      assert.is_nil(o.err, "caller " .. i)
      assert.are.equal(0, away[i], "caller " .. i .. " took its slot back")
    end
    assert.are.equal(1, #patch_calls(rec))
    assert.are.equal(6, seen_during_patch) -- all six lent while their PATCH was out
  end)

  it("lends its slot also while a rate limit is in force and calls queue on it", function()
    local gid, ids = fixture(4)
    local rec = recorder()
    -- whatever the executor says of the target's limit (paced: the question the lending used
    -- to ask; queued: calls wait on it now), the slot is lent, and every lend is given back
    rec.queued = function() return true end
    rec.paced = function() return true end
    local sp = connect { executor = rec }
    local lent, back = 0, 0
    local out = concurrently(4, function(i)
      scimrun.ctx().item = { lend = function(on) if on then lent = lent + 1 else back = back + 1 end end }
      return sp.groups:add_members(gid, { ids[i] })
    end)
    for i, o in ipairs(out) do assert.is_nil(o.err, "caller " .. i) end
    assert.are.same({ 4, 4 }, { lent, back })
  end)

  it("waits longer for members while calls queue on the target's rate limit: fewer PATCHes", function()
    local gid, ids = fixture(6)
    -- callers 30 ms apart (a binding limit of about 33/s): far beyond the usual window
    local function spread(queued)
      local rec = recorder()
      rec.queued = function() return queued end
      local sp = connect { executor = rec }
      local out = concurrently(6, function(i)
        assert(sp.users:get(ids[i])) -- uses the connection: a task the batch may wait for
        scimrun.sleep((i - 1) * 0.03)
        return sp.groups:add_members(gid, { ids[i] })
      end)
      for i, o in ipairs(out) do assert.is_nil(o.err or o.raised, "caller " .. i) end
      return #patch_calls(rec)
    end
    local queued, free = spread(true), spread(false)
    assert.are.equal(1, queued)
    assert.is_true(free >= 3, ("%d PATCHes for callers 30 ms apart without a binding limit"):format(free))
  end)

  -- Callers of group gid at the given times (seconds from now), each using the connection 0.1 s
  -- before (a task the batch may wait for); the first PATCH is slow: first_patch(opts) runs in it.
  local function staged(gid, ids, times, first_patch, window)
    local rec = recorder()
    local inner, n = rec.run, 0
    rec.run = function(self, op, target, fn, opts)
      if opts.method == "PATCH" then
        n = n + 1
        if n == 1 then first_patch(opts) end
      end
      return inner(self, op, target, fn, opts)
    end
    local sp = connect { executor = rec, member_batch_window = window or 0.1 }
    local out = concurrently(#times, function(i)
      local t0 = scimrun.now()
      scimrun.sleep(math.max(0, times[i] - 0.1))
      assert(sp.users:get(ids[i]))
      scimrun.sleep(math.max(0, t0 + times[i] - scimrun.now()))
      return sp.groups:add_members(gid, { ids[i] })
    end)
    for i, o in ipairs(out) do assert.is_nil(o.err or o.raised, "caller " .. i) end
    return patch_calls(rec)
  end

  -- A server that re-validates the whole group on each PATCH answers nothing else meanwhile:
  -- the members of the next batch came before that PATCH began and after it ended, and the
  -- wait for it used to count against the next batch's window (sent half full).
  it("a batch's window runs from its turn, not through the slow PATCH ahead of it", function()
    local gid, ids = fixture(7)
    -- a window of 0.25 s: the last four join within it of the second batch's turn (at about 1 s)
    -- even on a loaded machine; counted from its last member (0.45 s), it was over at 0.7 s
    local calls = staged(gid, ids, { 0, 0.4, 0.45, 1.05, 1.06, 1.07, 1.08 }, function() scimrun.sleep(1) end, 0.25)
    -- the first caller's PATCH (to about 1 s), then the two that came during it and the four
    -- after it in one
    assert.are.equal(2, #calls)
    assert.are.equal(6, #calls[2].payload.Operations[1].value)
  end)

  -- The batch ahead sleeps out a backoff (a 429 on a binding limit), every other caller parked
  -- in it: a lone caller used to take its turn and send a PATCH of one member.
  it("a lone caller waits for the batch ahead that backs off instead of sending alone", function()
    local gid, ids = fixture(6)
    -- (the first two go at once; their PATCH is refused at 0.1 s and sent again at 0.5 s; a
    -- window of 0.25 s from the second batch's turn, so the last three join it even on a loaded
    -- machine: with 0.1 s, a run beside the other suites once sent the third caller alone)
    local calls = staged(gid, ids, { 0, 0, 0.15, 0.55, 0.56, 0.57 }, function(opts)
      scimrun.sleep(0.1) -- on the wire, then refused: it sleeps out the server's delay
      if opts.on_backoff then opts.on_backoff(true) end
      scimrun.sleep(0.4)
      if opts.on_backoff then opts.on_backoff(false) end
    end, 0.25)
    assert.are.equal(2, #calls)
    assert.are.equal(4, #calls[2].payload.Operations[1].value)
  end)

  -- The tail of a run with random 429s: the other items sleep out a 429 on their create. A lone
  -- caller used to send a PATCH of its one member, and each sleeper another when it woke.
  it("a lone caller waits for callers asleep in a backoff that wake soon: one PATCH for all", function()
    local gid, ids = fixture(3)
    local rec = recorder()
    local inner = rec.run
    rec.run = function(self, op, target, fn, opts)
      if opts.method == "GET" and opts.on_backoff then
        opts.on_backoff(true, 0.3) -- refused with a delay: asleep for 0.3 s
        scimrun.sleep(0.3)
        opts.on_backoff(false)
      end
      return inner(self, op, target, fn, opts)
    end
    local sp = connect { executor = rec, member_batch_window = 0.05 }
    local out = concurrently(3, function(i)
      if i > 1 then assert(sp.users:get(ids[i])) end -- the call that backs off
      return sp.groups:add_members(gid, { ids[i] })
    end)
    for i, o in ipairs(out) do assert.is_nil(o.err or o.raised, "caller " .. i) end
    local calls = patch_calls(rec)
    assert.are.equal(1, #calls)
    assert.are.equal(3, #calls[1].payload.Operations[1].value)
  end)

  -- Sleepers that must not hold a lone batch: the leader of another group's batch (it wakes to
  -- send that PATCH again) and a caller waking more than a second from now. The batch goes
  -- before either wakes (the events say in which order things happened).
  it("a lone caller waits neither for another group's leader nor for a sleeper waking in over 1 s", function()
    local gid, ids = fixture(3)
    local hid = assert(connect().groups:create { displayName = "H" }).id
    local rec, events, slept = recorder(), {}, {}
    local inner = rec.run
    rec.run = function(self, op, target, fn, opts)
      local key = (opts.method == "PATCH" and opts.url:find(hid, 1, true) and "H") or (opts.method == "GET" and "GET")
      if key and not slept[key] and opts.on_backoff then
        slept[key] = true
        local s = key == "H" and 0.5 or 1.5
        opts.on_backoff(true, s)
        scimrun.sleep(s)
        opts.on_backoff(false)
        events[#events + 1] = key .. " woke"
      end
      if opts.method == "PATCH" and opts.url:find(gid, 1, true) then events[#events + 1] = "G sent" end
      return inner(self, op, target, fn, opts)
    end
    local sp = connect { executor = rec, member_batch_window = 0.05 }
    local out = concurrently(3, function(i)
      if i == 1 then return sp.groups:add_members(hid, { ids[1] }) end -- leads H's batch, then sleeps
      if i == 3 then return assert(sp.users:get(ids[3])) end -- asleep for 1.5 s
      scimrun.sleep(0.1)
      return sp.groups:add_members(gid, { ids[2] })
    end)
    for i, o in ipairs(out) do assert.is_nil(o.err or o.raised, "caller " .. i) end
    assert.are.same({ "G sent", "H woke", "GET woke" }, events)
  end)

  it("times a call by its attempts on the wire, not by its wait for the rate limit", function()
    -- call_time stretches the batches' window; time queued behind the client's own limiter used
    -- to count, so a learned limit slowed the batches, which made it look binding, and so on
    local rec = recorder()
    local inner = rec.run
    local queued = 1.5
    rec.run = function(self, op, target, fn, opts)
      scimrun.sleep(queued) -- queued for the limiter
      return inner(self, op, target, fn, opts)
    end
    local sp = connect { executor = rec }
    local t0 = scimrun.now()
    assert(sp.users:create { userName = "timed" })
    local took = scimrun.now() - t0
    -- the call took the queueing and the request; call_time holds the request alone (far less
    -- than the queueing on any machine: a POST to a sandbox in this process)
    assert.is_true(took >= queued)
    assert.is_true(sp.call_time < took - queued / 2, ("call_time %s of a call of %.3f s"):format(sp.call_time, took))
  end)

  it("sends each call on its own with member_batch_window = 0, and in a dry run", function()
    local gid, ids = fixture(4)
    local rec = recorder()
    local sp = connect { executor = rec, member_batch_window = 0 }
    concurrently(4, function(i) return sp.groups:add_members(gid, { ids[i] }) end)
    assert.are.equal(4, #patch_calls(rec))
    local dry = connect { dry_run = true }
    concurrently(4, function(i) return dry.groups:add_members(gid, { ids[i] }) end)
    assert.are.equal(4, #dry:planned())
  end)

  it("rejects a bad member_batch_window", function()
    local ok, err = pcall(connect, { member_batch_window = -1 })
    assert.is_false(ok)
    assert.matches("member_batch_window must be a number of seconds", tostring(err.detail))
    assert.is_true(scim.default_member_batch_window > 0)
  end)
end)
