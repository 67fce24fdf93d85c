-- JSON for the sandbox, on lua-cjson (C), with what SCIM needs and Debian's lua-cjson 2.1.0
-- lacks: arrays are marked on decoding, so `[]` stays `[]` on the way back out (cjson 2.1.0 reads
-- `[]` and `{}` as the same empty table and writes it as `{}`), numbers are written exactly
-- (cjson writes at most 14 significant digits) and `/` is not escaped.
--   json.decode(str) -> value | nil, "message at character N"
--   json.encode(value) -> string   (raises on what JSON cannot hold: functions, NaN, ...)
--   json.array(t) marks t as an array; json.is_array(t); json.null is the JSON null;
--   json.copy(v) deep copy keeping the marks.
-- Object keys come out in cjson's (hash) order: JSON objects are unordered, and no client of the
-- sandbox may depend on it.
local cjson = require "cjson"

local M = {}

-- A private cjson instance: its settings do not leak into other users of `require "cjson"`.
local codec = cjson.new()
codec.decode_max_depth(200)
codec.decode_invalid_numbers(false) -- no hex, NaN or Infinity in requests
codec.encode_max_depth(200)
codec.encode_number_precision(14) -- the most 2.1.0 allows; longer numbers go through RAW below
codec.encode_sparse_array(true)   -- a sparse "array" becomes an object rather than an error

local ARRAY = { __jsontype = "array" }
M.null = cjson.null

function M.array(t)
  return setmetatable(t or {}, ARRAY)
end

function M.is_array(t)
  if type(t) ~= "table" then return false end
  if getmetatable(t) == ARRAY then return true end
  local n = #t
  if n == 0 then return false end
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
  end
  return true
end

local byte, sub, find, gsub, format = string.byte, string.sub, string.find, string.gsub, string.format
local concat = table.concat

-- decoding ----------------------------------------------------------------------------------

-- cjson decodes `[]` and `{}` alike. A body whose text holds only one of the two kinds of empty
-- pair says which every empty table is; a body holding both has its empty arrays rewritten to
-- a one-element array of this marker first (a string no SCIM client sends: it starts with NUL).
local EMPTY = "\0scimrun:empty-array"
local EMPTY_JSON = '["\\u0000scimrun:empty-array"]'

-- s with every empty array outside a string replaced by EMPTY_JSON.
local function tag_empty_arrays(s)
  local out, n, from, pos = {}, 0, 1, 1
  while true do
    local a = find(s, '["%[]', pos)
    if not a then break end
    if byte(s, a) == 34 then -- a string: continue after its closing quote
      local j = a + 1
      while true do
        local q = find(s, '["\\]', j)
        if not q then return s end -- unterminated: cjson will say so
        if byte(s, q) == 92 then j = q + 2 else pos = q + 1; break end
      end
    else
      local _, e = find(s, "^%[[ \t\r\n]*%]", a)
      if e then
        out[n + 1], out[n + 2], n = sub(s, from, a - 1), EMPTY_JSON, n + 2
        from = e + 1
      end
      pos = (e or a) + 1
    end
  end
  out[n + 1] = sub(s, from)
  return concat(out)
end

-- Marks the arrays of a decoded value. cjson gives an array the keys 1..n and an object string
-- keys only, so a table with t[1] is an array; an empty one gets `empty_mt`.
local function mark(t, empty_mt)
  local first = t[1]
  if first ~= nil then
    setmetatable(t, ARRAY)
    if first == EMPTY and t[2] == nil then
      t[1] = nil
      return
    end
    for i = 1, #t do
      local x = t[i]
      if type(x) == "table" then mark(x, empty_mt) end
    end
  elseif next(t) == nil then
    if empty_mt then setmetatable(t, empty_mt) end
  else
    for _, x in pairs(t) do
      if type(x) == "table" then mark(x, empty_mt) end
    end
  end
end

-- cjson's parser messages name tokens by their C enum.
local TOKENS = { T_OBJ_BEGIN = "'{'", T_OBJ_END = "'}'", T_ARR_BEGIN = "'['", T_ARR_END = "']'",
  T_STRING = "a string", T_NUMBER = "a number", T_BOOLEAN = "a boolean", T_NULL = "null",
  T_COLON = "':'", T_COMMA = "','", T_END = "the end of the body", T_WHITESPACE = "whitespace",
  T_ERROR = "an error", T_UNKNOWN = "an unknown token" }

local function message(e)
  e = gsub(tostring(e), "T_[%u_]+", TOKENS)
  return (gsub(e, "^%u", string.lower))
