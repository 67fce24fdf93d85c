-- A token that stops working mid-run (expired, revoked, scope removed) stops the run instead of
-- failing every item one by one (issue 17): the retry layer sends nothing more to the target,
-- the engine dispatches no new item, the items in flight are neither dead-lettered nor rolled
-- back, the run exits 1 naming the token's variable and the resume command, and once the token
-- is fixed `--resume` finishes the work without a duplicate, by the provider's own records.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local write = proc.write

-- Requests the provider refused with `status` (its own counters).
local function refused(srv, status)
  local n = 0
  for k, v in pairs(sbrun.stats(srv).by_status) do
    if k:match(" " .. status .. "$") then n = n + v end
  end
  return n
end

local dlq_entries = proc.dlq

describe("a token rejected mid-run", function()
  local srv, dir
  setup(function()
    dir = proc.tmpdir("auth-stop")
    srv = sbrun.sandbox { persist = dir .. "/sandbox.journal" }
  end)
  teardown(function()
    srv.close()
    os.execute("rm -rf '" .. dir .. "'")
  end)
  before_each(function() sbrun.fresh(srv) end)

  it("stops the run (exit 1, token named, resume command, no dead letters); --resume with the new token "
    .. "completes without duplicates", function()
    local n, concurrency = 300, 8
    local state, rep = dir .. "/rev.db", dir .. "/rev.json"
    local args = sbrun.saga_args(state, ("--param n=%d --param step_sleep=0.03 --param concurrency=%d "
      .. "--continue-on-error --report %s"):format(n, concurrency, rep))
    local h = sbrun.spawn(args, srv.env)
    -- revoke the token once some of the work is done
    local deadline = scimrun.now() + 30
    while sbrun.stats(srv).users < 40 and scimrun.now() < deadline do scimrun.sleep(0.01) end
    local new_env = sbrun.set_token(srv, "rotated-" .. require("scimrun.sandbox").random_token())
    local code, out = sbrun.wait(h, 60)
    local created_before = sbrun.stats(srv).users
    assert.is_true(created_before < n, "the run finished before the token was revoked: too fast to test")

    assert.are.equal(1, code, out)
    assert.matches("the target rejected the token", out)
    assert.matches("stopped: [^\n]*\n    why: auth 401: [^\n]*rejected the token in SCIM_TOKEN", out)
    assert.matches("what to do: token rejected: check SCIM_TOKEN", out)
    assert.matches("after fixing the cause, resume with: scimrun [^\n]*%-%-resume r%-[%w%-]+", out)
    assert.matches("credential=SCIM_TOKEN", out)
    assert.is_nil(out:find("--retry-failed", 1, true), "nothing was recorded failed: a plain resume")
    assert.matches("0 failed, %d+ stopped %(token rejected; a resume redoes them%)", out)
    -- only the requests already in flight met the revoked token; nothing was sent after them
    local rejected = refused(srv, 401)
    assert.is_true(rejected >= 1 and rejected <= concurrency, rejected .. " requests answered 401")
    -- no dead letter per item, no rollback of the items in flight
    assert.are.same({}, dlq_entries(state))
    local r = cjson.decode(proc.read_all(rep))
    assert.are.equal("failed", r.status)
    assert.are.equal(1, r.exit_code)
    assert.are.equal("auth", r.error.class)
    assert.are.equal(0, r.summary.failed)
    assert.are.equal(0, r.summary.dead_lettered)
    assert.are.equal(0, r.summary.compensated)
    local stopped = 0
    for _, it in ipairs(r.items) do
      assert.are_not.equal("dead_lettered", it.outcome)
      assert.are_not.equal("failed", it.status)
      if it.status == "interrupted" then
        stopped = stopped + 1
        assert.are.equal("auth", it.error.class)
      end
    end
    -- items under way: the concurrency, and those lending their slot while parked in a
    -- membership batch or a backoff (up to LENT_MAX x the concurrency more)
    local under_way = concurrency * (1 + require("scimrun.engine").Engine.LENT_MAX)
    assert.is_true(stopped >= 1 and stopped <= under_way, stopped .. " items stopped")
    assert.are.equal(stopped, r.summary.auth_stopped)
    for _, u in ipairs(sbrun.dump(srv).users) do assert.is_true(u.active, u.userName .. " was rolled back") end

    -- the token is fixed (the new one exported): the resume finishes, nothing is duplicated
    local code2, out2 = sbrun.run(sbrun.saga_args(state, "--resume --continue-on-error"), new_env, 60)
    assert.are.equal(0, code2, out2)
    local users, members, d = sbrun.state(srv, "Staff")
    assert.are.equal(n, #d.users)
    local count = 0
    for i = 1, n do
      local u = users[("u%04d"):format(i)]
      assert.truthy(u, ("u%04d missing"):format(i))
      assert.is_true(u.active)
      assert.is_true(members[u.id] ~= nil, u.userName .. " not in Staff")
      count = count + 1
    end
    assert.are.equal(n, count)
    local steps = sbrun.steps(state)
    for key, s in pairs(steps) do assert.are.equal("completed", s.state, key) end
    assert.are.same({}, dlq_entries(state))
  end)

  it("names the workflow's own token variable, and a 403 stops it the same way, after one request", function()
    local wf = write(dir .. "/partner.lua", [[
local scim = require "scimrun.scim"
return scimrun.workflow {
  name = "partner-sync",
  params = { n = 40 },
  run = function(wf, p)
    local sp = scim.connect { base_url = wf.env "SCIM_BASE_URL", token_env = "PARTNER_SCIM_TOKEN",
                              discover = false }
    local i = 0
    wf:each(function() i = i + 1; if i <= p.n then return i end end, { concurrency = 1 }, function(k)
      wf:step(("user:%03d"):format(k), function()
        local u, err = sp.users:ensure { userName = ("p%03d"):format(k) }
        if not u then return nil, err end
        return { id = u.id }
      end)
    end)
  end,
}
]])
    local state = dir .. "/partner.db"
    local env = ("SCIM_BASE_URL=%s PARTNER_SCIM_TOKEN=%s"):format(srv.url, srv.token)
    local code, out = sbrun.run(("%s --policy fast-test --state %s --param n=3"):format(wf, state), env)
    assert.are.equal(0, code, out)
    -- the token loses its scope: the provider answers 403
    sbrun.set_token(srv, "other-" .. require("scimrun.sandbox").random_token(), 403)
    local before = sbrun.stats(srv).requests
    code, out = sbrun.run(("%s --policy fast-test --state %s --continue-on-error"):format(wf, state), env)
    assert.are.equal(1, code, out)
    assert.matches("why: auth 403: [^\n]*rejected the token in PARTNER_SCIM_TOKEN", out)
    assert.matches("what to do: token rejected: check PARTNER_SCIM_TOKEN", out)
    assert.is_nil(out:find("check SCIM_TOKEN", 1, true))
    assert.are.equal(1, sbrun.stats(srv).requests - before, "one request, then nothing more to the target")
    assert.are.same({}, dlq_entries(state))
    -- the scope is given back: the same run resumes and finishes
    sbrun.set_token(srv, srv.token)
    code, out = sbrun.run(("%s --policy fast-test --state %s --resume"):format(wf, state), env)
    assert.are.equal(0, code, out)
    local names = {}
    for _, u in ipairs(sbrun.dump(srv).users) do
      assert.is_nil(names[u.userName], "duplicate " .. u.userName)
      names[u.userName] = true
    end
    for k = 1, 40 do assert.is_true(names[("p%03d"):format(k)], k) end
  end)
end)

describe("the retry layer after an auth failure", function()
  local retry = require "scimrun.resilience.retry"
  local policy = require "scimrun.resilience.policy"

  it("sends nothing more to that target, announces it once, and names the credential", function()
    local ex = retry.executor { policy = policy.load("fast-test"), log = false, seed = 1 }
    local seen = {}
    ex.events:subscribe(function(ev) if ev.type == "auth_stop" then seen[#seen + 1] = ev end end)
    local sent = 0
    local function reject() sent = sent + 1; return nil, { status = 401, detail = "token expired" } end
    local _, err = ex:run("users.search", "a.example", reject, { credential = "OKTA_TOKEN" })
    assert.are.equal("auth", err.class)
    assert.is_true(err.auth_stop)
    assert.matches("a%.example rejected the token in OKTA_TOKEN", err.detail)
    assert.matches("check OKTA_TOKEN", err.suggest)
    assert.are.equal(1, sent)
    -- the next call to that target is refused without a request
    local _, err2 = ex:run("users.create", "a.example", reject, { credential = "OKTA_TOKEN" })
    assert.are.equal(1, sent)
    assert.are.equal("auth", err2.class)
    assert.is_true(err2.not_sent)
    assert.matches("^not sent: a%.example rejected the token in OKTA_TOKEN earlier", err2.detail)
    assert.is_true(ex:auth_stopped("a.example"))
    assert.are.equal(1, #seen)
    assert.are.equal("OKTA_TOKEN", seen[1].credential)
    -- another target is not affected
    local res = ex:run("users.search", "b.example", function() return { status = 200 } end)
    assert.are.equal(200, res.status)
    assert.is_false(ex:auth_stopped("b.example"))
  end)

  it("refuses calls that were waiting out a backoff when the token was rejected", function()
    local ex = retry.executor { policy = policy.load("fast-test"), log = false, seed = 1 }
    local sent = 0
    local done = {}
    scimrun.spawn(function()
      local _, e = ex:run("users.search", "t", function()
        sent = sent + 1
        return nil, { status = 503 }
      end, { credential = "SCIM_TOKEN" })
      done[#done + 1] = e
    end)
    scimrun.sleep(0.001)
    local _, e = ex:run("users.create", "t", function() sent = sent + 1; return nil, { status = 403 } end)
    assert.are.equal("auth", e.class)
    local deadline = scimrun.now() + 5
    while #done == 0 and scimrun.now() < deadline do scimrun.sleep(0.01) end
    assert.are.equal(1, #done)
    assert.are.equal("auth", done[1].class)
    assert.is_true(done[1].not_sent)
    assert.is_true(sent <= 3, sent .. " requests")
  end)
end)

describe("the engine after an auth failure", function()
  local workflow = require "scimrun.workflow"
  local store = require "scimrun.store"
  local core = require "scimrun.core"
  local dir, db
  setup(function() dir = proc.tmpdir("auth-engine") end)
  teardown(function() os.execute("rm -rf '" .. dir .. "'") end)
  after_each(function()
    core.at_turn_end(nil)
    if db then db:close(); db = nil end
  end)

  local function range(n)
    local i = 0
    return function() i = i + 1; if i <= n then return i end end
  end

  it("with continue-on-error: stops dispatch, dead-letters nothing, compensates nothing, leaves the step to "
    .. "redo", function()
    db = assert(store.open(dir .. "/e.db"))
    assert(db:run_create { id = "r-1", workflow_name = "t", workflow_path = "/t.lua", workflow_hash = "h" })
    local e = workflow.engine { db = db, run_id = "r-1", continue_on_error = true, log = function() end }
    core.at_turn_end(function() e:flush() end)
    local started, compensated = 0, 0
    local ok, err = pcall(e.each, e, range(50), { concurrency = 4 }, function(i)
      started = started + 1
      e:saga(function()
        e:step("a" .. i, function() return { i = i } end, { compensate = function() compensated = compensated + 1 end })
        e:step("b" .. i, function()
          scimrun.sleep(0.01)
          if i >= 6 then return nil, { class = "auth", status = 401, op = "users.create", detail = "expired" } end
          return true
        end)
      end)
    end)
    assert.is_false(ok)
    assert.are.equal("auth", err.class)
    assert.are.equal(401, err.status)
    assert.is_true(started <= 10, started .. " items started")
    assert.are.equal(0, db:dlq_count {})
    assert.are.equal(0, compensated)
    assert.are.equal(0, e.stats.failed)
    assert.is_true(e.stats.auth_stopped >= 1 and e.stats.auth_stopped <= 4)
    local steps = db:steps_load("r-1")
    assert.are.equal("completed", steps.a6.state)
    assert.are.equal("started", steps.b6.state) -- not failed: a resume runs it again
  end)
end)

describe("the sandbox's POST /_admin/token", function()
  it("rotates or revokes the SCIM token; the admin endpoints keep the starting one; reset restores it", function()
    local sb = assert(require("scimrun.sandbox").new { token = "start-token" })
    local function req(method, path, token, body)
      local res = sb:handle { method = method, path = path, query = "",
        headers = { authorization = token and ("Bearer " .. token) or nil, ["content-type"] = "application/json" },
        body = body and cjson.encode(body) or nil }
      return res.status, res.body and res.body ~= "" and cjson.decode(res.body) or nil
    end
    assert.are.equal(200, (req("GET", "/scim/v2/Users", "start-token")))
    assert.are.equal(200, (req("POST", "/_admin/token", "start-token", { token = "second-token" })))
    assert.are.equal(401, (req("GET", "/scim/v2/Users", "start-token")))
    assert.are.equal(200, (req("GET", "/scim/v2/Users", "second-token")))
    assert.are.equal(401, (req("GET", "/_admin/stats", "second-token")))
    assert.are.equal(200, (req("GET", "/_admin/stats", "start-token")))
    -- a token without the scope: 403
    assert.are.equal(200, (req("POST", "/_admin/token", "start-token", { token = "third-token", status = 403 })))
    local status, body = req("GET", "/scim/v2/Users", "second-token")
    assert.are.equal(403, status)
    assert.matches("insufficient_scope", body.detail)
    -- revoked: nothing is accepted
    local st, res = req("POST", "/_admin/token", "start-token", { token = cjson.null })
    assert.are.equal(200, st)
    assert.is_true(res.revoked)
    assert.are.equal(401, (req("GET", "/scim/v2/Users", "third-token")))
    assert.are.equal(401, (req("GET", "/scim/v2/Users", "start-token")))
    assert.are.equal(400, (req("POST", "/_admin/token", "start-token", { token = 5 })))
    assert.are.equal(400, (req("POST", "/_admin/token", "start-token", { token = "x", status = 500 })))
    sb:reset()
    assert.are.equal(200, (req("GET", "/scim/v2/Users", "start-token")))
    sb:close()
  end)
end)
