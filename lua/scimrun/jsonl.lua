-- Streaming JSON Lines reader: one JSON object per line, same contract as scimrun.csv.
--
--   local jsonl = require "scimrun.jsonl"
--   for row, info in jsonl.rows("users.jsonl", { required = { "userName" } }) do
--     if not row then fail_item(info.file .. ":" .. info.line .. ": " .. info.error) else ... end
--   end
--
-- row: the decoded object (top-level JSON nulls are dropped, so an absent and a null key read
-- the same), or `false` for a bad line. info: { file, line, index (1-based, blank lines not
-- counted), error = nil | message }. A line that is not valid UTF-8 is a bad line. Blank lines
-- are skipped; a UTF-8 BOM and CRLF are accepted.
-- Read line by line through stdio: memory does not grow with the file. A plain closure, not a
-- coroutine, so a scimrun task may yield inside the loop. A missing file raises.
local csv = require "scimrun.csv"
local utf8_check = require "scimrun.input.utf8_check"
local cjson = require("cjson").new() -- private instance: other modules' settings do not leak in

local find, sub, byte = string.find, string.sub, string.byte

local M = {}

local NULL = cjson.null

-- Opens a reader: { next = function() -> row|false, info | nil, close = fn }.
function M.open(path, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("jsonl.rows: opts must be a table", 2) end
  local fh = csv._open_input(path, "jsonl")
  local required = opts.required or {}
  local line, index, closed = 0, 0, false
  local reader = { file = path }
  function reader.close()
    if not closed then
      closed = true
      fh:close()
    end
  end
  function reader.next()
    if closed then return nil end
    while true do
      local s = fh:read("*l")
      if s == nil then
        reader.close()
        return nil
      end
      line = line + 1
      if line == 1 and sub(s, 1, 3) == "\239\187\191" then s = sub(s, 4) end
      if byte(s, -1) == 13 then s = sub(s, 1, -2) end
      local first = find(s, "%S")
      if first then
        index = index + 1
        local info = { file = path, line = line, index = index }
        if byte(s, first) ~= 123 then -- "{"
          info.error = "expected a JSON object ({...}) on the line"
          return false, info
        end
        local at = utf8_check.invalid_at(s)
        if at then
          info.error = utf8_check.describe("the line", s, at)
          return false, info
        end
        local ok, obj = pcall(cjson.decode, s)
        if not ok then
          info.error = "invalid JSON: " .. tostring(obj):gsub("^.-: ", "", 1)
          return false, info
        end
        for k, v in pairs(obj) do
          if v == NULL then obj[k] = nil end
        end
        for i = 1, #required do
          local v = obj[required[i]]
          if v == nil or v == "" then
            info.error = ("required key '%s' is missing or empty"):format(required[i])
            return false, info
          end
        end
        return obj, info
      end
    end
  end
  return reader
end

-- Iterator: for row, info in jsonl.rows(path, opts). opts: required (keys that must be non-empty).
function M.rows(path, opts)
  return require("scimrun.input.size").register(M.open(path, opts).next, path, 0,
    function() return M.open(path, opts).next end)
end

M.hash = csv.hash

return M
