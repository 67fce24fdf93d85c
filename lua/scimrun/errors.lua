-- The one error shape that crosses every layer (DESIGN.md "The C/Lua boundary"):
-- { class, status, scim_type, detail, retry_after, suggest, op, url, method, kind, rule,
--   attempts, step } — a table, never a bare string.
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

-- Fields safe and useful to store: never headers (they may echo credentials), never functions.
local PERSISTED = { "class", "status", "scim_type", "detail", "suggest", "op", "url", "method", "kind", "rule",
  "attempts", "step", "retry_after", "file", "line", "compensated" }

function M.persistable(e)
  local out = {}
  for _, k in ipairs(PERSISTED) do
    local v = e[k]
    if type(v) == "string" then v = scimrun.log.redact(v) end
    if type(v) == "string" or type(v) == "number" or type(v) == "boolean" then out[k] = v end
  end
  return out
end

return M
