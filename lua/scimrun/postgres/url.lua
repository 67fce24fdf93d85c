-- PostgreSQL connection URLs (postgres://... or postgresql://...) as --state takes them: which
-- ones are ours, which hold a password (refused: a URL shows up in logs, process lists, the
-- run record and the console), and how they are shown and handed to libpq.
local M = {}

local SCHEMES = { "postgres://", "postgresql://" }

-- The scheme, lowercased ("postgres://"), when spec is a PostgreSQL URL in any case.
function M.scheme_of(spec)
  if type(spec) ~= "string" then return nil end
  local lower = spec:sub(1, 13):lower()
  for _, s in ipairs(SCHEMES) do
    if lower:sub(1, #s) == s then return s end
  end
  return nil
end

function M.is_postgres(spec) return M.scheme_of(spec) ~= nil end

-- The URL with its scheme in lower case: libpq compares the scheme case-sensitively.
function M.normalize(spec)
  local s = assert(M.scheme_of(spec), "not a PostgreSQL URL")
  return s .. spec:sub(#s + 1)
end

local function decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The query parameters as { {key, value, start, stop}, ... } (keys percent-decoded, as libpq
-- decodes them; start/stop: the byte range of the value in spec).
local function params(spec)
  local q = spec:find("?", 1, true)
  local out = {}
  if not q then return out end
  local pos = q + 1
  while pos <= #spec + 1 do
    local amp = spec:find("&", pos, true) or (#spec + 1)
    local part = spec:sub(pos, amp - 1)
    local eq = part:find("=", 1, true)
    if eq then
      out[#out + 1] = { decode(part:sub(1, eq - 1)):lower(), part:sub(eq + 1), pos + eq, amp - 1 }
    end
    pos = amp + 1
  end
  return out
end

-- libpq reads user[:password]@ from the start of the authority up to the first '@' that comes
-- before any '/' (src/interfaces/libpq/fe-connect.c, conninfo_uri_parse_options): so does this.
local function userinfo_range(spec)
  local s = M.scheme_of(spec)
  local start = #s + 1
  local at = spec:find("[@/]", start)
  if at and spec:sub(at, at) == "@" then return start, at - 1 end
  return nil
end

-- The name of the field that holds a password ("the user:password part", "password",
-- "sslpassword"), or nil when there is none.
function M.password_field(spec)
  local a, b = userinfo_range(spec)
  if a and spec:sub(a, b):find(":", 1, true) then return "the user:password part" end
  for _, p in ipairs(params(spec)) do
    if p[1] == "password" or p[1] == "sslpassword" then return "the " .. p[1] .. "= parameter" end
  end
  return nil
end

-- The URL with any password replaced by "****": what a message may show.
function M.redact(spec)
  if type(spec) ~= "string" or not M.is_postgres(spec) then return spec end
  local cuts = {}
  local a, b = userinfo_range(spec)
  if a then
    local colon = spec:find(":", a, true)
    if colon and colon <= b then cuts[#cuts + 1] = { colon + 1, b } end
  end
  for _, p in ipairs(params(spec)) do
    if p[1] == "password" or p[1] == "sslpassword" then cuts[#cuts + 1] = { p[3], p[4] } end
  end
  table.sort(cuts, function(x, y) return x[1] > y[1] end)
  for _, c in ipairs(cuts) do spec = spec:sub(1, c[1] - 1) .. "****" .. spec:sub(c[2] + 1) end
  return spec
end

-- Whether the URL sets a libpq parameter itself (e.g. connect_timeout).
function M.has_param(spec, name)
  for _, p in ipairs(params(spec)) do
    if p[1] == name then return true end
  end
  return false
end

-- The URL with extra parameters appended (pairs of already URL-safe strings).
function M.with_params(spec, extra)
  local parts = {}
  for _, kv in ipairs(extra) do parts[#parts + 1] = kv[1] .. "=" .. kv[2] end
  if #parts == 0 then return spec end
  local last = spec:sub(-1)
  local sep = not spec:find("?", 1, true) and "?" or ((last == "?" or last == "&") and "" or "&")
  return spec .. sep .. table.concat(parts, "&")
end

return M
