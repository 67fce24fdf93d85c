-- URL parts of the client's requests: query strings and path segments, percent-encoded.
-- Contract:
--   urlencode(s) -> s with everything but RFC 3986 unreserved characters percent-encoded (a
--       space is %20, never +)
--   query({ {name, value}, ... }) -> "?k=v&k2=v2" in the given order, nil values skipped, "" when
--       none is left
--   segment(s) -> one path segment (a resource id chosen by the server may contain anything)
--   decode(s) -> s with %XX decoded and + read as a space (what a server receives)
--   parse_query(q) -> { name = value } of a query string without its "?" ({} for nil or "")
-- Filter text is built by scimrun.protocol.filter and then encoded here as one query parameter.
local M = {}

function M.urlencode(s)
  return (tostring(s):gsub("[^A-Za-z0-9%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

function M.query(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    if kv[2] ~= nil then parts[#parts + 1] = M.urlencode(kv[1]) .. "=" .. M.urlencode(kv[2]) end
  end
  if #parts == 0 then return "" end
  return "?" .. table.concat(parts, "&")
end

function M.segment(s)
  return M.urlencode(s)
end

function M.decode(s)
  return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function M.parse_query(q)
  local out = {}
  if not q or q == "" then return out end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[M.decode(k)] = M.decode(v)
  end
  return out
end

return M
