-- A token revoked mid-run (issue 17 item 3) against the independently written SCIM servers of
-- spec/interop/servers.lua: examples/onboard.lua is provisioning 120 people when the server
-- revokes its token (scimmy: server.js /_admin/revoke; better-auth: the plugin's own credential
-- revocation). The run stops at once: exit 1, the message names SCIM_TOKEN and the resume
-- command, only the requests already in flight met the dead token, and no item becomes a dead
-- letter. With a new token the printed resume command finishes the work: every user once, in
-- the group once, by the server's own records. spec/functional/auth_stop_spec.lua is the same
-- against the sandbox.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local N, CONCURRENCY = 120, 8

local write = proc.write

local function sum(t)
  local n = 0
  for _, v in pairs(t or {}) do n = n + v end
  return n
end

for _, S in ipairs(require "interop.servers") do
describe("a token revoked mid-run against " .. S.name, function()
  local why = S.unavailable()
  if why then pending(why) return end

  local srv, dir
  setup(function()
    srv = S.start("interop-revoke-token-8e1b")
    dir = proc.tmpdir("interop-revoke")
  end)
  teardown(function()
    if srv then srv.stop() end
    if dir then os.execute("rm -rf '" .. dir .. "'") end
  end)

  local function env(token) return ("SCIM_BASE_URL=%s SCIM_TOKEN=%s"):format(srv.base_url, token) end

  local dlq_entries = proc.dlq

  it("stops onboard (exit 1, SCIM_TOKEN and the resume command named, no dead letters); the resume with a new "
    .. "token provisions every user once", function()
    srv.reset()
    local lines = { "userName,email,first_name,last_name,employee_id\n" }
    for i = 1, N do
      lines[#lines + 1] = ("rv.p%03d,rv.p%03d@example.com,First%d,Last%d,RV-%03d\n"):format(i, i, i, i, i)
    end
    local csv_path = write(dir .. "/people.csv", table.concat(lines))
    local state, rep = dir .. "/state.db", dir .. "/report.json"
    -- paced (40 requests/s) so that the run is still going when the token is revoked
    local h = sbrun.spawn(("examples/onboard.lua --policy fast-test --set rate_limit.rps=40 --set rate_limit.burst=4 "
      .. "--state %s --param csv=%s --param group=Revokers --param concurrency=%d --continue-on-error --report %s")
      :format(state, csv_path, CONCURRENCY, rep), env(srv.token))
    local deadline = scimrun.now() + 30
    while srv.stats().users < 30 and scimrun.now() < deadline do scimrun.sleep(0.02) end
    local old_token = srv.token
    srv.revoke()
    local code, out = sbrun.wait(h, 60)
    local st = srv.stats()
    assert.is_true(st.users >= 30 and st.users < N, ("%d users when it stopped: revoked too late to test\n%s")
      :format(st.users, out))

    assert.are.equal(1, code, out)
    assert.matches("why: auth 401: [^\n]*rejected the token in SCIM_TOKEN", out)
    assert.matches("what to do: token rejected: check SCIM_TOKEN", out)
    local resume = out:match("after fixing the cause, resume with: (scimrun [^\n]*)")
    assert.truthy(resume, "no resume command in\n" .. out)
    assert.matches("%-%-resume r%-[%w%-]+", resume)
    assert.matches("--state " .. state, resume, 1, true)
    assert.is_nil(out:find("--retry-failed", 1, true), "nothing was recorded failed: a plain resume")
    assert.matches("0 failed, %d+ stopped %(token rejected; a resume redoes them%)", out)
    assert.is_nil(out:find(old_token, 1, true), "the token in the output")
    -- only what was in flight met the revoked token: nothing was sent after the first 401
    -- (refused before the server looked at them, or, racing the revocation, answered 401 by it)
    local rejected = sum(st.rejected) + (st.statuses["401"] or 0)
    assert.is_true(rejected >= 1 and rejected <= CONCURRENCY, rejected .. " requests refused for their token")
    -- no dead letter per item, nothing failed, nothing rolled back
    assert.are.same({}, dlq_entries(state))
    local r = cjson.decode(proc.read_all(rep))
    assert.are.equal("failed", r.status)
    assert.are.equal(1, r.exit_code)
    assert.are.equal("auth", r.error.class)
    assert.are.equal(0, r.summary.failed)
    assert.are.equal(0, r.summary.dead_lettered)
    assert.are.equal(0, r.summary.compensated)
    -- items under way: the concurrency, and those that lent their slot while parked in a
    -- membership batch or a backoff (up to LENT_MAX x the concurrency more)
    local under_way = CONCURRENCY * (1 + require("scimrun.engine").Engine.LENT_MAX)
    assert.is_true(r.summary.auth_stopped >= 1 and r.summary.auth_stopped <= under_way,
      r.summary.auth_stopped .. " items stopped")
    for _, u in ipairs(srv.dump().users) do assert.is_true(u.active, u.userName .. " was rolled back") end

    -- a new token, exported; the printed command resumes the run and finishes it
    local new_token = srv.new_token()
    local code2, out2 = sbrun.run(resume:gsub("^scimrun ", "") .. " --report " .. rep, env(new_token), 90)
    assert.are.equal(0, code2, out2)
    assert.are.same({}, dlq_entries(state))
    local steps = sbrun.steps(state)
    for key, s in pairs(steps) do assert.are.equal("completed", s.state, key) end

    -- the server's records: every person once, active, in the group once
    local d = srv.dump()
    assert.are.equal(N, #d.users)
    local by_name, exts = {}, {}
    for _, u in ipairs(d.users) do
      local k = u.userName:lower()
      assert.is_nil(by_name[k], "duplicate user " .. u.userName)
      assert.is_nil(exts[u.externalId], "duplicate externalId " .. tostring(u.externalId))
      by_name[k], exts[u.externalId] = u, true
      assert.is_true(u.active, u.userName)
    end
    if d.authUsers then -- better-auth: one Better Auth user row per SCIM user
      assert.are.equal(N, #d.authUsers)
    end
    local group
    for _, g in ipairs(d.groups) do
      assert.are.equal("Revokers", g.displayName)
      assert.is_nil(group, "two groups")
      group = g
    end
    local members = {}
    for _, m in ipairs(group.members or {}) do
      assert.is_nil(members[m.value], "duplicate membership " .. m.value)
      members[m.value] = true
    end
    for i = 1, N do
      local u = by_name[("rv.p%03d"):format(i)]
      assert.truthy(u, ("rv.p%03d missing"):format(i))
      assert.are.equal(("RV-%03d"):format(i), u.externalId)
      assert.is_true(members[u.id] or false, u.userName .. " not in the group")
    end
    assert.are.equal(N, #group.members)
  end)
end)
end
