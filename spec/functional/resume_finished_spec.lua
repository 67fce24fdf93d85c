-- `--resume` when there is nothing left to do (issue 11, item 4). A crash-recovery loop
-- (`until scimrun wf.lua --resume; do sleep 5; done`) must end once the run has completed, even
-- when the process was killed after its last commit and before it exited: `--resume` with or
-- without an id says the run already completed and exits 0. With no run of the workflow at all
-- in the state file, `--resume` starts one (the loop's first pass then does the work).
local proc = require "helpers.proc"

local HELLO = "spec/fixtures/workflows/hello.lua"

local function runs(state)
  local db = assert(require("scimrun.store").open(state, { readonly = true }))
  local list = db:runs_list { limit = 10 }
  db:close()
  return list
end

describe("--resume of a workflow whose newest run completed", function()
  local dir
  setup(function() dir = proc.tmpdir("resume-done") end)

  it("exits 0 saying the run already completed, with an id or without", function()
    local state = dir .. "/done.db"
    local code, out, err = proc.run(HELLO .. " --state " .. state)
    assert.are.equal(0, code, out .. err)
    local id = runs(state)[1].id

    -- the state a kill after the last commit leaves: the newest run is recorded completed
    local code2, out2, err2 = proc.run(HELLO .. " --resume --state " .. state)
    assert.are.equal(0, code2, out2 .. err2)
    assert.matches("run " .. id:gsub("%-", "%%-") .. " already completed; nothing to resume", out2)

    local code3, out3, err3 = proc.run(HELLO .. " --resume " .. id .. " --state " .. state)
    assert.are.equal(0, code3, out3 .. err3)
    assert.matches("run " .. id:gsub("%-", "%%-") .. " already completed; nothing to resume", out3)

    -- nothing was started or re-run
    local list = runs(state)
    assert.are.equal(1, #list)
    assert.are.equal("completed", list[1].status)
  end)

  it("the newest run decides: an older unfinished run it superseded is not picked up", function()
    local state = dir .. "/superseded.db"
    local wf_path = require("scimrun.cli.runfiles").absolute(HELLO)
    local db = assert(require("scimrun.store").open(state))
    assert(db:run_create { id = "r-old-interrupted", workflow_name = "hello", workflow_path = wf_path,
      workflow_hash = "sha256:old" })
    assert(db:run_set_status("r-old-interrupted", "interrupted", 130))
    db:close()
    scimrun.sleep(0.01) -- the newer run is created later
    local code, out, err = proc.run(HELLO .. " --state " .. state)
    assert.are.equal(0, code, out .. err)

    local code2, out2, err2 = proc.run(HELLO .. " --resume --state " .. state)
    assert.are.equal(0, code2, out2 .. err2)
    assert.matches("already completed; nothing to resume", out2)
    for _, r in ipairs(runs(state)) do
      if r.id == "r-old-interrupted" then assert.are.equal("interrupted", r.status) end
    end
    -- resuming the old one stays possible, by id (its workflow hash differs: refused unless --force)
    local code3, out3, err3 = proc.run(HELLO .. " --resume r-old-interrupted --state " .. state)
    assert.are.equal(2, code3, out3 .. err3)
    assert.matches("refusing to resume r%-old%-interrupted", err3)
  end)
end)

describe("--resume of a workflow that never ran in this state file", function()
  it("starts a new run and says so", function()
    local state = proc.tmpdir("resume-none") .. "/fresh.db"
    local code, out, err = proc.run(HELLO .. " --resume --state " .. state)
    assert.are.equal(0, code, out .. err)
    assert.matches("no earlier run of .*hello%.lua in .*fresh%.db: starting a new run", out)
    assert.matches("completed", out)
    local list = runs(state)
    assert.are.equal(1, #list)
    assert.are.equal("completed", list[1].status)
  end)

  it("but a given id that does not exist is a usage error", function()
    local state = proc.tmpdir("resume-none") .. "/fresh.db"
    local code, _, err = proc.run(HELLO .. " --resume r-20990101-000000-000000 --state " .. state)
    assert.are.equal(2, code)
    assert.matches("no run r%-20990101%-000000%-000000", err)
  end)

  it("so a crash-recovery loop runs the workflow once and ends", function()
    local state = proc.tmpdir("resume-loop") .. "/loop.db"
    local script = ("n=0; until %s %s --resume --state %s >/dev/null 2>&1; do n=$((n+1)); "
      .. "[ $n -ge 3 ] && exit 7; done; exit 0"):format(proc.bin, HELLO, state)
    -- twice: the first pass starts the run, the second finds it completed
    for _ = 1, 2 do
      local p = io.popen("sh -c " .. proc.sh_quote(script) .. "; echo $?")
      local code = tonumber(p:read("*l"))
      p:close()
      assert.are.equal(0, code)
    end
    local list = runs(state)
    assert.are.equal(1, #list)
    assert.are.equal("completed", list[1].status)
  end)
end)
