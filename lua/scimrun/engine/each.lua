-- The fan-out of wf:each (at most `concurrency` items at once, pulled as slots free) and the
-- preflight that reads a re-openable input whole before any item runs.
local errors = require "scimrun.errors"
local report = require "scimrun.observe.report"

local Engine = {} -- methods, mixed into the engine by scimrun.engine

Engine.LENT_MAX = 4 -- items waiting (a backoff, a membership batch) beyond the concurrency, x it

-- Runs fn(item, info) for every item of the iterator, at most `concurrency` at once. Items
-- are pulled only when a slot frees, so memory stays flat with the number of items.
function Engine:each(iter, opts, fn)
  if type(opts) == "function" and fn == nil then fn, opts = opts, {} end
  opts = opts or {}
  local limit = opts.concurrency or self.concurrency
  local active, parked, first_err = 0, nil, nil
  local me = coroutine.running()
  local failed_here, seen = 0, 0
  -- Preflight: an input that can be read again (a CSV or JSONL file) is read whole first,
  -- through opts.preflight (e.g. the mapping's check_rows), so its bad rows are listed before
  -- the first write; with --check that is all that happens.
  -- Worker mode (scimrun.worker): the items come from the run's shared queue in the database,
  -- loaded once from this iterator by the first worker (after its preflight), claimed in batches.
  local source, pre
  if self.worker then
    self.each_calls = (self.each_calls or 0) + 1
    source = self.worker:source("each:" .. self.each_calls, iter, function() pre = self:preflight(iter, opts) end)
  else
    pre = self:preflight(iter, opts)
    if self.check then return end
  end
  -- the size of the input when it is known, for progress and an ETA
  local total = source and source.total or pre and pre.rows or require("scimrun.input.size").of(iter)
  if total then self.emit { type = "input", total = total } end

  local function item_done()
    active = active - 1
    if parked then parked = nil; scimrun.wake(me) end
  end

  -- An item that is waiting without using the connection lends its slot to the next item, up
  -- to LENT_MAX x the concurrency in all: asleep in a retry backoff (a 5xx, a timeout: not a
  -- paced 429), or parked in a membership batch until its PATCH is answered (so batches fill
  -- up to the provider's maximum while users are still being created, as a script that adds
  -- members in hundreds does). It takes the slot back when it goes on (the run may then be
  -- over the limit for a moment: no new item starts until it is under). Requests in flight
  -- stay bounded by the policy's bulkhead. Lends nest (a batch's leader backing off). At
  -- concurrency 1 nothing is lent: one item after another is what was asked for (a failure
  -- without --continue-on-error then stops the run before any later item starts).
  local lent = 0
  local function lend_slot(state, away)
    if limit <= 1 then return end
    if away then
      state.away = (state.away or 0) + 1
      if state.away > 1 or lent >= self.LENT_MAX * limit then return end
      lent, active, state.lent = lent + 1, active - 1, true
      if parked then parked = nil; scimrun.wake(me) end
    else
      state.away = (state.away or 1) - 1
      if state.away == 0 and state.lent then lent, active, state.lent = lent - 1, active + 1, nil end
    end
  end

  local function item_failed(err, item, info)
    errors.explain(err)
    failed_here = failed_here + 1
    self.stats.failed = self.stats.failed + 1
    local name = report.identity(item, info)
    if err.item == nil and (type(name) == "string" or type(name) == "number") then err.item = name end
    local dlq_id
    if self.continue_on_error and err.class ~= "usage" then
      if not err.replayed then
        local full
        dlq_id, full = self:dead_letter(err, { item = name, rolled_back = err.compensated })
        if not dlq_id then
          self.log("error", "DEAD-LETTER QUEUE REFUSED the item; it fails the run", { item = name,
            detail = full and full.detail })
          first_err = first_err or full
          self:halt(first_err)
        end
      end
    else
      first_err = first_err or err
      self:halt(first_err) -- no new items; those in flight run to their end
    end
    self:remember_failure(err, name, dlq_id)
    local outcome = dlq_id and "dead_lettered" or (err.compensated and "rolled_back") or "failed"
    self.on_item { item = item, info = info, status = "failed", outcome = outcome, error = err,
                   dead_letter = dlq_id, compensated = err.compensated }
    self.log("error", "item failed", { item = name, step = err.step, op = err.op, method = err.method,
      url = err.url, class = err.class, status = err.status, scim_type = err.scim_type, detail = err.detail,
      rule = err.rule, suggest = errors.with_id(err.suggest, dlq_id), dead_letter = dlq_id,
      rolled_back = err.compensated, where = info and info.file and (info.file .. ":" .. tostring(info.line)) or nil })
    if self.max_failed_items and self:over_failure_limit(failed_here, seen) then
      first_err = first_err or errors.new { class = "permanent",
        detail = ("tolerated-failure limit crossed: %d of %d items failed (max_failed_items = %s)")
          :format(failed_here, seen, tostring(self.max_failed_items)),
        suggest = "look at the failures (scimrun dlq list), fix the common cause, then replay them and resume" }
      self:halt(first_err)
    end
  end

  local function run_item(item, info)
    -- claim: the item's lease in worker mode; its step writes carry it (fencing)
    local claim = info and info.claim
    local item_state = { claim = claim }
    item_state.lend = function(away) lend_slot(item_state, away) end
    scimrun.ctx().item = item_state
    local ok, err
    if info and info.error then
      ok, err = false, errors.new { class = "permanent", detail = info.error, file = info.file, line = info.line,
        suggest = "fix the row in the source file, then: scimrun --resume ID --retry-failed" }
    else
      ok, err = pcall(fn, item, info)
    end
    local outcome = item_state.outcome
    self.stats.items = self.stats.items + 1
    if ok then
      self.stats.succeeded = self.stats.succeeded + 1
      if outcome then self.stats[outcome] = (self.stats[outcome] or 0) + 1 end
      self.on_item { item = item, info = info, status = "ok", outcome = outcome or "done" }
    else
      err = errors.normalize(err)
      if err.class == "lease_lost" then
        -- another worker holds the item now: its result there stands, nothing is counted here
        self.stats.lease_lost = (self.stats.lease_lost or 0) + 1
        self.log("warn", "lease lost: another worker claimed this item; the result here is discarded",
          { item = report.identity(item, info), step = err.step })
        if claim then self.worker:item_dropped(claim); claim = nil end
        self.on_item { item = item, info = info, status = "interrupted", outcome = "interrupted", error = err }
      elseif err.class == "interrupted" then
        self.on_item { item = item, info = info, status = "interrupted", outcome = "interrupted" }
      elseif err.class == "auth" then
        -- not failed and not dead-lettered: the resume after the token is fixed redoes it
        errors.explain(err)
        self:auth_stop(err)
        self.stats.auth_stopped = self.stats.auth_stopped + 1
        self.on_item { item = item, info = info, status = "interrupted", outcome = "interrupted", error = err }
        self.log("warn", "item stopped: the target rejected the token", { item = report.identity(item, info),
          step = err.step, op = err.op, status = err.status })
      elseif err.class == "store" then
        first_err = first_err or err
      else
        local fok, ferr = pcall(item_failed, err, item, info)
        if not fok then first_err = first_err or errors.normalize(ferr); self:halt(first_err) end
      end
    end
    -- worker mode: an item with a verdict (done, dead-lettered, failed) is finished for every
    -- worker; one interrupted (or stopped by the token) is given back when this worker stops
    if claim then
      if ok then self.worker:item_finished(claim, outcome or "done")
      elseif not errors.no_verdict(err) then
        self.worker:item_finished(claim, "failed")
      end
    end
    item_done()
  end

  local function stopped() return self.stopping or self.draining or self.fatal end
  local function dispatch(item, info)
    active = active + 1
    seen = seen + 1
    self.emit { type = "item_start" }
    scimrun.spawn(run_item, item, info)
  end
  if source then
    while not stopped() do
      while active >= limit do parked = true; scimrun.park() end
      if stopped() then break end
      local item, wait = source.next(limit - active, active + lent > 0)
      if item ~= nil then dispatch(item, wait)
      elseif wait ~= "wait" then break -- every item of the run is done
      elseif active > 0 or lent > 0 then parked = true; scimrun.park() -- woken when one of ours ends
      else source.wait() end -- others hold the rest: a NOTIFY, or their lease running out
    end
    source.release()
  else
    for item, info in iter do
      if stopped() then break end
      while active >= limit do parked = true; scimrun.park() end
      if stopped() then break end
      dispatch(item, info)
    end
  end
  -- the input is read: its true size replaces the estimate (a quoted field with a line break)
  if total and not source and not stopped() then
    self.emit { type = "input", total = seen - total, correction = true }
  end
  while active > 0 or lent > 0 do parked = true; scimrun.park() end
  if self.fatal then error(self.fatal, 0) end
  if self.auth_stopped then error(self.auth_stopped, 0) end
  if first_err then error(first_err, 0) end
  if self.draining and self.run_err then error(self.run_err, 0) end
  if self.stopping then error(errors.interrupted(), 0) end