end

function M.decode(s)
  if type(s) ~= "string" then return nil, "no body" end
  local ok, v, empty_mt
  if not find(s, "%[[ \t\r\n]*%]") then
    ok, v = pcall(codec.decode, s)
  elseif not find(s, "{[ \t\r\n]*}") then
    ok, v = pcall(codec.decode, s)
    empty_mt = ARRAY
  else
    -- Both kinds: tag every empty pair blindly first. One inside a string breaks the text (the
    -- marker's quote ends the string, its backslash then stands outside one), so a text that
    -- still parses was tagged right; else tag with the string-aware scan.
    ok, v = pcall(codec.decode, (gsub(s, "%[[ \t\r\n]*%]", EMPTY_JSON)))
    if not ok then ok, v = pcall(codec.decode, tag_empty_arrays(s)) end
    if not ok then ok, v = pcall(codec.decode, s) end -- for the message, positioned in s
  end
  if not ok then return nil, message(v) end
  if type(v) == "table" then mark(v, empty_mt) end
  return v
end

-- encoding ----------------------------------------------------------------------------------

-- Values cjson would write wrong (a marked empty array, a number needing more than 14 digits)
-- are swapped for a marker string holding their JSON text while cjson encodes, then spliced in.
local RAW = "\0scimrun:raw:"
local RAW_JSON = '"\\u0000scimrun:raw:' -- RAW as cjson writes it; the text follows, then '"'

-- The JSON text of a number cjson would shorten (more than 14 significant digits), else nil.
local function long_number(x)
  if x % 1 == 0 and x > -1e14 and x < 1e14 then return nil end -- cjson writes these exactly
  if x ~= x or x == math.huge or x == -math.huge then return nil end -- cjson refuses them
  if tonumber(format("%.14g", x)) == x then return nil end
  return format("%.17g", x)
end

local function swap(t, k, x, text, undo)
  local n = #undo
  undo[n + 1], undo[n + 2], undo[n + 3] = t, k, x
  t[k] = RAW .. text
end

-- Swaps the values of t (and below) that need RAW; records them in undo (table, key, value).
local function swap_raw(t, undo, depth)
  if depth > 200 then return end -- too deep: cjson refuses the value anyway
  for k, x in pairs(t) do
    local tx = type(x)
    if tx == "table" then
      if next(x) ~= nil then swap_raw(x, undo, depth + 1)
      elseif getmetatable(x) == ARRAY then swap(t, k, x, "[]", undo) end
    elseif tx == "number" and (x % 1 ~= 0 or x <= -1e14 or x >= 1e14) then
      local text = long_number(x)
      if text then swap(t, k, x, text, undo) end
    end
  end
end

-- Replaces each RAW marker string in cjson's output by the JSON text it holds.
local function splice_raw(s)
  local parts, n, pos = {}, 0, 1
  local a = find(s, RAW_JSON, 1, true)
  while a do
    local q = find(s, '"', a + #RAW_JSON, true)
    parts[n + 1], parts[n + 2], n = sub(s, pos, a - 1), sub(s, a + #RAW_JSON, q - 1), n + 2
    pos = q + 1
    a = find(s, RAW_JSON, pos, true)
  end
  parts[n + 1] = sub(s, pos)
  return concat(parts)
end

-- cjson writes "/" as "\/"; a backslash it writes is always the start of an escape, so every
-- "\/" of its output is an escaped "/". A plain find per match is ~8x faster than gsub here.
local function unescape_slashes(s)
  local a = find(s, "\\/", 1, true)
  if not a then return s end
  local parts, n, pos = {}, 0, 1
  repeat
    n = n + 1
    parts[n] = sub(s, pos, a - 1)
    pos = a + 1
    a = find(s, "\\/", pos, true)
  until not a
  parts[n + 1] = sub(s, pos)
  return concat(parts)
end

function M.encode(v)
  local tv = type(v)
  if tv == "number" then return long_number(v) or codec.encode(v) end
  if tv == "table" and next(v) == nil and getmetatable(v) == ARRAY then return "[]" end
  local undo = {}
  if tv == "table" then swap_raw(v, undo, 1) end
  local ok, out = pcall(codec.encode, v)
  for i = #undo, 1, -3 do undo[i - 2][undo[i - 1]] = undo[i] end
  if not ok then error(out, 2) end
  if #undo > 0 then out = splice_raw(out) end
  return unescape_slashes(out)
end

-- Deep copy that keeps array marks.
function M.copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = M.copy(x) end
  return setmetatable(out, getmetatable(v))
end

return M
