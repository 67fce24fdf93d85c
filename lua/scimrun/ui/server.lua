-- The HTTP side of `scimrun ui`: one handler on the runtime's libuv HTTP server (the one the
-- sandbox uses) that serves the embedded page, /metrics and the JSON API, and refuses what it
-- must before any handler sees the request.
--
--   local srv = server.new { api = api, assets = assets, metrics = fn(req) -> res, token = "...",
--                            read_only = bool, port = N (set once listening), log = fn(level, msg, fields) }
--   srv:handle(req) -> res       (never raises: a failure is a 500 with a JSON body)
--
-- Safety, in this order, for every request:
--   * methods: GET and HEAD everywhere, POST on the API; anything else is 405.
--   * Host: an IP literal, `localhost`, or this machine's name, with the listening port. A name
--     that an attacker controls never passes, so a page of theirs cannot reach the console by
--     re-pointing its DNS name at 127.0.0.1 (DNS rebinding). 403 otherwise.
--   * Origin (API): absent (curl, scripts) or this console's own origin; a foreign Origin, the
--     opaque `null`, or Sec-Fetch-Site: cross-site is 403 (no cross-site request, not even a read).
--   * token (API): `Authorization: Bearer TOKEN` or `X-Scimrun-Token: TOKEN`, compared in constant
--     time; missing or wrong is 401. The page takes it from the URL's fragment (#token=...), which
--     the browser never sends to a server nor puts in a Referer.
--   * POST bodies: application/json, at most MAX_BODY bytes (the server answers 413 above
--     its own limit before Lua runs), valid JSON object; otherwise 415/400.
--   * --read-only: every POST is 403.
-- The page and its assets carry no data and need no token; the API answers no-store and every
-- response forbids framing and sniffing (Content-Security-Policy: scripts and styles from this
-- origin only, no inline script).
local json = require "scimrun.sandbox.json"
local url = require "scimrun.scim.url"

local M = {}

M.MAX_BODY = 64 * 1024

local S = {}
S.__index = S

local API_ERROR = {}

-- Raised by API handlers: answered as status with {"error": message}.
function M.fail(status, fmt, ...)
  error(setmetatable({ status = status, message = select("#", ...) > 0 and fmt:format(...) or fmt }, API_ERROR), 0)
end

function M.is_error(e) return getmetatable(e) == API_ERROR end

