-- Shared helpers of the attribute mapping modules (scimrun.mapping.*); no state of their own.
-- Contract:
--   NULL                      cjson.null (a private sentinel without cjson): a JSON null
--   trim(s)                   s without leading and trailing white space
--   norm(s)                   the form column names are compared in: lower case, without white
--                             space or ASCII punctuation (first_name = firstName = "First Name")
--   is_empty(v)               nil, "" or NULL: a value that sets nothing
--   is_scalar(v)              a string, number or boolean
--   spec_error(src, key, msg, fix)  raises a "config" error (exit 2), one line naming the file
--                             (src, nil for a spec written in code) and the key
--   did_you_mean(word, list)  " (did you mean 'x'?)" for the candidate errors.closest picks, else ""
--   guard(fn, what, ...)      calls code from a mapping file under the CPU-time limit policy
--                             files' code gets (scimrun.sandboxed_load.guard): ok, results...
--                             or false, message
local errors = require "scimrun.errors"

local M = {}

local NULL
do
  local ok, cjson = pcall(require, "cjson")
  NULL = ok and cjson.null or {}
end

local lower, find, byte, sub = string.lower, string.find, string.byte, string.sub

-- By hand: the two gsubs it replaces (the second tries "%s+$" at every byte) were half of
-- mapping.apply's time, and a value without white space at its ends comes back as itself.
local function trim(s)
  local a = find(s, "%S")
  if not a then return "" end
  local b = #s
  while true do
    local c = byte(s, b)
    if c ~= 32 and (c < 9 or c > 13) then break end -- Lua's %s: space, \t \n \v \f \r
    b = b - 1
  end
  if a == 1 and b == #s then return s end
  return sub(s, a, b)
end

-- The form a column name is compared in: lower case, without white space or ASCII punctuation.
local function norm(s) return (lower(s):gsub("[%s%p]", "")) end

local function is_empty(v) return v == nil or v == "" or v == NULL end

local function is_scalar(v) return type(v) == "string" or type(v) == "number" or type(v) == "boolean" end

local FILE_FIX = 'fix the mapping file (docs/examples.md, "Attribute mapping" describes the format), then run again'

-- A mistake in a spec: class "config" (exit code 2), one line naming the file and the key.
local function spec_error(src, key, msg, fix)
  local detail
  if src then
    detail = ("invalid mapping %s: %s%s"):format(src, key and (key .. ": ") or "", msg)
  else
    detail = ("mapping: %s%s"):format(key and (key .. ": ") or "", msg)
  end
  error(errors.new { class = "config", file = src, key = key, detail = detail,
    suggest = fix or (src and FILE_FIX) or nil }, 0)
end

local function did_you_mean(word, candidates)
  local best = errors.closest(word, candidates)
  return best and (" (did you mean '%s'?)"):format(best) or ""
end

local guard = require("scimrun.sandboxed_load").guard

M.NULL = NULL
M.trim, M.norm, M.is_empty, M.is_scalar = trim, norm, is_empty, is_scalar
M.spec_error, M.did_you_mean, M.guard = spec_error, did_you_mean, guard

return M
