-- The binary as a user meets it: version, bad input with a one-line reason and exit code 2.
local proc = require "helpers.proc"

describe("scimrun command line", function()
  local dir
  setup(function() dir = proc.tmpdir("cli") end)

  it("prints the versions it runs with", function()
    local code, out = proc.run("--version")
    assert.are.equal(0, code)
    for _, what in ipairs { "scimrun %d+%.%d+", "LuaJIT 2%.1", "libuv %d", "libcurl %d", "SQLite 3" } do
      assert.matches(what, out)
    end
  end)

  local function one_line_error(code, out, err, pattern)
    assert.are.equal(2, code, out .. err)
    local lines = select(2, err:gsub("\n", ""))
    assert.are.equal(1, lines, "expected one line, got: " .. err)
    assert.matches(pattern, err)
  end

  it("refuses a missing workflow file", function()
    local code, out, err = proc.run("no/such/workflow.lua --state " .. dir .. "/s.db")
    one_line_error(code, out, err, "cannot open workflow no/such/workflow%.lua")
  end)

  it("shows file and line of a Lua syntax error", function()
    local code, out, err = proc.run("spec/fixtures/bad/syntax_error.lua --state " .. dir .. "/s.db")
    one_line_error(code, out, err, "syntax_error%.lua:4:")
  end)

  it("refuses a file that does not return a workflow", function()
    local code, out, err = proc.run("spec/fixtures/bad/not_a_workflow.lua --state " .. dir .. "/s.db")
    one_line_error(code, out, err, "does not return a workflow")
  end)

  it("refuses an unknown option", function()
    local code, out, err = proc.run("spec/fixtures/workflows/hello.lua --frobnicate")
    one_line_error(code, out, err, "unknown option %-%-frobnicate")
  end)

  it("refuses an unknown parameter, naming the known ones", function()
    local code, out, err = proc.run("spec/fixtures/workflows/hello.lua --param colour=red --state " .. dir .. "/s.db")
    one_line_error(code, out, err, "unknown parameter \"colour\" %(this workflow takes: times, who%)")
  end)

  it("names the workflow line and the missing setting when the provider is not configured", function()
    local code, out, err = proc.run("examples/onboard.lua --state " .. dir .. "/nocfg.db",
      "env -u SCIM_BASE_URL -u SCIM_TOKEN")
    one_line_error(code, out, err,
      "onboard%.lua:%d+: scim%.connect: base_url .*set SCIM_BASE_URL, or run with %-%-sandbox")
  end)

  it("refuses a bad fault spec or policy before touching the state file", function()
    local state = dir .. "/untouched/s.db"
    local code, out, err = proc.run("examples/onboard.lua --sandbox=explode:0.3 --state " .. state)
    one_line_error(code, out, err, "unknown kind 'explode'")
    code, out, err = proc.run("examples/onboard.lua --policy no-such-policy --state " .. state)
    one_line_error(code, out, err, "no policy 'no%-such%-policy'")
    assert.is_nil(io.open(state))
  end)

  it("refuses a missing script for -l", function()
    local code, out, err = proc.run("-l /nonexistent/script.lua")
    one_line_error(code, out, err, "cannot open script")
  end)

  it("exits non-zero when a task of a script fails", function()
    local script = dir .. "/fails.lua"
    local f = assert(io.open(script, "w"))
    f:write('scimrun.spawn(function() error("task blew up") end)\nscimrun.sleep(0.01)\n')
    f:close()
    local code, _, err = proc.run("-l " .. script)
    assert.are.equal(1, code)
    assert.matches("task blew up", err)
    assert.matches("stack traceback", err)
  end)

  it("runs a workflow, then says a finished run has nothing to resume", function()
    local state = dir .. "/hello.db"
    local code, out, err = proc.run("spec/fixtures/workflows/hello.lua --state " .. state)
    assert.are.equal(0, code, out .. err)
    assert.matches("completed", out)
    local code2, out2 = proc.run("spec/fixtures/workflows/hello.lua --resume --state " .. state)
    assert.are.equal(0, code2) -- the newest run completed: nothing to resume (issue 11, item 4)
    assert.matches("already completed; nothing to resume", out2)
    local code3, out3 = proc.run("runs list --state " .. state)
    assert.are.equal(0, code3)
    assert.matches("completed", out3)
    local id = out3:match("(r%-%d+%-%d+%-%x+)")
    local code4, out4 = proc.run("spec/fixtures/workflows/hello.lua --resume " .. id .. " --state " .. state)
    assert.are.equal(0, code4)
    assert.matches("nothing to resume", out4)
    assert.is_string(out2)
  end)

  it("creates the state file readable by its owner only", function()
    local state = dir .. "/mode.db"
    proc.run("spec/fixtures/workflows/hello.lua --state " .. state)
    local p = io.popen("stat -c %a " .. state)
    local mode = p:read("*l")
    p:close()
    assert.are.equal("600", mode)
  end)
end)

