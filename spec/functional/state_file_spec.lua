-- What the state file keeps and who may read it (issue 12 items 4 and 8): a step result too big
-- to store fails that step, naming it and its size, and is never recorded done; a pre-existing
-- state file readable by other users is tightened to 0600 (with its -wal/-shm), saying so.
local proc = require "helpers.proc"

local q, sh = proc.sh_quote, proc.sh

local function mode_of(path) return (sh("stat -c %a " .. q(path) .. " 2>/dev/null"):gsub("%s+$", "")) end

describe("the state file", function()
  local dir
  setup(function() dir = proc.tmpdir("state_file") end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  it("fails a step whose result is over the store's limit, and never records it done", function()
    local state = dir .. "/big.db"
    local args = "spec/fixtures/workflows/big_result.lua --state " .. q(state)
    local code, out, err = proc.run(args)
    assert.are.equal(1, code, out .. err)
    local msg = 'the result of step "big" is 20971528 bytes, over the state file\'s limit of 16777216 bytes'
    assert.matches(msg, out .. err, 1, true)
    local rows = sh("sqlite3 " .. q(state) .. " \"select key, state, result_json is null from steps order by key\"")
    assert.are.equal("big|failed|1\nsmall|completed|0\n", rows)

    -- resuming replays the failure; it never hands back nil for the step
    code, out, err = proc.run(args .. " --resume")
    assert.are.equal(1, code, out .. err)
    assert.matches(msg, out .. err, 1, true)
    code, out, err = proc.run(args .. " --resume --retry-failed")
    assert.are.equal(1, code, out .. err)
    assert.matches(msg, out .. err, 1, true)
    assert.are.equal("", sh("sqlite3 " .. q(state) .. " \"select key from steps where key = 'after'\""))
    assert.are.equal("ok\n", sh("sqlite3 " .. q(state) .. " 'pragma integrity_check'"))
  end)

  it("tightens a pre-existing state file readable by others to 0600, saying so", function()
    local state = dir .. "/loose.db"
    local args = "spec/fixtures/workflows/hello.lua --state " .. q(state)
    local code, out, err = proc.run(args)
    assert.are.equal(0, code, out .. err)
    assert.are.equal("600", mode_of(state))
    os.execute("chmod 644 " .. q(state))
    code, out, err = proc.run("runs list --state " .. q(state)) -- a reader changes nothing
    assert.are.equal(0, code, out .. err)
    assert.are.equal("644", mode_of(state))

    code, out, err = proc.run(args)
    assert.are.equal(0, code, out .. err)
    assert.are.equal("600", mode_of(state))
    assert.matches("info%s+state file was readable by other users: mode tightened to 0600 file=" ..
      state:gsub("%p", "%%%0") .. " was=0644", err)
    -- once tight, nothing more is said
    code, out, err = proc.run(args)
    assert.are.equal(0, code, out .. err)
    assert.is_nil(err:find("tightened", 1, true))
  end)

  it("tightens the write-ahead log files a crashed run left behind", function()
    local state = dir .. "/crashed.db"
    local pid = proc.spawn("spec/fixtures/workflows/slow_steps.lua --param n=1000 --state " .. q(state))
    scimrun.sleep(0.5)
    os.execute("kill -9 " .. pid)
    assert.is_true(proc.wait_gone(pid, 10))
    for _, f in ipairs { state, state .. "-wal", state .. "-shm" } do
      assert.is_truthy(io.open(f), f .. " missing")
      os.execute("chmod 644 " .. q(f))
    end
    local code, out, err = proc.run("spec/fixtures/workflows/slow_steps.lua --param n=3 --state " .. q(state))
    assert.are.equal(0, code, out .. err)
    assert.matches("file=" .. state:gsub("%p", "%%%0") .. "%-wal was=0644", err)
    assert.matches("file=" .. state:gsub("%p", "%%%0") .. "%-shm was=0644", err)
    assert.are.equal("600", mode_of(state))
  end)
end)

describe("a corrupted state file", function()
  it("is refused by runs list in one line with exit 2, and left untouched", function()
    local dir = proc.tmpdir("corrupt")
    local state = dir .. "/s.db"
    assert.are.equal(0, (proc.run(("spec/fixtures/workflows/hello.lua --state %s"):format(q(state)))))
    -- garbage over the second page (a b-tree page of the schema's tables)
    sh(("python3 -c 'f = open(\"%s\", \"r+b\"); f.seek(5000); f.write(bytes(range(256)) * 12); f.close()'")
      :format(state))
    local before = sh("md5sum " .. q(state))
    local code, out, err = proc.run("runs list --state " .. q(state))
    assert.are.equal(2, code, out .. err)
    assert.matches("is corrupted", err)
    assert.are.equal(1, select(2, err:gsub("\n", "")), err)
    assert.is_nil(err:find("traceback", 1, true))
    assert.are.equal(before, sh("md5sum " .. q(state)))
    os.execute("rm -rf " .. q(dir))
  end)
end)
