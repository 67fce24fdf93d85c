-- Worker mode (issue 16): several scimrun processes share one run kept in PostgreSQL. The suite
-- starts its own throwaway cluster (helpers.pg_cluster). Evidence comes from the provider's own
-- records (the sandbox in this process: its dump and its request counts), never from timing.
local cjson = require "cjson"
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"
local pg_cluster = require "helpers.pg_cluster"

local records = require "helpers.worker_records"
local try_query, query, provider_records = records.try_query, records.query, records.provider_records

-- the run the first worker recorded (its schema may not exist yet: polled)
local function run_id(url)
  local deadline = scimrun.now() + 30
  while scimrun.now() < deadline do
    local rows = try_query(url, "SELECT id FROM scimrun.runs ORDER BY seq DESC LIMIT 1")
    if rows and rows[1] then return rows[1].id end
    scimrun.sleep(0.1)
  end
  error("no run was recorded in 30 s")
end

local function wait_all_gone(pids, timeout)
  for _, pid in ipairs(pids) do assert(proc.wait_gone(pid, timeout), "worker " .. pid .. " did not finish") end
end

describe("workers sharing one run in PostgreSQL", function()
  local cluster, srv, dir
  setup(function()
    assert(pg_cluster.available())
    cluster = pg_cluster.start()
    srv = sbrun.sandbox()
    dir = proc.tmpdir("workers")
  end)
  teardown(function()
    if srv then srv.close() end
    if cluster then cluster.stop() end
    if dir then os.execute("rm -rf " .. proc.sh_quote(dir)) end
  end)
  before_each(function() sbrun.fresh(srv) end)

  it("writes each of 2,000 users exactly once while workers are killed with SIGKILL and replaced", function()
    sbrun.faults(srv, "503:0.03,lost:0.01,reset:0.01", 7)
    local url = cluster.createdb("kills")
    local users = dir .. "/users.csv"
    local code, out, err = proc.run("-l examples/data/generate.lua --rows 2000 --out " .. users)
    assert.are.equal(0, code, out .. err)
    local log = dir .. "/kills.log"
    local args = ("examples/onboard.lua --state '%s' --worker --lease 2 --policy fast-test --continue-on-error "
      .. "--param csv=%s --param concurrency=16"):format(url, users)
    local live = { proc.spawn(args, srv.env, log) }
    local id = run_id(url)
    local resume = args .. " --resume " .. id
    live[2] = proc.spawn(resume, srv.env, log)
    live[3] = proc.spawn(resume, srv.env, log)
    math.randomseed(os.time())
    local kills, all = 0, { live[1], live[2], live[3] }
    while kills < 10 do
      scimrun.sleep(0.2 + math.random() * 0.5)
      local alive = {}
      for _, pid in ipairs(live) do if proc.alive(pid) then alive[#alive + 1] = pid end end
      if #alive == 0 then break end -- the run finished
      local victim = alive[math.random(#alive)]
      os.execute("kill -9 " .. victim)
      assert.is_true(proc.wait_gone(victim, 10))
      kills = kills + 1
      live = {}
      for _, pid in ipairs(alive) do if pid ~= victim then live[#live + 1] = pid end end
      local fresh = proc.spawn(resume, srv.env, log)
      live[#live + 1] = fresh
      all[#all + 1] = fresh
    end
    wait_all_gone(all, 300)
    -- one more worker finishes whatever the last kills left (or says the run is complete)
    local fcode, fout, ferr = proc.run_bg(dir, resume, srv.env, 300)
    assert.are.equal(0, fcode, fout .. ferr .. proc.read_all(log):sub(-3000))
    assert.is_true(kills >= 6, "only " .. kills .. " kills happened: the run was too fast to test")

    -- every user of the CSV at the provider once, every account in the group once
    records.assert_each_user_once(srv, users, "Engineering")
    -- each account was created by one request: no create was sent again for a user that exists
    local stats = sbrun.stats(srv)
    -- (the group is the one other create; a "lost" answer was applied, then the connection closed)
    assert.are.equal(2001, (stats.by_status["POST 201"] or 0) + (stats.by_status["POST 201 lost"] or 0))
    -- the database agrees: every item done, no claim left
    local rows = query(url, "SELECT state, count(*) AS n FROM scimrun.items WHERE run_id = $1 GROUP BY state", id)
    assert.are.same({ { state = "done", n = 2000 } }, rows)
    local wrows = query(url, "SELECT count(*) AS n FROM scimrun.workers WHERE run_id = $1", id)
    assert.is_true(wrows[1].n >= 3 + kills)
    -- what every worker has done of the run's batch, which a worker's progress shows (at each
    -- heartbeat) instead of its own share against the whole input
    local conn = assert(require("scimrun.pg").connect(url))
    local ok, done = pcall(require("scimrun.worker.claims").done_count, conn, id, { "each:1" })
    conn:close()
    assert(ok, done)
    assert.are.equal(2000, tonumber(done))
  end)

  it("two workers together stay within the provider's limit R given in the policy", function()
    local rate = 40
    sbrun.faults(srv, ("ratelimit:%d/s"):format(rate), 1)
    local url = cluster.createdb("shared_rate")
    local users = dir .. "/users300.csv"
    assert.are.equal(0, (proc.run("-l examples/data/generate.lua --rows 300 --out " .. users)))
    local pol = proc.write(dir .. "/rps.lua", ("return { extends = 'fast-test', rate_limit = { rps = %d, burst = 1, "
      .. "adaptive = false } }"):format(rate))
    local args = ("examples/onboard.lua --state '%s' --worker --lease 3 --policy %s --continue-on-error "
      .. "--param csv=%s --param concurrency=16"):format(url, pol, users)
    local log = dir .. "/rate.log"
    local t0 = scimrun.now()
    local a = proc.spawn(args, srv.env, log)
    local id = run_id(url)
    local b = proc.spawn(args .. " --resume " .. id, srv.env, log)
    wait_all_gone({ a, b }, 120)
    local elapsed = scimrun.now() - t0
    local stats = sbrun.stats(srv)
    local refused = 0
    for k, n in pairs(stats.by_status) do if k:match(" 429$") then refused = refused + n end end
    -- both workers took part
    local workers = query(url, "SELECT count(DISTINCT loaded_by) AS loaders, (SELECT count(*) FROM scimrun.workers "
      .. "WHERE run_id = $1) AS n FROM scimrun.item_loads WHERE run_id = $1", id)
    assert.are.equal(2, workers[1].n)
    local accounts = provider_records(srv, "Engineering")
    local n = 0
    for _ in pairs(accounts) do n = n + 1 end
    assert.are.equal(300, n, proc.read_all(log):sub(-3000))
    -- what `scimrun ui` shows of the run counts every worker's users, each once (the workers
    -- write a row each; the console showed the last writer's counts as the run's)
    local db = assert(require("scimrun.state").open(url, { readonly = true }))
    local rec = require("scimrun.ui.record").read(db, id)
    db:close()
    -- (a user whose lease ran out under load is adopted by the other worker: counted once too)
    assert.are.same({ 2, 300, true }, { rec.workers, rec.outcomes.created + rec.outcomes.adopted, rec.finished })
    -- the provider's bucket (R per second, full at the start) refused nothing: the two workers
    -- together never sent faster than R
    assert.are.equal(0, refused, cjson.encode(stats.by_status))
    assert.is_true(stats.requests <= rate * elapsed + rate,
      ("%d requests in %.1f s is more than %d/s"):format(stats.requests, elapsed, rate))
  end)
end)
