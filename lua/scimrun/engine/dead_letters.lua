-- Stopping dispatch (a failure, a rejected token) and parking failed items in the dead-letter
-- queue (bounded by dead_letter.max_size), with the first failures kept for the report.
local errors = require "scimrun.errors"

local Engine = {} -- methods, mixed into the engine by scimrun.engine

-- Stops dispatch because of err, which the run then fails with.
function Engine:halt(err)
  self.run_err = self.run_err or err
  self.draining = true
end

-- A target rejected the token (class auth): no new items, and the run fails with this error.
-- The 401/403 an item saw (with its step) replaces the retry layer's announcement of it, which
-- replaces a call refused afterwards ("not sent"). Logged once.
local function auth_rank(e)
  if e.not_sent then return 1 end
  if e.from_event then return 2 end
  return 3
end

function Engine:auth_stop(err)
  local first = self.auth_stopped == nil
  if first or auth_rank(err) > auth_rank(self.auth_stopped) then
    errors.explain(err)
    self.auth_stopped = err
  end
  self.draining = true
  if first then
    self.log("error", "the target rejected the token: no new requests or items; the run stops (items in flight "
      .. "are not dead-lettered; fix the token, then resume)", { target = err.target, op = err.op,
      status = err.status, credential = err.credential, suggest = err.suggest })
  end
end

-- Parks a failure in the dead-letter queue. Returns the entry id, or nil and an error when the
-- queue is full (dead_letter.max_size) or the store failed: the caller fails the item instead.
function Engine:dead_letter(err, extra)
  extra = extra or {}
  if self.dlq_max_size then
    if self.dlq_pending == nil then self.dlq_pending = self.db:dlq_count { state = "pending" } or 0 end
    if self.dlq_pending >= self.dlq_max_size then
      return nil, errors.new { class = "dead_letter_full", step = err.step, op = err.op,
        detail = ("the dead-letter queue is full (%d pending entries, dead_letter.max_size = %d), so the "
          .. "failure of step %s cannot be parked and fails the run instead: %s")
          :format(self.dlq_pending, self.dlq_max_size, tostring(err.step), tostring(err)),
        suggest = "replay or drop pending entries (scimrun dlq list), or raise dead_letter.max_size in the "
          .. "policy; then resume with --retry-failed" }
    end
    self.dlq_pending = self.dlq_pending + 1 -- reserved now: concurrent items see it
  end
  local last_error = scimrun.log.redact(err.detail or err.message or "?")
  local suggest = err.suggest
  if extra.rolled_back then
    last_error = "(item rolled back) " .. last_error
    suggest = "fix the cause, then run the workflow again: the item was rolled back, so replaying this one "
      .. "request would leave it half-done"
    err.suggest = suggest
  end
  local entry = {
    op = "dlq_add", step_key = extra.step_key or err.step or "?", operation = err.op,
    method = err.method, url = err.url, request_body = err.request_body,
    class = err.class, status = err.status, scim_type = err.scim_type,
    last_error = last_error, suggest = suggest,
    attempts = err.attempts or 1, is_compensation = extra.is_compensation == true, rule = err.rule,
  }
  -- Every text field passes the redactor: a server can echo the token anywhere (scimType, a
  -- redirect to ...?access_token=...), and the queue is shown and exported as it is stored.
  for k, v in pairs(entry) do
    if type(v) == "string" and k ~= "op" then entry[k] = scimrun.log.redact(v) end
  end
  local ok, id = pcall(self.commit, self, entry)
  if not ok then
    if self.dlq_pending then self.dlq_pending = self.dlq_pending - 1 end
    return nil, errors.normalize(id)
  end
  self.stats.dead_lettered = self.stats.dead_lettered + 1
  local function info()
    return { id = id, run_id = self.run_id, step_key = entry.step_key, operation = entry.operation,
      method = entry.method, url = entry.url, class = entry.class, status = entry.status, scim_type = entry.scim_type,
      last_error = entry.last_error, suggest = entry.suggest, rule = entry.rule, attempts = entry.attempts,
      item = extra.item, is_compensation = extra.is_compensation == true }
  end
  -- the stream's fact (metrics, the policy's on_event.dead_letter); entries hold no secret
  self.emit { type = "dead_letter", id = id, class = entry.class, op = entry.operation,
              is_compensation = extra.is_compensation == true, entry = info() }
  if self.on_dead_letter then
    local hok, herr = require("scimrun.resilience.policy").guard(self.on_dead_letter, "on_dead_letter", info())
    if not hok then self.log("warn", "on_dead_letter hook failed", { error = tostring(herr), dead_letter = id }) end
  end
  return id
end

-- Keeps the first failures (bounded) for the end-of-run report.
function Engine:remember_failure(err, item, dlq_id)
  local list = self.stats.failures
  if #list >= self.MAX_LISTED_FAILURES then
    self.stats.failures_more = self.stats.failures_more + 1
    return
  end
  local p = errors.persistable(err)
  p.item, p.dead_letter, p.replayed = item, dlq_id, err.replayed
  list[#list + 1] = p
end

return Engine