end

-- Reads the input of wf:each whole, without sending anything: every record the reader
-- refuses, and with opts.preflight(iter) -> {rows, bad = {{file, line, reason}}} every row the
-- workflow's own check refuses (the mapping's check_rows: values, duplicates). A normal run
-- lists the bad rows as warnings (they still fail as items); --check records them for the
-- runner's report. Returns the result, or nil when the input cannot be read twice.
local PREFLIGHT_LISTED = 20

local function scan_records(it)
  local res = { rows = 0, bad = {} }
  for row, info in it do
    res.rows = res.rows + 1
    if not row or (info and info.error) then
      res.bad[#res.bad + 1] = { file = info and info.file, line = info and (info.line or info.index),
                                reason = info and info.error or "unreadable record" }
    end
  end
  return res
end

function Engine:preflight(iter, opts)
  local input_size = require "scimrun.input.size"
  local fresh = input_size.reopen(iter)
  if not fresh then
    if not self.check then return nil end
    fresh = iter -- --check runs no item: the iterator itself is read
  end
  local res = (opts.preflight or scan_records)(fresh)
  input_size.set(iter, res.rows)
  self.emit { type = "preflight", rows = res.rows, bad = #res.bad }
  if self.check then
    self.check_results = self.check_results or {}
    self.check_results[#self.check_results + 1] = res
  elseif #res.bad > 0 then
    self.log("warn", ("the input has %d bad row(s) of %d; they will fail as items (%s lists them all)")
      :format(#res.bad, res.rows, self.check_command or "--check"), { file = res.bad[1].file })
    for i = 1, math.min(#res.bad, PREFLIGHT_LISTED) do
      local b = res.bad[i]
      self.log("warn", ("%s:%s: %s"):format(tostring(b.file), tostring(b.line), b.reason))
    end
    if #res.bad > PREFLIGHT_LISTED then
      self.log("warn", ("... and %d more bad row(s)"):format(#res.bad - PREFLIGHT_LISTED))
    end
  end
  return res
end

function Engine:over_failure_limit(failed, seen)
  local limit = self.max_failed_items
  if type(limit) == "number" then return failed > limit end
  local pct = type(limit) == "string" and tonumber(limit:match("^(%d+%.?%d*)%%$"))
  if pct and seen >= 20 then return failed * 100 / seen > pct end
  return false
end

return Engine
