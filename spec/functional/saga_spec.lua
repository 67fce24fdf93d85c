-- Sagas through the binary: compensation on permanent failure, SIGKILL and SIGINT during a
-- rollback, a compensation that itself fails, and stopping at the first failure. The server's
-- own records (the in-process sandbox's admin dump) are the evidence.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

describe("saga", function()
  local srv, dir
  setup(function()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("saga")
  end)
  teardown(function() srv.close() end)
  before_each(function() sbrun.fresh(srv) end)

  local args = sbrun.saga_args

  it("compensates the first two steps on the server when the third fails permanently", function()
    local state = dir .. "/third.db"
    local code, out = sbrun.run(args(state, "--param n=3 --param fail_third=2 --param concurrency=1"), srv.env)
    assert.are.equal(1, code, out)
    local users, members = sbrun.state(srv, "Staff")
    -- the failed item: created, then deactivated and removed from the group, newest first
    assert.is_false(users.u0002.active)
    assert.is_nil(members[users.u0002.id])
    -- the item before it is whole
    assert.is_true(users.u0001.active)
    assert.is_true(members[users.u0001.id])
    -- without continue-on-error nothing after the failure was started
    assert.is_nil(users.u0003)
    local st = sbrun.steps(state)
    assert.are.equal("compensated", st["user:u0002"].state)
    assert.are.equal("compensated", st["member:u0002"].state)
    assert.are.equal("completed", st["compensate:member:u0002"].state)
    assert.are.equal("failed", st["third:u0002"].state)
    -- the operator is told what failed, why and how to resume
    assert.matches("2 steps compensated", out)
    assert.matches("stopped: users.third, PATCH http://127.0.0.1:%d+/scim/v2/Users/[%w%-]+, step third:u0002, item 2",
      out)
    assert.matches("why: permanent 400 invalidValue: active must be a JSON boolean", out)
    assert.matches("%[rule http%-client%-error%]", out)
    assert.matches("resume with: scimrun .*saga%.lua %-%-resume r%-[%w%-]+ .*%-%-retry%-failed", out)
  end)

  it("with --rollback-on-abort also compensates the sagas that had completed when the run fails", function()
    local state = dir .. "/abort.db"
    local code, out = sbrun.run(args(state, "--param n=3 --param fail_third=3 --param concurrency=1"
      .. " --rollback-on-abort"), srv.env)
    assert.are.equal(1, code, out)
    local users, members = sbrun.state(srv, "Staff")
    for _, name in ipairs { "u0001", "u0002", "u0003" } do
      assert.is_false(users[name].active, name .. " should have been deactivated")
      assert.is_nil(members[users[name].id], name .. " should have left the group")
    end
    local st = sbrun.steps(state)
    assert.are.equal("compensated", st["user:u0001"].state)
    assert.are.equal("compensated", st["member:u0002"].state)
  end)

  it("finishes compensating after a SIGKILL during the rollback and --resume", function()
    local state = dir .. "/kill.db"
    local h = sbrun.spawn(args(state, "--param n=1 --param fail_third=1 --param comp_sleep=1"), srv.env)
    -- the member compensation (newest first) is done; the user one sleeps when the kill lands
    assert.is_true(sbrun.wait_output(h, "compensating step step=user:u0001", 20), proc.read_all(h.log))
    scimrun.sleep(0.2)
    sbrun.signal(h, 9)
    assert.are.equal(137, (sbrun.wait(h, 10)))
    local users, members = sbrun.state(srv, "Staff")
    assert.is_true(users.u0001.active)          -- half rolled back: the kill landed in between
    assert.is_nil(members[users.u0001.id])
    local st = sbrun.steps(state)
    assert.are.equal("started", st["compensate:user:u0001"].state)

    local code, out = sbrun.run(args(state, "--resume"), srv.env)
    assert.are.equal(1, code, out)              -- the item still failed; its rollback is now whole
    users, members = sbrun.state(srv, "Staff")
    assert.is_false(users.u0001.active)
    assert.is_nil(members[users.u0001.id])
    st = sbrun.steps(state)
    assert.are.equal("compensated", st["user:u0001"].state)
    assert.are.equal("compensated", st["member:u0001"].state)
    -- the finished compensation was taken from its checkpoint, not sent again
    assert.are.equal(1, st["compensate:member:u0001"].attempts)
    assert.are.equal(2, st["compensate:user:u0001"].attempts)
  end)

  it("parks a compensation that fails permanently in the dead-letter queue and says so loudly", function()
    local state = dir .. "/compfail.db"
    local code, out = sbrun.run(args(state, "--param n=1 --param fail_third=1 --param comp_fail=user"
      .. " --continue-on-error --policy spec/fixtures/policies/dlq_hook.lua"), srv.env)
    assert.are.equal(3, code, out)
    assert.matches("COMPENSATION FAILED: the target may hold half%-done work", out)
    assert.matches("!! 1 COMPENSATION%(S%) FAILED", out)
    assert.matches("!!   users.deactivate, PATCH http://[^\n]*step compensate:user:u0001", out)
    assert.matches("!!     see: scimrun dlq show %d+ %-%-state ", out)
    -- the policy hook was called for both entries, through the guard (its error is only logged)
    assert.matches("on_dead_letter hook failed.-hook saw compensate:user:u0001 compensation=true", out)
    assert.matches("on_dead_letter hook failed.-hook saw third:u0001 compensation=false", out)

    local lcode, list = proc.run("dlq list --json --state " .. state)
    assert.are.equal(0, lcode, list)
    local entries = cjson.decode(list)
    assert.are.equal(2, #entries)
    local by_key = {}
    for _, e in ipairs(entries) do by_key[e.step_key] = e end
    local comp = assert(by_key["compensate:user:u0001"])
    assert.is_truthy(comp.is_compensation == true or comp.is_compensation == 1)
    assert.are.equal("permanent", comp.class)
    assert.are.equal(400, comp.status)
    assert.are.equal("users.deactivate", comp.operation)
    local item = assert(by_key["third:u0001"])
    assert.is_truthy(item.is_compensation == false or item.is_compensation == 0)
    assert.matches("^%(item rolled back%)", item.last_error)

    local scode, show = proc.run("dlq show " .. comp.id .. " --state " .. state)
    assert.are.equal(0, scode)
    assert.matches("COMPENSATION   this entry is a failed rollback", show)
    -- the user is still active on the server: the rollback really failed; the membership was undone
    local users, members = sbrun.state(srv, "Staff")
    assert.is_true(users.u0001.active)
    assert.is_nil(members[users.u0001.id])
    -- replaying the rolled-back item's request is refused: it would leave the item half-done
    local rcode, rout = proc.run("dlq replay " .. item.id .. " --state " .. state, srv.env)
    assert.are.equal(3, rcode, rout)
    assert.matches("rolled back by its saga", rout)
  end)

  it("lets SIGINT finish a rollback that has started", function()
    local state = dir .. "/int.db"
    local h = sbrun.spawn(args(state, "--param n=1 --param fail_third=1 --param comp_sleep=0.4"), srv.env)
    assert.is_true(sbrun.wait_output(h, "compensating step step=member:u0001", 20), proc.read_all(h.log))
    sbrun.signal(h, "INT")
    local code, out = sbrun.wait(h, 20)
    assert.are.equal(1, code, out) -- the item failed; the signal did not cut its rollback
    assert.matches("finishing in%-flight steps", out)
    local users, members = sbrun.state(srv, "Staff")
    assert.is_false(users.u0001.active)
    assert.is_nil(members[users.u0001.id])
    assert.are.equal(0, #cjson.decode((select(2, proc.run("dlq list --json --state " .. state)))))
  end)

  it("leaves a rollback resumable when a hard stop cuts the grace period short", function()
    local state = dir .. "/hard.db"
    local h = sbrun.spawn(args(state, "--param n=1 --param fail_third=1 --param comp_sleep=0.5"),
      "SCIMRUN_STOP_GRACE=0.1 " .. srv.env)
    assert.is_true(sbrun.wait_output(h, "compensating step step=member:u0001", 20), proc.read_all(h.log))
    sbrun.signal(h, "INT")
    local code, out = sbrun.wait(h, 20)
    assert.are.equal(130, code, out)
    assert.matches("Resume with:\n  scimrun .*%-%-resume r%-", out)
    local users = sbrun.state(srv, "Staff")
    assert.is_true(users.u0001.active)
    code, out = sbrun.run(args(state, "--resume"), srv.env)
    assert.are.equal(1, code, out)
    local members
    users, members = sbrun.state(srv, "Staff")
    assert.is_false(users.u0001.active)
    assert.is_nil(members[users.u0001.id])
  end)

  it("without continue-on-error stops dispatch at the first failure, finishes in-flight items, exits 1", function()
    local state = dir .. "/stop.db"
    local code, out = sbrun.run(args(state, "--param n=40 --param fail_third=10 --param concurrency=4"
      .. " --param step_sleep=0.05"), srv.env)
    assert.are.equal(1, code, out)
    local users, members = sbrun.state(srv, "Staff")
    assert.is_false(users.u0010.active)
    assert.is_nil(members[users.u0010.id])
    local n, after = 0, 0
    for name, u in pairs(users) do
      n = n + 1
      if name ~= "u0010" then
        -- every other item that started ran to its end: active and in the group
        assert.is_true(u.active, name)
        assert.is_true(members[u.id], name)
        if tonumber(name:match("%d+")) > 10 then after = after + 1 end
      end
    end
    assert.is_true(after >= 1, "items in flight when the failure came were finished")
    assert.is_true(n < 40, "dispatch stopped: " .. n .. " users")
    assert.is_nil(out:find("dead letters", 1, true))
  end)
end)
