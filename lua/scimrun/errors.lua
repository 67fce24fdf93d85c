-- The one error shape that crosses every layer (DESIGN.md "The C/Lua boundary"):
-- { class, status, scim_type, detail, retry_after, suggest, op, url, method, kind, rule,
--   attempts, step } — a table, never a bare string.
--
--   errors.new(t) / errors.normalize(v) / errors.is_error(v) / errors.interrupted()
--   errors.no_verdict(e)        -> true for interrupted, store, auth, lease_lost: no verdict on the item
--   errors.persistable(e)       -> plain table of the safe fields, strings redacted
--   errors.builtin_suggestion(e) -> text | nil   what to do, keyed by class / status / scimType
--   errors.explain(e)           -> e, with e.suggest filled from builtin_suggestion when missing
--   errors.with_id(text, id)    -> text with the placeholder "ID" of "dlq replay ID" replaced
--   errors.closest(word, list)  -> the entry of list a "did you mean" names (the fewest edits,
--                                  ignoring case; ties: the first in sort order), or nil when
--                                  even that one is more than max(2, #word / 3) edits away
--   errors.describe(e, o)       -> lines {what, why, todo}: what failed (operation, resource,
--                                  item), why (class, status, scimType, server detail, rule) and
--                                  what to do; o = {item, dlq_id}
local M = {}

local ERROR = {}
ERROR.__index = ERROR
ERROR.__tostring = function(e)
  local parts = {}
  if e.op then parts[#parts + 1] = e.op end
  if e.step then parts[#parts + 1] = "step " .. e.step end
  local head = #parts > 0 and (table.concat(parts, " ") .. ": ") or ""
  local what = e.class or "error"
  if e.status then what = what .. " " .. tostring(e.status) end
  if e.scim_type then what = what .. " " .. e.scim_type end
  return head .. what .. (e.detail and (": " .. e.detail) or "")
end

function M.new(t) return setmetatable(t, ERROR) end

function M.is_error(v) return getmetatable(v) == ERROR end

-- Turns whatever was raised into an error table. A string raised by a bug in a workflow keeps
-- its message (and file:line) as detail with class "internal".
function M.normalize(v)
  if M.is_error(v) then return v end
  if type(v) == "table" then
    if v.class == nil then v.class = "internal" end
    return setmetatable(v, ERROR)
  end
  return M.new { class = "internal", detail = tostring(v) }
end

-- Edit (Levenshtein) distance between two strings.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- For the "did you mean" of an unknown key or value (policy files, --set, mapping files).
function M.closest(word, candidates)
  local best, best_d
  for _, c in ipairs(candidates) do
    local d = distance(word:lower(), c:lower())
    if not best_d or d < best_d or (d == best_d and c < best) then best, best_d = c, d end
  end
  if best and best_d <= math.max(2, math.floor(#word / 3)) then return best end
end

-- Lua shortens long chunk names to "...tail.lua:12:"; put the whole path back so an error
-- cites the file the operator can open.
function M.cite_file(msg, path)
  msg = tostring(msg)
  if msg:sub(1, 3) ~= "..." then return msg end
  local tail, rest = msg:match("^%.%.%.([^:]*)(:%d+:.*)$")
  if tail and path:sub(-#tail) == tail then return path .. rest end
  return msg
end

function M.interrupted()
  return M.new { class = "interrupted", detail = "run interrupted; resumable" }
end

-- An error that is no verdict on the step or the item: the run was interrupted, the store
-- failed, a target rejected the token (fixed, a resume finishes the item), or (worker mode) the
-- item's lease went to another worker. Such a step is not recorded failed, a saga is not
-- compensated, the item is not dead-lettered.
local NO_VERDICT = { interrupted = true, store = true, auth = true, lease_lost = true }
function M.no_verdict(e) return type(e) == "table" and NO_VERDICT[e.class] == true end

-- Fields safe and useful to store: never headers (they may echo credentials), never functions.
local PERSISTED = { "class", "status", "scim_type", "detail", "suggest", "op", "url", "method", "kind", "rule",
  "attempts", "step", "retry_after", "file", "line", "compensated", "budget_exhausted", "item" }

local function redact(s)
  local log = rawget(_G, "scimrun") and scimrun.log
  if log and log.redact then return log.redact(s) end
  return s
end

function M.persistable(e)
  local out = {}
  for _, k in ipairs(PERSISTED) do
    local v = e[k]
    if type(v) == "string" then v = redact(v) end
    if type(v) == "string" or type(v) == "number" or type(v) == "boolean" then out[k] = v end
  end
  return out
end

-- ---- what to do -----------------------------------------------------------------------
-- Built-in suggestions, used when neither the policy's classification rule nor the SCIM client
-- said what to do. First match wins; `noun` is "user" or "group", taken from the operation.
local function noun(e)
  local res = type(e.op) == "string" and e.op:match("^(%a+)%.")
  if res == "groups" then return "group" end
  if res == "users" then return "user" end
  return "resource"
end

local function auth() return "token rejected: check SCIM_TOKEN (is it current, with the scopes the provider needs?)" end

local BUILTIN = {
  { class = "auth", text = auth },
  { status = { 401, 403 }, text = auth },
  { class = "rate_limited", text = function()
      return "target rate-limited: lower concurrency or use the conservative profile"
    end },
  { class = "conflict", scim_type = "uniqueness", text = function(e)
      return ("%s exists: use update (ensure) instead of create, or resolve the clash on the target, then replay")
        :format(noun(e))
    end },
  { class = "conflict", status = 412, text = function()
      return "the resource changed since it was read: replay to re-read and apply again"
    end },
  { class = "conflict", text = function(e)
      return ("the target reports a conflict for this %s: check it on the target, then replay"):format(noun(e))
    end },
  { class = "circuit_open", text = function()
      return "the target kept failing and its circuit breaker is open: check the service, then replay"
    end },
  { class = "transient", text = function(e)
      if e.budget_exhausted then
        return "the run's retry budget ran out (too many failures): check the target, then replay"
      end
      return "the target kept failing after every retry: check its health, then replay"
    end },
  { status = 404, text = function(e)
      return ("the %s no longer exists on the target: check it was not deleted, then replay or drop"):format(noun(e))
    end },
  { scim_type = "invalidValue", text = function()
      return "the target rejected an attribute value: fix it in the source data, then replay"
    end },
  { scim_type = "mutability", text = function()
      return "the target refuses to change a read-only attribute: remove it from the mapping, then replay"
    end },
  { class = "internal", text = function()
      return "a bug in the workflow (see file:line in the detail): fix it, then --resume RUN_ID --retry-failed --force"
    end },
  { class = "store", text = function()
      return "the state file cannot be written: free space or fix permissions, then --resume"
    end },
  { class = "permanent", text = function()
      return "the target refused the request: read the detail, fix the cause, then replay"
    end },
}

local function one_of(want, v)
  if type(want) ~= "table" then return want == v end
  for _, w in ipairs(want) do
    if w == v then return true end
  end
  return false
end

function M.builtin_suggestion(e)
  if type(e) ~= "table" then return nil end
  for _, b in ipairs(BUILTIN) do
    if (b.class == nil or b.class == e.class) and (b.status == nil or one_of(b.status, e.status))
        and (b.scim_type == nil or (type(e.scim_type) == "string" and e.scim_type:lower() == b.scim_type:lower())) then
      return b.text(e)
    end
  end
  return nil
end

function M.explain(e)
  if type(e) == "table" and (e.suggest == nil or e.suggest == "") then e.suggest = M.builtin_suggestion(e) end
  return e
end

-- Without an id the failure is not in the dead-letter queue: the way back is a resume.
function M.with_id(text, id)
  if type(text) ~= "string" then return text end
  if id == nil then return (text:gsub("scimrun dlq replay ID", "resume the run with --retry-failed")) end
  return (text:gsub("(dlq replay) ID", "%1 " .. tostring(id)))
end

-- Three lines an operator can act on. The resource is the URL the request went to (never a
-- credential: URLs carry none) or, without one, the step key.
function M.describe(e, o)
  o = o or {}
  local what = {}
  if e.op then what[#what + 1] = e.op end
  if e.method and e.url then what[#what + 1] = e.method .. " " .. e.url
  elseif e.url then what[#what + 1] = e.url end
  if e.step then what[#what + 1] = "step " .. e.step end
  local item = o.item
  if item == nil then item = e.item end
  if item ~= nil then what[#what + 1] = "item " .. tostring(item) end
  if e.file then what[#what + 1] = e.file .. (e.line and (":" .. e.line) or "") end
  local why = { e.class or "error" }
  if e.status then why[#why + 1] = tostring(e.status) end
  if e.scim_type then why[#why + 1] = e.scim_type end
  local whyline = table.concat(why, " ")
  if e.detail then whyline = whyline .. ": " .. redact(tostring(e.detail)) end
  if e.attempts and e.attempts > 1 then whyline = whyline .. (" (after %d attempts)"):format(e.attempts) end
  if e.rule then whyline = whyline .. " [rule " .. e.rule .. "]" end
  local todo = M.with_id(e.suggest or M.builtin_suggestion(e), o.dlq_id)
  return {
    what = #what > 0 and table.concat(what, ", ") or "?",
    why = whyline,
    todo = todo and redact(todo) or nil,
  }
end

return M
