-- db:apply(batch) of the PostgreSQL store: many writes in one transaction (group commit).
-- The ops are decoded and checked as runtime/store_lua_apply.c does (misuse raises before
-- anything is written; a value over max_value_bytes is refused with "TOOBIG" and nothing is
-- written), then sent in one call of scimrun.apply_batch (schema migration 3), which runs them
-- in batch order: one round trip for the batch instead of one per write.
--
-- Fencing (worker mode): an op may carry claim = { batch, idx, fence }, the claim of the item
-- it was written for. When the item's fence is no longer the claim's (the lease ran out and
-- another worker claimed the item), the ops of that claim are skipped and their indexes come
-- back as the third result; the others commit. Step ops store the claim's fence in steps.fence.
local cjson = require("cjson").new()

local M = {}

local OPS = { step_start = true, step_complete = true, step_fail = true, step_compensated = true, kv_put = true,
  run_status = true, dlq_add = true, event_add = true, audit_add = true }
local STEP_LIKE = { step_start = true, step_complete = true, step_fail = true, step_compensated = true, kv_put = true }
local RUN_STATUSES = { running = true, interrupted = true, failed = true, completed = true,
  completed_with_dead_letters = true }
M.RUN_STATUSES = RUN_STATUSES -- also db:run_set_status's (scimrun.postgres.store)

-- t[field] as a string (nil when absent and optional), as store_lua_field_string.
function M.field_string(t, field, required, ctx)
  local v = t[field]
  if type(v) == "string" then return v end
  if v ~= nil or required then
    error(("%s: field '%s' must be a string (got %s)"):format(ctx, field, v == nil and "nil" or type(v)), 0)
  end
  return nil
end

-- t[field] as a non-negative integer (truncated), or dflt when nil, as store_lua_field_count.
function M.field_count(t, field, dflt, ctx)
  local v = t[field]
  if type(v) == "number" then
    if v < 0 or v > 2147483647 or v ~= v then
      error(("%s: field '%s' must be a non-negative integer"):format(ctx, field), 0)
    end
    return math.floor(v)
  elseif v ~= nil then
    error(("%s: field '%s' must be a number (got %s)"):format(ctx, field, type(v)), 0)
  end
  return dflt
end

-- The TOOBIG message for a value over the store's limit, or nil (as store_write.c's bind_value).
function M.too_big(db, v, what, name)
  if v == nil or #v <= db._max then return nil end
  return ("state database %s: %s '%s' is %d bytes, over the limit of %d bytes for one stored value "
    .. "(store max_value_bytes); it was not recorded"):format(db._url, what, name or "?", #v, db._max)
end

local fs, fc = M.field_string, M.field_count

local function decode_claim(t, ctx)
  local c = t.claim
  if c == nil then return nil end
  if type(c) ~= "table" then error(("%s: field 'claim' must be a table (got %s)"):format(ctx, type(c)), 0) end
  local batch = fs(c, "batch", true, ctx .. " claim")
  local idx, fence = c.idx, c.fence
  if type(idx) ~= "number" or idx ~= math.floor(idx) or type(fence) ~= "number" or fence ~= math.floor(fence) then
    error(("%s: claim.idx and claim.fence must be integers"):format(ctx), 0)
  end
  return { batch = batch, idx = idx, fence = fence }
end

-- big: the TOOBIG message of the first value over db's max_value_bytes in batch order (nil
-- while there is none); later values are not measured.
local function check(big, db, v, what, name)
  if big then return big end
  return M.too_big(db, v, what, name)
end

