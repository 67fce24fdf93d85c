-- The policy's on_event hooks (lua/scimrun/observe/hooks.lua): dead_letter, breaker_open and
-- run_finished, each called under the policy guard with `tools`, whose post() reaches a webhook
-- (here a server in this process, so the run goes in the background while it answers). The
-- older dead_letter.on_dead_letter keeps being called beside them.
local cjson = require "cjson"
local hs = require "scimrun.httpserver"
local proc = require "helpers.proc"

local dir = proc.tmpdir("hooks")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local cwd = io.popen("pwd"):read("*l")
local write = proc.write

-- A provider that is down: the breaker opens and stays open past max_open (1 s), so every item
-- ends as a dead letter quickly. breaker_open posts, then fails on purpose: the guard logs it
-- and the run goes on.
local POLICY = write(dir .. "/hooks.lua", ([[
return { extends = "%s/policies/fast-test.lua",
  breaker = { failures = 0, failure_rate = 0.5, window = 10, min_calls = 5, cooldown = 0.2,
              cooldown_multiplier = 2, max_cooldown = 0.4, max_open = 1 },
  dead_letter = { on_dead_letter = function(e) error("legacy hook saw " .. e.step_key, 0) end },
  on_event = {
    dead_letter = function(e, tools)
      tools.post(os.getenv("HOOK_URL"), { kind = "dead_letter", id = e.id, step = e.step_key, class = e.class,
                                          op = e.operation })
    end,
    breaker_open = function(b, tools)
      tools.post(os.getenv("HOOK_URL"), { kind = "breaker_open", target = b.target, cooldown = b.cooldown })
      error("breaker hook fails after posting", 0)
    end,
    run_finished = function(r, tools)
      tools.log("info", "run_finished hook", { status = r.status })
      tools.post(os.getenv("HOOK_URL"), { kind = "run_finished", status = r.status, exit_code = r.exit_code,
                                          dead_lettered = r.summary.dead_lettered, items = r.summary.items })
    end,
  },
}
]]):format(cwd))

describe("on_event hooks", function()
  it("post dead letters, the breaker's opening and the run's end to a webhook; a failing hook is logged", function()
    local posts = {}
    local srv = assert(hs.listen { host = "127.0.0.1", port = 0, handler = function(req)
      posts[#posts + 1] = { path = req.path, type = req.headers["content-type"], body = cjson.decode(req.body) }
      return { status = 200, body = "ok" }
    end })
    local url = srv:url() .. "/hook/T0KEN-in-path"
    local code, out, err = proc.run_bg(dir, ("spec/fixtures/workflows/down.lua --param n=6 --sandbox='500:1' "
      .. "--policy %s --state %s/down.db --continue-on-error --progress never"):format(POLICY, dir),
      "HOOK_URL=" .. proc.sh_quote(url))
    srv:close()
    assert.are.equal(3, code, out .. err)
    local by = {}
    for _, p in ipairs(posts) do
      assert.are.equal("/hook/T0KEN-in-path", p.path)
      assert.are.equal("application/json", p.type)
      by[p.body.kind] = by[p.body.kind] or {}
      table.insert(by[p.body.kind], p.body)
    end
    -- one post per dead letter, with what the queue holds
    assert.are.equal(6, #(by.dead_letter or {}), out .. err)
    local steps = {}
    for _, d in ipairs(by.dead_letter) do
      steps[d.step] = true
      assert.is_number(d.id)
      assert.is_string(d.class)
    end
    for i = 1, 6 do assert.is_true(steps[("user:down.user%03d"):format(i)], "dead letter of user " .. i) end
    -- the breaker opened once for this outage (the failed half-open probes re-open it: no new post)
    assert.are.equal(1, #(by.breaker_open or {}), out .. err)
    assert.matches("^127%.0%.0%.1:%d+$", by.breaker_open[1].target)
    -- the run's end, after everything else
    assert.are.equal(1, #(by.run_finished or {}), out .. err)
    local fin = by.run_finished[1]
    assert.are.same({ kind = "run_finished", status = "completed_with_dead_letters", exit_code = 3, dead_lettered = 6,
                      items = 6 }, fin)
    assert.are.equal("run_finished", posts[#posts].body.kind)
    -- the guard: a hook that raises is a warning, the run went on; the legacy hook still runs
    assert.matches("on_event.breaker_open hook failed.-breaker hook fails after posting", err)
    assert.matches("on_dead_letter hook failed.-legacy hook saw user:down.user001", err)
    assert.matches("run_finished hook", err)
    -- the webhook's URL is never logged
    assert.is_nil((out .. err):find("T0KEN", 1, true))
  end)

  it("a post that fails is logged by host only, and the run's exit code is unchanged", function()
    local pol = write(dir .. "/unreachable.lua", ([[
return { extends = "%s/policies/fast-test.lua",
  on_event = { run_finished = function(r, tools) tools.post("http://127.0.0.1:9/secret-path", { s = r.status }) end } }
]]):format(cwd))
    local code, out, err = proc.run(("spec/fixtures/workflows/down.lua --param n=2 --sandbox --policy %s "
      .. "--state %s/ok.db --progress never"):format(pol, dir))
    assert.are.equal(0, code, out .. err)
    assert.matches("on_event: a post failed.-host=127%.0%.0%.1:9", err)
    assert.is_nil(err:find("secret-path", 1, true))
  end)

  it("are checked like every policy key: a misspelt event is refused with a suggestion", function()
    local pol = write(dir .. "/typo.lua", ([[
return { extends = "%s/policies/fast-test.lua", on_event = { dead_leter = function() end } }
]]):format(cwd))
    local code, out, err = proc.run("policy check " .. pol)
    assert.are.equal(2, code, out .. err)
    assert.matches("on_event%.dead_leter", out .. err)
    assert.matches("dead_letter", out .. err)
    pol = write(dir .. "/notfn.lua", ([[
return { extends = "%s/policies/fast-test.lua", on_event = { run_finished = "post" } }
]]):format(cwd))
    code, out, err = proc.run("policy check " .. pol)
    assert.are.equal(2, code, out .. err)
    assert.matches("on_event%.run_finished", out .. err)
  end)
end)