local SECURITY = {
  ["X-Content-Type-Options"] = "nosniff",
  ["X-Frame-Options"] = "DENY",
  ["Referrer-Policy"] = "no-referrer",
  ["Cross-Origin-Resource-Policy"] = "same-origin",
  ["Content-Security-Policy"] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    .. "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}

local function headers(extra)
  local h = {}
  for k, v in pairs(SECURITY) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

function M.json(status, body, extra)
  local h = headers(extra)
  h["Content-Type"] = "application/json; charset=utf-8"
  h["Cache-Control"] = "no-store"
  return { status = status, headers = h, body = json.encode(body) .. "\n" }
end

local function refuse(status, message, extra)
  return M.json(status, { error = message, status = status }, extra)
end

local url_decode, parse_query = url.decode, url.parse_query
M.url_decode = url_decode

-- Constant-time comparison of a presented token with the console's.
local function same_token(given, want)
  if type(given) ~= "string" or #given ~= #want then return false end
  local diff = 0
  for i = 1, #want do diff = bit.bor(diff, bit.bxor(given:byte(i), want:byte(i))) end
  return diff == 0
end

local function presented_token(h)
  local auth = h["authorization"]
  if type(auth) == "string" then
    local scheme, tok = auth:match("^%s*(%S+)%s+(%S+)%s*$")
    if scheme and scheme:lower() == "bearer" then return tok end
  end
  return h["x-scimrun-token"]
end

-- host[:port] of a Host header (or an origin's authority): the host lower-cased, the port.
local function split_authority(a)
  if type(a) ~= "string" then return nil end
  a = a:lower()
  local host, port = a:match("^%[([%x:%.]+)%]:?(%d*)$")
  if not host then host, port = a:match("^([^:/%[%]]+):?(%d*)$") end
  if not host then return nil end
  return host, tonumber(port)
end

local function is_ip_literal(host)
  if host:match("^%d+%.%d+%.%d+%.%d+$") then return true end
  return host:find(":", 1, true) ~= nil and host:match("^[%x:%.]+$") ~= nil
end

function M.new(o)
  local self = setmetatable({
    api = o.api, assets = o.assets or {}, metrics = o.metrics, token = o.token, read_only = o.read_only,
    port = o.port, hostnames = {}, log = o.log or function(level, msg, fields)
      if scimrun and scimrun.log then scimrun.log.emit(level, msg, fields or {}) end
    end,
  }, S)
  for _, h in ipairs(o.hostnames or {}) do self.hostnames[h:lower()] = true end
  self.hostnames.localhost = true
  return self
end

-- True when the Host header names this console: see the top of the file.
function S:host_ok(h)
  local host, port = split_authority(h)
  if not host then return false end
  if port ~= self.port then return false end
  return is_ip_literal(host) or self.hostnames[host] == true
end

function S.origin_ok(_, req)
  local h = req.headers
  local site = h["sec-fetch-site"]
  if site == "cross-site" then return false, "cross-site request (Sec-Fetch-Site: cross-site)" end
  local origin = h["origin"]
  if origin == nil then return true end
  if origin ~= "http://" .. tostring(h.host):lower() then
    return false, ("the request comes from another site (Origin: %s)"):format(origin)
  end
  return true
end

local function asset_response(a, method)
  return { status = 200, headers = headers { ["Content-Type"] = a.type, ["Cache-Control"] = "no-cache" },
           body = method == "HEAD" and "" or a.body }
end

function S:api_request(req, path)
  local h = req.headers
  local ok, why = self:origin_ok(req)
  if not ok then
    self.log("warn", "ui: refused a request", { method = req.method, path = path, from = req.remote, why = why })
    return refuse(403, why .. "; the console answers its own page only")
  end
  if not same_token(presented_token(h), self.token) then
    self.log("warn", "ui: refused a request", { method = req.method, path = path, from = req.remote,
      why = presented_token(h) and "wrong token" or "no token" })
    return refuse(401, "missing or wrong token: open the URL scimrun ui printed (it ends in #token=...), "
      .. "or send Authorization: Bearer TOKEN", { ["WWW-Authenticate"] = 'Bearer realm="scimrun ui"' })
  end
  local body
  if req.method == "POST" then
    if self.read_only then
      return refuse(403, "read-only: scimrun ui was started with --read-only, so no action is allowed")
    end
    local ct = (h["content-type"] or ""):lower()
    if not ct:match("^application/json") then
      return refuse(415, "POST bodies must be JSON (Content-Type: application/json)")
    end
    if #(req.body or "") > M.MAX_BODY then
      return refuse(413, ("the body is larger than %d bytes"):format(M.MAX_BODY))
    end
    local err
    body, err = json.decode(req.body or "")
    if type(body) ~= "table" or json.is_array(body) then
      return refuse(400, "the body must be a JSON object" .. (err and (": " .. err) or ""))
    end
  end
  local segs = {}
  for s in path:gmatch("[^/]+") do segs[#segs + 1] = url_decode(s) end
  table.remove(segs, 1) -- "api"
  local call = { method = req.method == "HEAD" and "GET" or req.method, segs = segs, query = parse_query(req.query),
                 body = body, remote = req.remote, path = path }
  local rok, status, result = pcall(self.api.dispatch, self.api, call)
  if not rok then
    if M.is_error(status) then return refuse(status.status, status.message) end
    self.log("error", "ui: API handler failed", { method = req.method, path = path, error = tostring(status) })
    return refuse(500, "internal error: " .. tostring(status):sub(1, 300))
  end
  local res = M.json(status, result)
  if req.method == "HEAD" then res.body = "" end
  return res
end

function S:route(req)
  local method = req.method or "GET"
  local path = req.path or "/"
  local h = req.headers or {}
  req.headers = h
  if not self:host_ok(h.host) then
    self.log("warn", "ui: refused a request", { method = method, path = path, from = req.remote,
      why = "Host " .. tostring(h.host) })
    return refuse(403, ("Host %s is not this console's address: open http://127.0.0.1:%s/ (a DNS name pointing "
      .. "here is refused, against DNS rebinding)"):format(tostring(h.host), tostring(self.port)))
  end
  local is_api = path == "/api" or path:sub(1, 5) == "/api/"
  if method ~= "GET" and method ~= "HEAD" and not (method == "POST" and is_api) then
    return refuse(405, method .. " is not allowed here", { Allow = is_api and "GET, HEAD, POST" or "GET, HEAD" })
  end
  if is_api then return self:api_request(req, path) end
  if path == "/metrics" then
    if not self.metrics then return refuse(404, "no metrics here") end
    return self.metrics(req)
  end
  local name = path == "/" and "index.html" or path:match("^/([%w%-_]+%.%w+)$")
  local a = name and self.assets[name]
  if a then return asset_response(a, method) end
  if path == "/favicon.ico" then return { status = 204, headers = headers() } end
  return { status = 404, headers = headers { ["Content-Type"] = "text/plain; charset=utf-8" },
           body = "not found: scimrun ui serves / (the page), /api/... and /metrics\n" }
end

function S:handle(req)
  local ok, res = pcall(self.route, self, req)
  if ok then return res end
  self.log("error", "ui: request failed", { path = tostring(req.path), error = tostring(res) })
  return refuse(500, "internal error")
end

return M