-- Reads batch[i] into the record scimrun.apply_batch takes (its column names), raising on
-- misuse. Returns it, its claim and big (see check) updated with its values.
local function decode_op(t, i, db, big)
  local ctx = ("apply: batch[%d]"):format(i)
  if type(t) ~= "table" then error(ctx .. " must be a table", 0) end
  local name = fs(t, "op", true, ctx)
  if not OPS[name] then error(("%s: unknown op '%s'"):format(ctx, name), 0) end
  ctx = ("apply: batch[%d] (%s)"):format(i, name)
  local o = { i = i, op = name, run_id = fs(t, "run_id", true, ctx) }
  if STEP_LIKE[name] then
    o.key = fs(t, "key", true, ctx)
    local a = fc(t, "attempts", -1, ctx)
    if a >= 0 then o.attempts = a end
    if name == "step_complete" then
      o.js = fs(t, "result_json", false, ctx)
      big = check(big, db, o.js, "the result of step", o.key)
    elseif name == "step_fail" then
      o.js = fs(t, "error_json", false, ctx)
      big = check(big, db, o.js, "the error of step", o.key)
    elseif name == "kv_put" then
      o.js = fs(t, "value_json", false, ctx)
      big = check(big, db, o.js, "the value of key", o.key)
    end
  elseif name == "event_add" then
    o.key = fs(t, "key", true, ctx)
    o.js = fs(t, "event_json", true, ctx)
    big = check(big, db, o.js, "the event of step", o.key)
  elseif name == "run_status" then
    o.rstatus = fs(t, "status", true, ctx)
    if not RUN_STATUSES[o.rstatus] then error(("%s: unknown run status '%s'"):format(ctx, o.rstatus), 0) end
    local e = t.exit_code
    if e ~= nil and type(e) ~= "number" then error(("%s: field 'exit_code' must be a number"):format(ctx), 0) end
    if e then o.exit_code = e >= 0 and math.floor(e) or math.ceil(e) end
  elseif name == "audit_add" then
    o.item = fs(t, "item", false, ctx)
    o.operation = fs(t, "operation", true, ctx)
    for _, k in ipairs { "method", "target", "resource_type", "resource_id", "resource_name", "member_id",
      "changes_json" } do o[k] = fs(t, k, false, ctx) end
    o.result = fs(t, "result", true, ctx)
    o.detail = fs(t, "detail", false, ctx)
    local st = fc(t, "status", -1, ctx)
    if st >= 0 then o.hstatus = st end
    for _, k in ipairs { "item", "operation", "method", "target", "resource_type", "resource_id", "resource_name",
      "member_id" } do big = check(big, db, o[k], "a field of the audit record of", o.item) end
    big = check(big, db, o.changes_json, "the changes of the audit record of", o.item)
    big = check(big, db, o.detail, "the detail of the audit record of", o.item)
  else -- dlq_add
    for _, k in ipairs { "step_key", "operation", "method", "url", "request_body", "class", "scim_type", "last_error",
      "suggest", "rule" } do o[k] = fs(t, k, false, ctx) end
    local st = fc(t, "status", -1, ctx)
    if st >= 0 then o.hstatus = st end
    o.attempts = fc(t, "attempts", 0, ctx)
    o.is_compensation = t.is_compensation and true or false
    -- sent as text: cjson would round a number to 14 digits
    if type(t.first_failed_at) == "number" and t.first_failed_at > 0 then
      o.first_failed_at = ("%.17g"):format(t.first_failed_at)
    end
    big = check(big, db, o.url, "the URL of the dead letter for step", o.step_key)
    big = check(big, db, o.request_body, "the request body of the dead letter for step", o.step_key)
    big = check(big, db, o.scim_type, "the scimType of the dead letter for step", o.step_key)
    big = check(big, db, o.last_error, "the error of the dead letter for step", o.step_key)
    big = check(big, db, o.suggest, "the suggestion of the dead letter for step", o.step_key)
  end
  return o, decode_claim(t, ctx), big
end

-- apply(db, session, batch) -> true, ids [, lost] | nil, err, code
function M.apply(db, s, batch)
  if type(batch) ~= "table" then
    error(("bad argument #1 to 'apply' (table expected, got %s)"):format(batch == nil and "no value" or type(batch)), 0)
  end
  -- Decode everything first: misuse raises before the transaction starts.
  local n = #batch
  local ops, claims, claim_of, big = {}, {}, {}, nil
  for i = 1, n do
    local o, claim
    o, claim, big = decode_op(batch[i], i, db, big)
    if claim then
      -- one check per distinct claim, however many ops carry it
      local k = ("%s\0%s\0%d\0%d"):format(o.run_id, claim.batch, claim.idx, claim.fence)
      if not claim_of[k] then
        claims[#claims + 1] = { c = #claims + 1, run_id = o.run_id, batch = claim.batch, idx = claim.idx,
          fence = claim.fence }
        claim_of[k] = #claims
      end
      o.claim = claim_of[k]
      if STEP_LIKE[o.op] and o.op ~= "kv_put" then o.fence = claim.fence end
    end
    ops[i] = o
  end
  if n == 0 then return true, {} end
  if big then return nil, big, "TOOBIG" end
  local ops_json = cjson.encode(ops)
  local claims_json = #claims > 0 and cjson.encode(claims) or nil
  local rows, err, code = s:transaction("apply", function(conn)
    return conn:exec("SELECT out_kind, out_i, out_id FROM scimrun.apply_batch($1::json, $2::json)", ops_json,
      claims_json)
  end)
  if not rows then return nil, err, code end
  local ids, lost = {}, nil
  for _, r in ipairs(rows) do
    if r.out_kind == "dlq" then
      ids[r.out_i] = r.out_id
    else
      lost = lost or {}
      lost[#lost + 1] = r.out_i
    end
  end
  if lost then table.sort(lost) end
  return true, ids, lost
end

return M
