-- The SQL of worker mode (issue 16): items of a run loaded once into scimrun.items, claimed in
-- batches with FOR UPDATE SKIP LOCKED, each claim a lease (database clock only) and a fencing
-- counter. Every function takes the PostgreSQL store (its query() survives a reset of the
-- connection: each statement here is safe to run twice) and returns what the query gives, or
-- raises a store error naming the statement (the caller's run then stops, resumable).
local cjson = require "cjson"
local errors = require "scimrun.errors"

local M = {}

M.CHANNEL = "scimrun_items" -- NOTIFY channel: items loaded, released or finished (payload: run id)

local function exec(db, what, sql, ...)
  local rows, affected, code
  if db.query then rows, affected, code = db:query(what, sql, ...)
  else rows, affected, code = db:exec(sql, ...) end -- a raw connection, inside load_once's transaction
  if not rows then
    error(errors.new { class = "store", detail = ("PostgreSQL: %s: %s"):format(what, tostring(affected)),
      sqlstate = code, suggest = "check the database, then resume: the run keeps every recorded step" }, 0)
  end
  return rows, affected
end

-- Has the input of this wf:each call been loaded? Returns its size or nil.
function M.loaded(db, run_id, batch)
  local rows = exec(db, "read the item load", "SELECT total FROM scimrun.item_loads WHERE run_id = $1 AND batch = $2",
    run_id, batch)
  return rows[1] and rows[1].total
end

-- Loads the items once: the first worker to take the lock writes them, in chunks of one
-- statement each (json_to_recordset), with the load record, in one transaction; another worker
-- arriving meanwhile waits for the lock and then finds them loaded. next_item() yields
-- (item, info) like the workflow's iterator. Returns the total.
local CHUNK = 500

function M.load_once(db, run_id, batch, worker_id, next_item)
  local conn = db:conn()
  exec(conn, "begin the item load", "BEGIN")
  local ok, res = pcall(function()
    exec(conn, "lock the item load", "SELECT pg_advisory_xact_lock(hashtext($1))",
      "scimrun:load:" .. run_id .. ":" .. batch)
    local done = M.loaded(conn, run_id, batch) -- another worker loaded it while we waited for the lock
    if done then return done end
    local n, chunk = 0, {}
    local function flush()
      if #chunk == 0 then return end
      exec(conn, "load items", "INSERT INTO scimrun.items (run_id, batch, idx, item_json, info_json) "
        .. "SELECT $1, $2, x.idx, x.item_json, x.info_json FROM json_to_recordset($3::json) "
        .. "AS x(idx integer, item_json text, info_json text) ON CONFLICT DO NOTHING",
        run_id, batch, cjson.encode(chunk))
      chunk = {}
    end
    for item, info in next_item do
      n = n + 1
      chunk[#chunk + 1] = { idx = n, item_json = cjson.encode { v = item },
                            info_json = info ~= nil and cjson.encode(info) or nil }
      if #chunk >= CHUNK then flush() end
    end
    flush()
    exec(conn, "record the item load", "INSERT INTO scimrun.item_loads (run_id, batch, total, loaded_by) "
      .. "VALUES ($1, $2, $3, $4)", run_id, batch, n, worker_id)
    return n
  end)
  if not ok then
    conn:exec("ROLLBACK")
    error(res, 0)
  end
  exec(conn, "commit the item load", "COMMIT")
  conn:exec("SELECT pg_notify($1, $2)", M.CHANNEL, run_id)
  return res
end

-- Claims up to n items: pending ones, and claimed ones whose lease ran out (their owner died
-- or stalled: they come back in doubt, so their steps go through `recover` first). Every claim
-- bumps the item's fence. Returns an array of { idx, item, info, fence, in_doubt }.
function M.claim(db, run_id, batch, worker_id, n, lease_s)
  local rows = exec(db, "claim items",
    -- MATERIALIZED: evaluated once; a subquery in FROM may be rescanned per row of the join,
    -- and every rescan with SKIP LOCKED locks further rows, claiming far more than LIMIT.
    -- Two index range scans (items_claimable: run_id, batch, state, idx), expired claims first:
    -- one condition with OR would walk the batch from its first item past every done one, on
    -- every claim (quadratic in the size of the input).
    "WITH e AS MATERIALIZED (SELECT idx FROM scimrun.items WHERE run_id = $1 AND batch = $2 "
    .. "AND state = 'claimed' AND lease_until < now() ORDER BY idx LIMIT $4 FOR UPDATE SKIP LOCKED), "
    .. "p AS MATERIALIZED (SELECT idx FROM scimrun.items WHERE run_id = $1 AND batch = $2 "
    .. "AND state = 'pending' ORDER BY idx LIMIT $4 FOR UPDATE SKIP LOCKED), "
    .. "c AS (SELECT idx FROM e UNION ALL (SELECT idx FROM p ORDER BY idx "
    .. "LIMIT greatest(0, $4 - (SELECT count(*) FROM e)))) "
    .. "UPDATE scimrun.items i SET state = 'claimed', owner = $3, fence = i.fence + 1, "
    .. "lease_until = now() + make_interval(secs => $5), in_doubt = (i.state = 'claimed') "
    .. "FROM c WHERE i.run_id = $1 AND i.batch = $2 AND i.idx = c.idx "
    .. "RETURNING i.idx, i.item_json, i.info_json, i.fence, i.in_doubt",
    run_id, batch, worker_id, n, lease_s)
  table.sort(rows, function(a, b) return a.idx < b.idx end)
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { idx = r.idx, item = cjson.decode(r.item_json).v, info = r.info_json and cjson.decode(r.info_json),
               fence = r.fence, in_doubt = r.in_doubt }
  end
  return out
end

-- What is left of the batch: items not done, and the seconds until the first lease held by
-- another worker runs out (nil when none is held).
function M.remaining(db, run_id, batch, worker_id)
  local rows = exec(db, "count the items left",
    "SELECT count(*) FILTER (WHERE state <> 'done') AS left, "
    .. "extract(epoch FROM min(lease_until) FILTER (WHERE state = 'claimed' AND owner IS DISTINCT FROM $3) - now()) "
    .. "AS expires_in FROM scimrun.items WHERE run_id = $1 AND batch = $2", run_id, batch, worker_id)
  return rows[1].left, rows[1].expires_in
end

-- Marks items done, each only under the fence it was claimed with (a lost lease: 0 rows for
-- it, the other worker's claim stands). done = array of { idx, fence, outcome }. Returns the
-- number marked; the waiting workers are told.
function M.finish(db, run_id, batch, done)
  local rows = exec(db, "finish items",
    "WITH d AS (UPDATE scimrun.items i SET state = 'done', owner = NULL, lease_until = NULL, "
    .. "outcome = x.outcome FROM json_to_recordset($3::json) AS x(idx integer, fence bigint, outcome text) "
    .. "WHERE i.run_id = $1 AND i.batch = $2 AND i.idx = x.idx AND i.fence = x.fence RETURNING 1) "
    .. "SELECT pg_notify($4, $1), (SELECT count(*) FROM d) AS n",
    run_id, batch, cjson.encode(done), M.CHANNEL)
  return rows[1].n
end

-- Gives back the claims of this worker that it will not run (it stops): pending again, for
-- the others at once, without waiting out the lease.
function M.release(db, run_id, worker_id, idxs_by_batch)
  for batch, idxs in pairs(idxs_by_batch) do
    if #idxs > 0 then
      exec(db, "release items", "UPDATE scimrun.items SET state = 'pending', owner = NULL, lease_until = NULL "
        .. "WHERE run_id = $1 AND batch = $2 AND owner = $3 AND state = 'claimed' "
        .. "AND idx IN (SELECT value::int FROM json_array_elements_text($4::json))",
        run_id, batch, worker_id, cjson.encode(idxs))
    end
  end
  db:query("notify the workers", "SELECT pg_notify($1, $2)", M.CHANNEL, run_id)
end

-- One statement every third of the lease: every claim of this worker lives on, and so does the
-- worker's heartbeat. Returns the number of live workers of the run (heartbeat within a lease).
function M.heartbeat(db, run_id, worker_id, lease_s)
  local rows = exec(db, "extend the leases",
    "WITH l AS (UPDATE scimrun.items SET lease_until = now() + make_interval(secs => $3) "
    .. "WHERE run_id = $1 AND owner = $2 AND state = 'claimed' RETURNING 1), "
    .. "w AS (UPDATE scimrun.workers SET heartbeat_at = now() WHERE id = $2 RETURNING 1) "
    .. "SELECT (SELECT count(*) FROM scimrun.workers WHERE run_id = $1 "
    .. "AND stopped_at IS NULL AND (id = $2 OR heartbeat_at > now() - make_interval(secs => $3))) AS live",
    run_id, worker_id, lease_s)
  return rows[1].live
end

-- The items of these batches (wf:each calls) done by any worker, for the progress (a worker's
-- own count is only its share). A statement of its own, not the heartbeat's: it reads the done
-- part of the batches' index (items_claimable), which grows with the run.
function M.done_count(db, run_id, batches)
  local rows = exec(db, "count the items done",
    "SELECT count(*) AS n FROM scimrun.items WHERE run_id = $1 AND batch = ANY($2::text[]) AND state = 'done'",
    run_id, '{"' .. table.concat(batches, '","') .. '"}') -- batch names are each:N
  return rows[1].n
end

function M.register(db, run_id, worker_id, host, pid)
  exec(db, "register the worker", "INSERT INTO scimrun.workers (id, run_id, host, pid) VALUES ($1, $2, $3, $4)",
    worker_id, run_id, host, pid)
end

-- --retry-failed: the items that ended failed are claimable again (their failed steps run again).
function M.reopen_failed(db, run_id)
  local _, n = exec(db, "reopen failed items", "UPDATE scimrun.items SET state = 'pending', outcome = NULL "
    .. "WHERE run_id = $1 AND state = 'done' AND outcome = 'failed'", run_id)
  return n
end

-- Items of the run that ended failed (dead-lettered or not), by any worker.
function M.count_failed(db, run_id)
  local rows = exec(db, "count failed items", "SELECT count(*) AS n FROM scimrun.items WHERE run_id = $1 "
    .. "AND state = 'done' AND outcome = 'failed'", run_id)
  return rows[1].n
end

function M.unregister(db, worker_id)
  db:query("leave the run", "UPDATE scimrun.workers SET stopped_at = now() WHERE id = $1", worker_id)
end

-- The newest unfinished run of a workflow (by name: the workers may keep the file at different
-- paths), under a lock held until unlock_join(), so two workers starting at once make one run.
function M.lock_join(db, workflow_name)
  exec(db, "lock the run to join", "SELECT pg_advisory_lock(hashtext($1))", "scimrun:join:" .. workflow_name)
  local rows = exec(db, "find the run to join", "SELECT id FROM scimrun.runs WHERE workflow_name = $1 "
    .. "AND status IN ('running','interrupted','failed') ORDER BY seq DESC LIMIT 1", workflow_name)
  return rows[1] and rows[1].id
end

function M.unlock_join(db, workflow_name)
  db:query("unlock the run to join", "SELECT pg_advisory_unlock(hashtext($1))", "scimrun:join:" .. workflow_name)
end

function M.try_lock_step(db, run_id, key)
  local rows = exec(db, "lock a step", "SELECT pg_try_advisory_lock(hashtext($1)) AS ok",
    "scimrun:step:" .. run_id .. ":" .. key)
  return rows[1].ok
end

function M.unlock_step(db, run_id, key)
  exec(db, "unlock a step", "SELECT pg_advisory_unlock(hashtext($1))", "scimrun:step:" .. run_id .. ":" .. key)
end

-- ---- the target's protection, shared by the workers of a run -----------------------------

-- A worker's breaker opened (or closed): the others follow it at their next heartbeat.
function M.publish_breaker(db, run_id, target, open_for_s, snapshot_json)
  exec(db, "share the breaker", "INSERT INTO scimrun.targets (run_id, target, breaker_open_until, breaker_reason) "
    .. "VALUES ($1, $2, now() + make_interval(secs => $3), $4) ON CONFLICT (run_id, target) DO UPDATE SET "
    .. "breaker_open_until = EXCLUDED.breaker_open_until, breaker_reason = EXCLUDED.breaker_reason, updated_at = now()",
    run_id, target, open_for_s, snapshot_json)
end

-- Targets whose breaker some worker holds open: { target, open_for (s), snapshot_json }.
function M.open_breakers(db, run_id)
  return exec(db, "read the shared breakers", "SELECT target, extract(epoch FROM breaker_open_until - now()) "
    .. "AS open_for, breaker_reason AS snapshot_json FROM scimrun.targets WHERE run_id = $1 "
    .. "AND breaker_open_until > now()", run_id)
end

return M
