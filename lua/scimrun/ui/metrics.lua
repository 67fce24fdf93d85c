-- /metrics of `scimrun ui`: the state file's gauges, per workflow, under the names and help
-- texts of the run's metrics (scimrun.observe.run_metrics declares them; served by its `handle`). A run
-- serves its own counters with --metrics-port while it goes on; the console, which lives
-- between runs, serves what the state file says: the status, start and duration of each
-- workflow's newest run, its last successful run, and the dead letters waiting (and when the
-- oldest failed). Read at each scrape through the console's read-only connection.
local metrics = require "scimrun.observe.metrics"
local run_metrics = require "scimrun.observe.run_metrics"

local M = {}

function M.new(db, o)
  o = o or {}
  local reg = metrics.registry()
  local f = run_metrics.declare(reg)
  local wall = o.wall or scimrun.wall
  f.build:set(1, scimrun.version or "dev")
  local seen = {} -- workflows exposed before: their dead-letter gauges drop to 0, not away
  reg:on_collect(function()
    local ok, runs = pcall(db.runs_list, db, { limit = 1000 })
    if not ok or type(runs) ~= "table" then return end
    local newest, success, of_run = {}, {}, {}
    for _, r in ipairs(runs) do -- newest first
      local wf = r.workflow_name or "?"
      of_run[r.id] = wf
      seen[wf] = true
      if not newest[wf] then newest[wf] = r end
      if not success[wf] and run_metrics.SUCCESS[r.status] then success[wf] = r end
    end
    for wf, r in pairs(newest) do
      for _, s in ipairs(run_metrics.RUN_STATUSES) do f.run_status:set(s == r.status and 1 or 0, wf, s) end
      local start = tonumber(r.created_at)
      if start then
        f.run_start:set(start, wf)
        f.run_duration:set((tonumber(r.finished_at) or (r.status == "running" and wall()) or tonumber(r.updated_at)
          or start) - start, wf)
      end
    end
    for wf, r in pairs(success) do f.last_success:set(tonumber(r.finished_at) or tonumber(r.updated_at) or 0, wf) end
    local pending, oldest = {}, {}
    local lok, entries = pcall(db.dlq_list, db, { state = "pending" })
    for _, e in ipairs(lok and type(entries) == "table" and entries or {}) do
      local run_wf = of_run[e.run_id]
      if not run_wf then
        local rr = db:run_get(e.run_id)
        run_wf = rr and rr.workflow_name or "?"
        of_run[e.run_id] = run_wf
        seen[run_wf] = true
      end
      pending[run_wf] = (pending[run_wf] or 0) + 1
      local at = tonumber(e.first_failed_at) or tonumber(e.last_failed_at)
      if at and (not oldest[run_wf] or at < oldest[run_wf]) then oldest[run_wf] = at end
    end
    for wf in pairs(seen) do
      f.dlq_pending:set(pending[wf] or 0, wf)
      if oldest[wf] then f.dlq_oldest:set(oldest[wf], wf) else f.dlq_oldest:remove(wf) end
    end
  end)
  local self = { reg = reg }
  function self.text() return reg:expose() end
  -- the request handler: GET|HEAD /metrics in the Prometheus text format
  function self.handle(req) return run_metrics.handle(self, req) end
  return self
end

return M
