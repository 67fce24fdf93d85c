-- Error classification: turns an error table (see the error contract in DESIGN.md) into a
-- class the retry layer acts on.
--
-- classify.classify(pol, err, op) -> class, rule_id, suggest
--   The policy's `classify` rules are tried in order (first match wins), then DEFAULTS.
--   A rule matches when every field it gives matches: status (number, list, "5xx", "500-504",
--   { min, max }), scim_type, kind (transport error), header = { name, value (string or Lua
--   pattern) }, op ("users.*"), detail (Lua pattern), when = function(err, op) -> bool.
--   rule_id is the rule's name, "classify[N]" (its index in the effective list) or
--   "default:NAME". An error that already carries a class and neither a status nor a transport
--   kind (an error the caller classified itself) keeps it, with rule_id "caller".
-- classify.retryable(class) -> bool     (transient and rate_limited only)
-- Class auth does more than not retrying: the retry layer stops sending to that target for the
-- rest of the run and the engine stops dispatching (scimrun.resilience.retry, scimrun.workflow).
local policy = require "scimrun.resilience.policy"

local M = {}

-- The built-in rules: the same, by name and effect, as the `classify` list of
-- policies/default.lua (spec/unit/classify_spec.lua keeps them equal), so a policy that does not
-- extend default classifies alike. Anything no rule matches is permanent ("default:other").
M.AUTH_SUGGEST = "token rejected: check SCIM_TOKEN (is it current, with the scopes the provider needs?)"
M.DEFAULTS = {
  { name = "transport-transient", kind = { "timeout", "connect", "reset", "dns" }, class = "transient" },
  { name = "tls", kind = "tls", class = "permanent",
    suggest = "TLS verification failed: check the server certificate; for a private CA give its PEM file "
      .. "as scim.connect's ca_file or SCIMRUN_CA_FILE" },
  { name = "http-5xx-transient", status = { 500, 502, 503, 504 }, class = "transient" },
  { name = "http-408", status = 408, class = "transient" },
  { name = "http-429", status = 429, class = "rate_limited" },
  { name = "http-auth", status = { 401, 403 }, class = "auth", suggest = M.AUTH_SUGGEST },
  { name = "http-409", status = 409, class = "conflict" },
  { name = "http-412", status = 412, class = "conflict",
    suggest = "precondition failed: the resource changed since it was read; re-read it and retry" },
  { name = "http-413", status = 413, class = "permanent",
    suggest = "request too large for the server: send fewer members or attributes per request" },
  { name = "http-client-error", status = { 400, 404, 422 }, class = "permanent",
    suggest = "fix the data in the source, then: scimrun dlq replay ID" },
}

local RETRYABLE = { transient = true, rate_limited = true }
local KNOWN = { transient = true, rate_limited = true, permanent = true, conflict = true, auth = true,
                circuit_open = true }

function M.retryable(class) return RETRYABLE[class] == true end

local function status_matches(m, s)
  if type(m) == "number" then return s == m end
  if type(m) == "string" then
    local d = m:match("^(%d)xx$")
    if d then return math.floor(s / 100) == tonumber(d) end
    local a, b = m:match("^(%d+)%-(%d+)$")
    return a ~= nil and s >= tonumber(a) and s <= tonumber(b)
  end
  if m.min or m.max then return s >= m.min and s <= m.max end
  for _, x in ipairs(m) do
    if status_matches(x, s) then return true end
  end
  return false
end

local function one_of(m, v, fold)
  if v == nil then return false end
  if fold then v = v:lower() end
  if type(m) == "string" then return (fold and m:lower() or m) == v end
  for _, x in ipairs(m) do
    if (fold and x:lower() or x) == v then return true end
  end
  return false
end

local function header_value(headers, name)
  if type(headers) ~= "table" then return nil end
  local v = headers[name]
  if v ~= nil then return v end
  local mt = getmetatable(headers)
  if mt and mt.__lowercase_keys then return nil end -- a response's: looked up in any case already
  local lname = name:lower()
  for k, x in pairs(headers) do
    if type(k) == "string" and k:lower() == lname then return x end
  end
end
M.header_value = header_value

local op_patterns = setmetatable({}, { __mode = "k" })

local function op_matches(m, op)
  if op == nil then return false end
  local list = type(m) == "table" and m or { m }
  for _, p in ipairs(list) do
    local lp = op_patterns[list] and op_patterns[list][p]
    if not lp then
      op_patterns[list] = op_patterns[list] or {}
      lp = policy.glob_to_lua(p)
      op_patterns[list][p] = lp
    end
    if op:match(lp) then return true end
  end
  return false
end

local warned = setmetatable({}, { __mode = "k" })

local function rule_matches(r, err, op)
  if r.status ~= nil and (type(err.status) ~= "number" or not status_matches(r.status, err.status)) then
    return false
  end
  if r.kind ~= nil and not one_of(r.kind, err.kind, false) then return false end
  if r.scim_type ~= nil and (type(err.scim_type) ~= "string" or not one_of(r.scim_type, err.scim_type, true)) then
    return false
  end
  if r.op ~= nil and not op_matches(r.op, op) then return false end
  if r.detail ~= nil and (type(err.detail) ~= "string" or not err.detail:find(r.detail)) then return false end
  if r.header ~= nil then
    local v = header_value(err.headers, r.header.name or r.header[1])
    if v == nil then return false end
    local want = r.header.value or r.header[2]
    if want ~= nil then
      v = tostring(v)
      if v ~= want and not v:find(want) then return false end
    end
  end
  if r.when ~= nil then
    local ok, res = policy.guard(r.when, "classify rule " .. tostring(r.name or "when"), err, op)
    if not ok then
      if not warned[r] and rawget(_G, "scimrun") then
        warned[r] = true
        scimrun.log.emit("error", "classify rule predicate failed; treating it as not matching",
                         { rule = r.name, error = tostring(res) })
      end
      return false
    end
    if not res then return false end
  end
  return true
end

function M.classify(pol, err, op)
  if type(err) ~= "table" then err = { detail = tostring(err) } end
  if err.class and KNOWN[err.class] and err.status == nil and err.kind == nil then
    return err.class, err.rule or "caller", err.suggest
  end
  local rules = pol and pol.classify or {}
  for i, r in ipairs(rules) do
    if rule_matches(r, err, op) then return r.class, r.name or ("classify[" .. i .. "]"), r.suggest end
  end
  for _, r in ipairs(M.DEFAULTS) do
    if rule_matches(r, err, op) then return r.class, r.name, r.suggest end
  end
  return "permanent", "default:other", nil
end

return M
