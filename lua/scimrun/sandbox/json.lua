-- JSON for the sandbox: a decoder that marks arrays (so `[]` stays `[]` on the way back out,
-- which lua-cjson 2.1 cannot do) and an encoder with a stable key order (schemas, id, then
-- sorted) so responses and snapshot files read the same way every time.
--   json.decode(str) -> value | nil, "message at offset N"
--   json.encode(value) -> string
--   json.array(t) marks t as an array; json.is_array(t); json.null is the JSON null.
local cjson = require "cjson"

local M = {}

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

-- decoding ----------------------------------------------------------------------------------

local byte, sub, find, char = string.byte, string.sub, string.find, string.char

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local decode_value

local function fail(msg, pos) error({ json_error = ("%s at offset %d"):format(msg, pos - 1) }, 0) end

local function skip(s, pos)
  local _, e = find(s, "^[ \t\r\n]*", pos)
  return e + 1
end

local function decode_string(s, pos)
  local parts, i = {}, pos + 1
  while true do
    local a, b = find(s, '^[^"\\%c]+', i)
    if a then parts[#parts + 1] = sub(s, a, b); i = b + 1 end
    local c = sub(s, i, i)
    if c == '"' then return table.concat(parts), i + 1 end
    if c == "" then fail("unterminated string", pos) end
    if c ~= "\\" then fail("control character in string", i) end
    local e = sub(s, i + 1, i + 1)
    if e == "u" then
      local hex = sub(s, i + 2, i + 5)
      if not hex:match("^%x%x%x%x$") then fail("bad \\u escape", i) end
      local cp = tonumber(hex, 16)
      i = i + 6
      if cp >= 0xD800 and cp <= 0xDBFF and sub(s, i, i + 1) == "\\u" then
        local lo = tonumber(sub(s, i + 2, i + 5), 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8(cp)
    elseif ESCAPES[e] then
      parts[#parts + 1] = ESCAPES[e]
      i = i + 2
    else
      fail("bad escape in string", i)
    end
  end
end

local MAX_DEPTH = 200
local depth = 0

local function decode_array(s, pos)
  local out, n = M.array({}), 0
  pos = skip(s, pos + 1)
  if sub(s, pos, pos) == "]" then return out, pos + 1 end
  while true do
    local v
    v, pos = decode_value(s, pos)
    n = n + 1
    out[n] = v
    pos = skip(s, pos)
    local c = sub(s, pos, pos)
    if c == "]" then return out, pos + 1 end
    if c ~= "," then fail("expected ',' or ']'", pos) end
    pos = skip(s, pos + 1)
  end
end

local function decode_object(s, pos)
  local out = {}
  pos = skip(s, pos + 1)
  if sub(s, pos, pos) == "}" then return out, pos + 1 end
  while true do
    if sub(s, pos, pos) ~= '"' then fail("expected a string key", pos) end
    local k
    k, pos = decode_string(s, pos)
    pos = skip(s, pos)
    if sub(s, pos, pos) ~= ":" then fail("expected ':'", pos) end
    local v
    v, pos = decode_value(s, skip(s, pos + 1))
    out[k] = v
    pos = skip(s, pos)
    local c = sub(s, pos, pos)
    if c == "}" then return out, pos + 1 end
    if c ~= "," then fail("expected ',' or '}'", pos) end
    pos = skip(s, pos + 1)
  end
end

local function nested(fn, s, pos)
  depth = depth + 1
  if depth > MAX_DEPTH then fail("nested deeper than " .. MAX_DEPTH .. " levels", pos) end
  local v, p = fn(s, pos)
  depth = depth - 1
  return v, p
end

decode_value = function(s, pos)
  pos = skip(s, pos)
  local c = byte(s, pos)
  if c == 34 then return decode_string(s, pos) end
  if c == 123 then return nested(decode_object, s, pos) end
  if c == 91 then return nested(decode_array, s, pos) end
  if sub(s, pos, pos + 3) == "true" then return true, pos + 4 end
  if sub(s, pos, pos + 4) == "false" then return false, pos + 5 end
  if sub(s, pos, pos + 3) == "null" then return M.null, pos + 4 end
  local a, b = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if a then
    local n = tonumber(sub(s, a, b))
    if n then return n, b + 1 end
  end
  fail(c and "unexpected character" or "unexpected end of input", pos)
end

function M.decode(s)
  if type(s) ~= "string" then return nil, "no body" end
  depth = 0
  local ok, v, pos = pcall(decode_value, s, 1)
  if not ok then
    if type(v) == "table" and v.json_error then return nil, v.json_error end
    error(v, 0)
  end
  pos = skip(s, pos)
  if pos <= #s then return nil, ("trailing characters at offset %d"):format(pos - 1) end
  return v
end

-- encoding ----------------------------------------------------------------------------------

-- SCIM documents read best with these first and meta / Resources last.
local KEY_RANK = { schemas = 1, id = 2, externalId = 3, totalResults = 4, startIndex = 5, itemsPerPage = 6,
  status = 7, scimType = 8, detail = 9, meta = 11, Resources = 11 }

local function key_less(a, b)
  local ra, rb = KEY_RANK[a] or 10, KEY_RANK[b] or 10
  if ra ~= rb then return ra < rb end
  return a < b
end

local function encode_into(v, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = cjson.encode(v):gsub("\\/", "/")
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("cannot encode " .. tostring(v)) end
    out[#out + 1] = (v % 1 == 0 and math.abs(v) < 2 ^ 53) and ("%d"):format(v) or ("%.17g"):format(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif v == nil or v == M.null then
    out[#out + 1] = "null"
  elseif t == "table" then
    if M.is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode_into(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys, key_less)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = cjson.encode(k):gsub("\\/", "/")
        out[#out + 1] = ":"
        local val = v[k]
        if val == nil then val = v[tonumber(k)] end
        encode_into(val, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("cannot encode a " .. t .. " as JSON")
  end
end

function M.encode(v)
  local out = {}
  encode_into(v, out)
  return table.concat(out)
end

-- Deep copy that keeps array marks.
function M.copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = M.copy(x) end
  return setmetatable(out, getmetatable(v))
end

return M
