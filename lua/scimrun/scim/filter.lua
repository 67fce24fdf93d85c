-- SCIM filter expressions and query strings (RFC 7644 §3.4.2.2).
-- A compValue is a JSON literal: strings are quoted with `"` and `\` escaped, so a value such as
-- `a"b or userName pr` can never change the meaning of the filter. The whole filter is then
-- percent-encoded as one query parameter.
local M = {}

-- attrPath = [URI ":"] ATTRNAME *1subAttr; ATTRNAME = ALPHA *(nameChar); nameChar = "-" / "_" / DIGIT / ALPHA
local ATTR_NAME = "^[A-Za-z][A-Za-z0-9_%-%$]*$"

-- Returns true when `path` is a valid attribute path (optionally URN-prefixed, optional .subAttr).
function M.valid_attr(path)
  if type(path) ~= "string" or path == "" then return false end
  local urn, rest = path:match("^(urn:[%w%.:%-_]+):([^:]+)$")
  if urn then path = rest end
  local attr, sub = path:match("^([^%.]+)%.([^%.]+)$")
  if attr then return attr:find(ATTR_NAME) ~= nil and sub:find(ATTR_NAME) ~= nil end
  return path:find(ATTR_NAME) ~= nil
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                  ["\r"] = "\\r", ["\t"] = "\\t" }

-- Quotes a string as a JSON string literal for use as a filter compValue.
function M.quote(s)
  s = tostring(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

-- Formats any Lua value as a compValue: string -> quoted, boolean/number -> literal, nil -> null.
function M.value(v)
  local t = type(v)
  if t == "string" then return M.quote(v) end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("filter value must be a finite number", 3) end
    if v == math.floor(v) and math.abs(v) < 2^53 then return ("%d"):format(v) end
    return ("%.17g"):format(v)
  end
  if v == nil then return "null" end
  error("filter value must be a string, number or boolean (got " .. t .. ")", 3)
end

-- `attr eq value`, with the attribute name validated (a name is never escaped, only refused).
function M.eq(attr, value)
  if not M.valid_attr(attr) then
    error(("invalid SCIM attribute name %q in filter"):format(tostring(attr)), 2)
  end
  return attr .. " eq " .. M.value(value)
end

-- Path selecting one member of a multi-valued attribute: members[value eq "id"].
function M.value_path(attr, value)
  if not M.valid_attr(attr) then
    error(("invalid SCIM attribute name %q in path"):format(tostring(attr)), 2)
  end
  return attr .. "[value eq " .. M.value(value) .. "]"
end

-- Percent-encodes everything but RFC 3986 unreserved characters (space becomes %20, not +).
function M.urlencode(s)
  return (tostring(s):gsub("[^A-Za-z0-9%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- Builds "?k=v&k2=v2" from an ordered list of {name, value} pairs; nil values are skipped.
function M.query(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    if kv[2] ~= nil then parts[#parts + 1] = M.urlencode(kv[1]) .. "=" .. M.urlencode(kv[2]) end
  end
  if #parts == 0 then return "" end
  return "?" .. table.concat(parts, "&")
end

-- Percent-encodes one path segment (a resource id chosen by the server may contain anything).
function M.segment(s)
  return M.urlencode(s)
end

local OPERATORS = { eq = true, ne = true, co = true, sw = true, ew = true, gt = true, lt = true,
                    ge = true, le = true, pr = true }

-- True when `s` looks like a filter expression rather than a bare value: `attr op literal`
-- (literal = quoted string, number, true, false, null) or `attr pr`. "Bob le Grand" is a value.
function M.looks_like_filter(s)
  if type(s) ~= "string" then return false end
  local attr, op, rest = s:match("^%s*%(?%s*([%w%.:_%-%$]+)%s+(%a%a)(.*)$")
  if not attr or not M.valid_attr(attr) or not OPERATORS[op:lower()] then return false end
  if op:lower() == "pr" then return rest == "" or rest:find("^[%s%)]") ~= nil end
  rest = rest:match("^%s+(.*)$")
  if not rest then return false end
  return rest:find('^"') ~= nil or rest:find("^%-?%d") ~= nil or rest:find("^true%f[%W]") ~= nil
    or rest:find("^false%f[%W]") ~= nil or rest:find("^null%f[%W]") ~= nil
end

return M
