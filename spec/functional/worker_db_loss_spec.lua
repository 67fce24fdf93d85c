-- A worker whose PostgreSQL database goes away mid-run (issue 16): the store retries the
-- connection with backoff (its log says so); a database that stays away past the store's
-- retry window ends the worker with an exit code that is not 0 and the command that resumes
-- the run, with nothing recorded lost; a database back within the window lets the worker go on
-- by itself. The spec stops and starts its own throwaway cluster (helpers.pg_cluster:
-- stop_server is `pg_ctl -m fast stop`); the provider is a sandbox in this process, whose
-- records are the evidence.
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"
local pg_cluster = require "helpers.pg_cluster"

local q = proc.sh_quote
local ROWS = 300

local records = require "helpers.worker_records"
local query = records.query

-- Every user of the CSV is at the provider exactly once, in the group exactly once.
local function assert_each_user_once(srv, csv)
  local dump = records.assert_each_user_once(srv, csv, "Engineering")
  assert.are.equal(ROWS, #dump.users)
end

-- Waits (yielding: the sandbox answers meanwhile) until the provider has created n users.
local function wait_created(srv, h, n)
  local deadline = scimrun.now() + 60
  while scimrun.now() < deadline do
    if (sbrun.stats(srv).by_status["POST 201"] or 0) >= n + 1 then return end -- + the group
    if proc.read_all(h.rcfile):match("%d") then error("the worker ended early:\n" .. proc.read_all(h.log)) end
    scimrun.sleep(0.05)
  end
  error("the worker created fewer than " .. n .. " users in 60 s:\n" .. proc.read_all(h.log))
end

describe("a worker whose database goes away", function()
  local cluster, srv, dir, users
  setup(function()
    assert(pg_cluster.available())
    cluster = pg_cluster.start()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("dbloss")
    users = dir .. "/users.csv"
    local code, out, err = proc.run(("-l examples/data/generate.lua --rows %d --out %s"):format(ROWS, users))
    assert.are.equal(0, code, out .. err)
  end)
  teardown(function()
    if srv then srv.close() end
    if cluster then cluster.stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)
  before_each(function()
    sbrun.fresh(srv)
    -- slow enough that the outage lands mid-run
    sbrun.faults(srv, "latency:30ms", 1)
  end)

  local function worker_args(url)
    return ("examples/onboard.lua --state %s --worker --policy fast-test --param csv=%s --param concurrency=4")
      :format(q(url), users)
  end

  it("gives up after the store's retry window, says how to resume, and a --worker --resume finishes it", function()
    local url = cluster.createdb("gone")
    local h = sbrun.spawn(worker_args(url), srv.env)
    wait_created(srv, h, 40)
    cluster.stop_server()
    local down = true
    finally(function() -- the server comes back for the next test whatever happened here
      if down then cluster.start_server() end
    end)
    local code, out = sbrun.wait(h, 300)
    -- the database never came back: the worker retried with backoff, then stopped
    assert.is_true(code ~= 0 and code ~= 130, "exit " .. tostring(code) .. ":\n" .. out)
    assert.matches("state database connection lost; reconnecting", out)
    local attempts = 0
    for n in out:gmatch("reconnecting[^\n]-attempt=(%d+)") do attempts = math.max(attempts, tonumber(n)) end
    assert.is_true(attempts >= 4, "backoff attempts logged: " .. attempts)
    assert.matches("could not be restored in %d+ s", out)
    -- one retry window, not one more for every statement the stopping worker still makes
    local _, windows = out:gsub("reconnecting[^\n]-attempt=2%f[^%d]", "")
    assert.are.equal(1, windows, out)
    assert.is_nil(out:find("connection restored", 1, true))
    local resume = out:match("resume with: (scimrun [^\n]+)")
    assert.is_truthy(resume, out)
    local id = assert(resume:match("%-%-resume (r%-%d+%-%d+%-%x+)"), resume)
    assert.matches("--state " .. q(url), resume, 1, true)
    local before = sbrun.stats(srv).by_status["POST 201"] - 1

    -- back up: what was recorded before the loss is all there
    cluster.start_server()
    down = false
    -- (its status could not be written: the run is left "running", unfinished, which a resume takes)
    local lcode, list, lerr = proc.run("runs list --state " .. q(url))
    assert.are.equal(0, lcode, list .. lerr)
    assert.matches(id:gsub("%-", "%%-") .. "%s+running%s", list)
    local recorded = query(url, "SELECT count(*) AS n FROM scimrun.steps WHERE run_id = $1 AND key LIKE 'user:%' "
      .. "AND state = 'completed'", id)[1].n
    assert.is_true(recorded >= 40 and recorded <= before,
      ("%d user steps recorded, %d users created"):format(recorded, before))
    local finished = query(url, "SELECT count(*) AS n FROM scimrun.items WHERE run_id = $1 AND state = 'done'", id)[1].n
    assert.is_true(finished > 0 and finished <= recorded, ("%d items done, %d user steps"):format(finished, recorded))

    -- the worker's resume finishes the run: the items not done yet, and no other; every user at
    -- the provider exactly once
    local rcode, rout = sbrun.run(worker_args(url) .. " --resume " .. id, srv.env, 180)
    assert.are.equal(0, rcode, rout)
    assert.matches("run " .. id:gsub("%-", "%%-") .. " completed", rout)
    assert.matches(("items%%s+%d: %d succeeded"):format(ROWS - finished, ROWS - finished), rout)
    assert_each_user_once(srv, users)
    assert.are.same({ { state = "done", n = ROWS } },
      query(url, "SELECT state, count(*) AS n FROM scimrun.items WHERE run_id = $1 GROUP BY state", id))

    -- the printed resume command resumes the run as it ran: as a worker (a plain resume would
    -- run as a single unfenced process beside the other workers)
    assert.matches("--worker", resume, 1, true)
  end)

  it("goes on by itself when the database is back within the window, and the run completes", function()
    local url = cluster.createdb("back")
    local h = sbrun.spawn(worker_args(url), srv.env)
    wait_created(srv, h, 40)
    cluster.stop_server()
    scimrun.sleep(2)
    cluster.start_server()
    local code, out = sbrun.wait(h, 180)
    assert.are.equal(0, code, out)
    assert.matches("state database connection lost; reconnecting", out)
    assert.matches("state database connection restored", out)
    assert.matches(("items%%s+%d: %d succeeded"):format(ROWS, ROWS), out)
    assert_each_user_once(srv, users)
    local id = assert(out:match("run (r%-%d+%-%d+%-%x+) completed"), out)
    assert.are.same({ { state = "done", n = ROWS } },
      query(url, "SELECT state, count(*) AS n FROM scimrun.items WHERE run_id = $1 GROUP BY state", id))
    assert.are.equal("completed", query(url, "SELECT status FROM scimrun.runs WHERE id = $1", id)[1].status)
  end)
end)