describe("logging", function()
  it("writes JSON lines with --log-format json, and never the token", function()
    local dir = proc.tmpdir("log")
    local token = "tok-secret-" .. math.random(1e6, 9e6)
    local code, out, err = proc.run("examples/onboard.lua --sandbox=503:0.1 --policy fast-test --log-format json"
      .. " --state " .. dir .. "/s.db", "SCIM_TOKEN=" .. token)
    assert.are.equal(0, code, out .. err)
    local cjson = require "cjson"
    local lines = 0
    for line in err:gmatch("[^\n]+") do
      local ok, rec = pcall(cjson.decode, line)
      assert.is_true(ok, "not JSON: " .. line)
      assert.is_string(rec.level)
      assert.is_string(rec.msg)
      lines = lines + 1
    end
    assert.is_true(lines > 0, "a 10% failure rate must log retries")
    assert.is_nil((out .. err):find(token, 1, true))
    assert.is_nil(proc.read_all(dir .. "/s.db"):find(token, 1, true))
  end)
end)

describe("scimrun runs", function()
  it("shows a run's status, step counts, timestamps and resume command, as text and JSON", function()
    local dir = proc.tmpdir("runs")
    local state = dir .. "/s.db"
    local marker = dir .. "/never"
    local code = proc.run("spec/fixtures/workflows/steps.lua --param mode=fail_once --param marker=" .. marker
      .. " --state " .. state, "KV_BASE_URL=http://127.0.0.1:1")
    assert.are.equal(1, code)
    local _, list = proc.run("runs list --state " .. state)
    local id = assert(list:match("(r%-%d+%-%d+%-%x+)"))
    assert.matches("failed", list)
    local scode, show = proc.run("runs show " .. id .. " --state " .. state)
    assert.are.equal(0, scode)
    assert.matches("status +failed", show)
    assert.matches("steps +0 completed, 1 failed", show)
    assert.matches("resume +scimrun .*steps%.lua %-%-resume " .. id:gsub("%-", "%%-"), show)
    local jcode, json = proc.run("runs show " .. id .. " --json --state " .. state)
    assert.are.equal(0, jcode)
    local r = require("cjson").decode(json)
    assert.are.equal(id, r.id)
    assert.are.equal(1, r.steps.failed)
    assert.is_number(r.created_at)
    local ucode, _, uerr = proc.run("runs show r-nope --state " .. state)
    assert.are.equal(2, ucode)
    assert.matches("no run r%-nope", uerr)
  end)
end)

describe("bad option values", function()
  local cases = {
    { "--seed abc", "%-%-seed must be a whole number.*got abc" },
    { "--seed 1.5", "%-%-seed must be a whole number.*got 1.5" },
    { "--allow-deletes nan", "%-%-allow%-deletes must be a whole number >= 0.*got nan" },
    { "--allow-deletes inf", "%-%-allow%-deletes must be a whole number >= 0.*got inf" },
    { "--log-level chatty", "%-%-log%-level must be debug, info, warn or error, got chatty" },
  }
  for _, c in ipairs(cases) do
    it(c[1] .. ": exit 2, one line naming the option, no traceback", function()
      local code, out, err = proc.run(("spec/fixtures/workflows/hello.lua --state %s/opt-%d.db %s")
        :format(os.getenv("SCIMRUN_TEST_TMP") or "/tmp", math.random(1e9), c[1]))
      assert.are.equal(2, code, out .. err)
      assert.matches(c[2], err)
      assert.is_nil(err:find("traceback", 1, true))
      local lines = select(2, err:gsub("\n", ""))
      assert.are.equal(1, lines, err)
    end)
  end
end)

describe("--resume with another workflow's run", function()
  it("is refused with exit 2, also with --force, and nothing of the other workflow runs", function()
    local dir = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/wrongwf-" .. math.random(1e9)
    os.execute("mkdir -p '" .. dir .. "'")
    local state = dir .. "/s.db"
    local code, out, err = proc.run(("spec/fixtures/workflows/hello.lua --state %s --param times=1"):format(state))
    assert.are.equal(0, code, out .. err)
    local id = out:match("run (r%-[%w%-]+) completed")
    assert.is_string(id, out)
    -- mark it unfinished as a crash would leave it, so there is something to resume
    local db = assert(require("scimrun.store").open(state))
    db:run_set_status(id, "interrupted", 130)
    db:close()
    for _, extra in ipairs({ "", "--force" }) do
      code, out, err = proc.run(("spec/fixtures/workflows/steps.lua --state %s --resume %s %s")
        :format(state, id, extra))
      assert.are.equal(2, code, out .. err)
      assert.matches("belongs to workflow \"hello\"", err)
    end
    local steps = require("helpers.sbrun").steps(state, id)
    for key in pairs(steps) do assert.matches("^greet:", key) end
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("--resume --param", function()
  it("refuses a value that would change the run's parameters, accepts the recorded one", function()
    local dir = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/resume-param-" .. math.random(1e9)
    os.execute("mkdir -p '" .. dir .. "'")
    local state = dir .. "/s.db"
    local code, out = proc.run(("spec/fixtures/workflows/hello.lua --state %s --param who=ann"):format(state))
    assert.are.equal(0, code, out)
    local id = out:match("run (r%-[%w%-]+) completed")
    local db = assert(require("scimrun.store").open(state))
    db:run_set_status(id, "interrupted", 130)
    db:close()
    local err
    code, out, err = proc.run(("spec/fixtures/workflows/hello.lua --state %s --resume %s --param who=bob")
      :format(state, id))
    assert.are.equal(2, code, out .. err)
    local pattern = "%-%-param who=bob cannot change run " .. id:gsub("%-", "%%-") .. ", which started with who=ann"
    assert.matches(pattern, err)
    code, out, err = proc.run(("spec/fixtures/workflows/hello.lua --state %s --resume %s --param who=ann")
      :format(state, id))
    assert.are.equal(0, code, out .. err)
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
