-- One writer per state FILE, whatever name reaches it (issue 12 item 1): while a run writes the
-- state file, a second run through the same path, a hard link or a symbolic link is refused with
-- exit 2 and one line naming the file and the pid holding it; readers keep working; the database
-- stays intact. A file with two hard links is refused to writers afterwards (two names would mean
-- two write-ahead logs after a crash).
local proc = require "helpers.proc"

local WF = "spec/fixtures/workflows/slow_steps.lua"
local q, sh = proc.sh_quote, proc.sh

local function one_line(s)
  return (s:gsub("\n$", "")):find("\n") == nil
end

describe("the state file lock", function()
  local dir
  setup(function() dir = proc.tmpdir("state_lock") end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  it("refuses a second writer through the same path, a hard link and a symlink", function()
    local state = dir .. "/s.db"
    local log = dir .. "/holder.log"
    local pid = proc.spawn(WF .. " --param n=250 --param delay=0.02 --state " .. q(state), nil, log)
    -- the holder has recorded its run once `runs list` shows it
    local deadline = scimrun.now() + 15
    local listed
    repeat
      scimrun.sleep(0.05)
      local code, out = proc.run("runs list --state " .. q(state))
      listed = code == 0 and out:match("running")
    until listed or scimrun.now() > deadline
    assert.is_truthy(listed, "the holder did not start: " .. proc.read_all(log))

    os.execute(("ln %s %s"):format(q(state), q(dir .. "/hard.db")))
    os.execute(("ln -s s.db %s"):format(q(dir .. "/link.db")))
    for _, name in ipairs { "s.db", "hard.db", "link.db" } do
      local path = dir .. "/" .. name
      local code, out, err = proc.run(WF .. " --param n=3 --state " .. q(path))
      assert.are.equal(2, code, name .. ": " .. out .. err)
      assert.are.equal(("scimrun: state file %s is in use by another scimrun (pid %s)\n"):format(path, pid), err)
      assert.is_true(one_line(err))
    end
    -- the refused runs wrote nothing: no log beside the other names
    assert.is_nil(io.open(dir .. "/hard.db-wal"))
    assert.is_nil(io.open(dir .. "/link.db-wal"))
    assert.is_true(proc.alive(pid), "the holder finished before every name was tried: make it longer")

    -- readers need no lock
    local code, out, err = proc.run("runs list --state " .. q(state))
    assert.are.equal(0, code, out .. err)
    code, out, err = proc.run("runs list --state " .. q(dir .. "/link.db"))
    assert.are.equal(0, code, out .. err)
    assert.matches("slow%-steps", out)

    assert.is_true(proc.wait_gone(pid, 60))
    assert.matches("completed", proc.read_all(log))
    assert.are.equal("ok\n", sh("sqlite3 " .. q(state) .. " 'pragma integrity_check'"))
    assert.are.equal("250\n", sh("sqlite3 " .. q(state) .. " \"select count(*) from steps where state = 'completed'\""))

    -- two names for one file: refused to writers until one is left
    code, out, err = proc.run(WF .. " --param n=3 --state " .. q(dir .. "/hard.db"))
    assert.are.equal(2, code, out .. err)
    assert.matches("state file " .. dir:gsub("%p", "%%%0") .. "/hard%.db has 2 names %(hard links%)", err)
    assert.is_true(one_line(err))
    os.remove(dir .. "/hard.db")
    code, out, err = proc.run(WF .. " --param n=3 --state " .. q(dir .. "/link.db"))
    assert.are.equal(0, code, out .. err)
    assert.are.equal("ok\n", sh("sqlite3 " .. q(state) .. " 'pragma integrity_check'"))
  end)

  it("does not block after the holder is killed, through any name", function()
    local state = dir .. "/k.db"
    local pid = proc.spawn(WF .. " --param n=1000 --param delay=0.02 --state " .. q(state))
    scimrun.sleep(0.5)
    os.execute(("ln -s k.db %s"):format(q(dir .. "/k-link.db")))
    local code, out, err = proc.run(WF .. " --param n=3 --state " .. q(dir .. "/k-link.db"))
    assert.are.equal(2, code, out .. err)
    os.execute("kill -9 " .. pid)
    assert.is_true(proc.wait_gone(pid, 10))
    code, out, err = proc.run(WF .. " --param n=3 --state " .. q(dir .. "/k-link.db"))
    assert.are.equal(0, code, out .. err)
    assert.are.equal("ok\n", sh("sqlite3 " .. q(state) .. " 'pragma integrity_check'"))
  end)
end)
