-- The embedded SCIM 2.0 service provider: a request -> response handler with fault injection.
--   local sandbox = require "scimrun.sandbox"
--   sb, err = sandbox.new{ token, faults = SPEC, seed = 1, persist = FILE, base_path = "/scim/v2",
--                          on_request = fn(info) }
--   sb:handle(req) -> res   req {method, path, query, headers (lower-case names), body};
--                           res {status, headers, body} or {drop = true}. May sleep: call in a task.
--   sb:set_faults(spec, seed) -> true | nil, err;  sb:stats();  sb:dump();  sb:reset();  sb:close()
--   sandbox.start{ host, port = 0, token, faults, seed, persist } -> server | nil, err
--     server = { url, token, port, sb, close = fn }   (needs scimrun.httpserver)
-- Routes: BASE/Users, BASE/Groups (+ /{id}, /.search), BASE/ServiceProviderConfig, /Schemas,
-- /ResourceTypes; /_admin/{stats,dump,faults,reset,token} (the token the sandbox started with,
-- never faulted). POST /_admin/token {"token": "NEW"} rotates the SCIM token (the old one is
-- refused from then on, as a provider does with an expired or revoked token); {"token": null}
-- revokes it without a new one; "status": 403 answers refused requests 403 instead of 401 (a
-- token without the scope). The admin endpoints keep the starting token.
-- /_admin/stats: requests, by_status ("METHOD STATUS"), by_route ("PATCH /Groups/{id}" counts
-- the group PATCHes clients sent, faulted ones included), faults, injected, patchcost_s (the
-- seconds the patchcost fault charged), users, groups, fault_spec, seed.
local json = require "scimrun.sandbox.json"
local url = require "scimrun.scim.url"
local store_mod = require "scimrun.sandbox.store"
local faults_mod = require "scimrun.sandbox.faults"
local endpoints = require "scimrun.sandbox.endpoints"
local discovery = require "scimrun.sandbox.discovery"

local M = {}

local Sandbox = {}
Sandbox.__index = Sandbox

local function random_token()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(24)
  if f then f:close() end
  if not bytes or #bytes ~= 24 then
    local t = {}
    for i = 1, 24 do t[i] = string.char(math.random(0, 255)) end
    bytes = table.concat(t)
  end
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end
M.random_token = random_token

local function fresh_stats()
  return { requests = 0, by_status = {}, by_route = {}, faults = {}, injected = 0, patchcost_s = 0 }
end

function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("sandbox.new expects a table of options", 2) end
  local token = opts.token
  if token ~= nil and (type(token) ~= "string" or token == "") then
    error("sandbox.new: token must be a non-empty string", 2)
  end
  local st, err = store_mod.new({ persist = opts.persist })
  if not st then return nil, err end
  local base_path = (opts.base_path or "/scim/v2"):gsub("/+$", "")
  token = token or random_token()
  local self = setmetatable({
    token = token,            -- what SCIM requests must carry (POST /_admin/token changes it)
    admin_token = token,      -- what the admin endpoints take: the token the sandbox started with
    refused_status = 401,
    store = st,
    base_path = base_path,
    clock = opts.clock or (scimrun and scimrun.wall) or os.time,
    now = opts.now or (scimrun and scimrun.now) or os.clock,
    sleep = opts.sleep or (scimrun and scimrun.sleep),
    on_request = opts.on_request,
    on_warning = opts.on_warning or function(msg)
      if scimrun and scimrun.log then scimrun.log.emit("warn", "sandbox: " .. tostring(msg), {}) end
    end,
    stats_data = fresh_stats(),
    group_busy = {}, -- patchcost: group id -> when the PATCHes queued on it are served
    closed = false,
  }, Sandbox)
  local ok, ferr = self:set_faults(opts.faults, opts.seed)
  if not ok then return nil, ferr end
  return self
end

function Sandbox:set_faults(spec, seed)
  local inj, err = faults_mod.new(spec, seed or 1, self.now())
  if not inj then return nil, err end
  self.injector = inj
  return true
end

-- Sleeps in short steps so close() releases hung requests (and lets the loop end).
function Sandbox:pause(seconds)
  local deadline = self.now() + seconds
  while not self.closed do
    local left = deadline - self.now()
    if left <= 0 then break end
    self.sleep(math.min(left, 0.25))
  end
end

function Sandbox:close()
  self.closed = true
  self.store:close()
end

-- request plumbing --------------------------------------------------------------------------

local url_decode, parse_query = url.decode, url.parse_query

local function authorized(self, headers, want)
  want = want or self.token
  if want == nil then return false end -- revoked
  local h = headers["authorization"]
  if type(h) ~= "string" then return false end
  local scheme, tok = h:match("^%s*(%S+)%s+(%S+)%s*$")
  if not scheme or scheme:lower() ~= "bearer" or #tok ~= #want then return false end
  local diff = 0
  for i = 1, #tok do
    if tok:byte(i) ~= want:byte(i) then diff = diff + 1 end
  end
  return diff == 0
end

local function unauthorized(status)
  if status == 403 then
    return endpoints.error(403, nil, "the access token lacks the scope this request needs (insufficient_scope)")
  end
  return endpoints.error(401, nil, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
    { ["WWW-Authenticate"] = 'Bearer realm="scimrun-sandbox", error="invalid_token"' })
end

local KINDS = { users = "Users", groups = "Groups" }

local function method_not_allowed(method, allow)
  return endpoints.error(405, nil, ("%s is not allowed here (allowed: %s)"):format(method, allow), { Allow = allow })
end

local DISCOVERY = { serviceproviderconfig = "/ServiceProviderConfig", schemas = "/Schemas",
  resourcetypes = "/ResourceTypes", bulk = "/Bulk" }

-- The route a SCIM path (below the base path) names, for dispatch and for the stats.
local function route_of(segs)
  local first = segs[1] and segs[1]:lower()
  local kind = first and KINDS[first]
  if kind then
    if #segs == 1 then return "/" .. kind, kind end
    if #segs == 2 and segs[2] == ".search" then return "/" .. kind .. "/.search", kind end
    if #segs == 2 then return "/" .. kind .. "/{id}", kind end
  elseif first and DISCOVERY[first] then
    if #segs == 1 then return DISCOVERY[first] end
    if #segs == 2 and first ~= "serviceproviderconfig" and first ~= "bulk" then return DISCOVERY[first] .. "/{id}" end
  end
  return "other"
end

local function route_scim(self, method, segs, route, kind, ctx)
  if kind then
    local id = segs[2]
    if route == "/" .. kind then
      if method == "GET" then return endpoints.list(self, kind, ctx) end
      if method == "POST" then return endpoints.create(self, kind, ctx) end
      return method_not_allowed(method, "GET, POST")
    end
    if route == "/" .. kind .. "/.search" then
      if method == "POST" then return endpoints.search(self, kind, ctx) end
      return method_not_allowed(method, "POST")
    end
    if method == "GET" then return endpoints.get(self, kind, id, ctx) end
    if method == "PUT" then return endpoints.replace(self, kind, id, ctx) end
    if method == "PATCH" then return endpoints.patch(self, kind, id, ctx) end
    if method == "DELETE" then return endpoints.delete(self, kind, id, ctx) end
    return method_not_allowed(method, "GET, PUT, PATCH, DELETE")
  end
  if route == "other" then return endpoints.error(404, nil, "no such endpoint: /" .. table.concat(segs, "/")) end
  if route == "/Bulk" then
    return endpoints.error(501, nil, "bulk operations are not supported (ServiceProviderConfig bulk.supported=false)")
  end
  if method ~= "GET" then return method_not_allowed(method, "GET") end
  if route == "/ServiceProviderConfig" then return endpoints.reply(200, discovery.service_provider_config(ctx.base)) end
  local items = route:find("^/Schemas") and discovery.schemas(ctx.base) or discovery.resource_types(ctx.base)
  if #segs == 1 then return endpoints.reply(200, discovery.list(items)) end
  for _, it in ipairs(items) do
    if it.id:lower() == segs[2]:lower() then return endpoints.reply(200, it) end
  end
  return endpoints.error(404, nil, ("%s %s not found"):format(route:match("^/(%a+)"), segs[2]))
end

function Sandbox:stats()
  local s = json.copy(self.stats_data)
  s.users = self.store:count("Users")
  s.groups = self.store:count("Groups")
  s.fault_spec = self.injector.spec
  s.seed = self.injector.seed
  return s
end

function Sandbox:dump()
  local function strip(list)
    local out = json.array({})
    for _, r in ipairs(list) do
      local c = json.copy(r)
      c.password = nil
      out[#out + 1] = c
    end
    return out
  end
  return { users = strip(self.store:list("Users")), groups = strip(self.store:list("Groups")) }
end

function Sandbox:reset()
  self.token, self.refused_status = self.admin_token, 401 -- a rotated or revoked token too
  self.store:reset()
  self.stats_data = fresh_stats()
  self.group_busy = {}
  self:set_faults(self.injector.spec, self.injector.seed)
end

local function route_admin(self, method, name, ctx)
  if name == "stats" and method == "GET" then return endpoints.reply(200, self:stats()) end
  if name == "dump" and method == "GET" then return endpoints.reply(200, self:dump()) end
  if name == "faults" and method == "GET" then
    return endpoints.reply(200, { spec = self.injector.spec, seed = self.injector.seed })
  end
  if name == "faults" and method == "POST" then
    local body = ctx.body
    if type(body) ~= "table" then
      return endpoints.error(400, "invalidSyntax", 'expected {"spec": "...", "seed": n}')
    end
    local spec = body.spec
    if spec == json.null then spec = nil end
    local ok, err = self:set_faults(spec, tonumber(body.seed) or self.injector.seed)
    if not ok then return endpoints.error(400, "invalidValue", err) end
    return endpoints.reply(200, { spec = self.injector.spec, seed = self.injector.seed })
  end
  if name == "reset" and method == "POST" then
    self:reset()
    return endpoints.reply(200, { reset = true })
  end
  if name == "token" and method == "POST" then
    local body = ctx.body
    local new, status = type(body) == "table" and body.token, type(body) == "table" and body.status
    if type(body) ~= "table" or (new ~= json.null and (type(new) ~= "string" or not new:find("^%S+$")))
        or (status ~= nil and status ~= 401 and status ~= 403) then
      return endpoints.error(400, "invalidSyntax", 'expected {"token": "NEW" or null, "status": 401|403}')
    end
    self.token = new ~= json.null and new or nil
    self.refused_status = status or 401
    if self.token and scimrun and scimrun.log and scimrun.log.add_secret then scimrun.log.add_secret(self.token) end
    return endpoints.reply(200, { rotated = self.token ~= nil, revoked = self.token == nil,
                                  status = self.refused_status })
  end
  return endpoints.error(404, nil, "admin endpoints: GET stats, GET dump, GET|POST faults, POST reset, POST token")
end

local function bump(t, k) t[k] = (t[k] or 0) + 1 end

local function split_path(path)
  local segs = {}
  for s in path:gmatch("[^/]+") do segs[#segs + 1] = url_decode(s) end
  return segs
end

local function decode_body(req)
  if req.body == nil or req.body == "" then return nil end
  return json.decode(req.body)
end

-- The patchcost fault: a PATCH of a group waits for the PATCHes of that group that arrived
-- before it, then costs per_member x the members the group has now.
local function pay_patch_cost(self, id, per_member)
  local group = self.store:get("Groups", id)
  if not group then return end
  local cost = per_member * (type(group.members) == "table" and #group.members or 0)
  local now = self.now()
  local served = math.max(now, self.group_busy[id] or now) + cost
  self.group_busy[id] = served
  self.stats_data.patchcost_s = self.stats_data.patchcost_s + cost
  self:pause(served - now)
end

-- Runs the SCIM request proper: auth, body, dispatch.
local function process(self, req, segs, route, kind, ctx)
  if not authorized(self, ctx.headers) then return unauthorized(self.refused_status) end
  if req.body ~= nil and req.body ~= "" then
    local body, err = decode_body(req)
    if body == nil then return endpoints.error(400, "invalidSyntax", "the body is not valid JSON: " .. err) end
    ctx.body = body
  end
  if ctx.patch_cost and route == "/Groups/{id}" then pay_patch_cost(self, segs[2], ctx.patch_cost) end
  local ok, res = pcall(route_scim, self, req.method, segs, route, kind, ctx)
  if not ok then
    if self.on_warning then self.on_warning("sandbox internal error: " .. tostring(res)) end
    return endpoints.error(500, nil, "internal error in the sandbox: " .. tostring(res))
  end
  return res
end

local function fault_response(f)
  local headers = {}
  if f.retry_after then headers["Retry-After"] = tostring(math.ceil(f.retry_after)) end
  local detail = f.kind == "outage" and "service unavailable (injected outage)"
    or f.kind == "ratelimit" and "too many requests (injected rate limit)"
    or ("injected fault: HTTP %d"):format(f.status)
  return endpoints.error(f.status, f.scim_type, detail, headers)
end

local function handle(self, req)
  local started = self.now()
  local method = (req.method or "GET"):upper()
  local headers = req.headers or {}
  local path = req.path or "/"
  local segs = split_path(path)
  local base_segs = split_path(self.base_path)
  local under_base = #segs >= #base_segs
  for i = 1, #base_segs do
    if not under_base or segs[i] ~= base_segs[i] then under_base = false break end
  end
  if under_base then
    for _ = 1, #base_segs do table.remove(segs, 1) end
  end
  local ctx = { headers = headers, params = parse_query(req.query),
    base = ("http://%s%s"):format(headers.host or "127.0.0.1", self.base_path) }
  local prefer = headers.prefer
  ctx.prefer_minimal = (method == "PUT" or method == "PATCH") and type(prefer) == "string"
    and prefer:lower():find("return=minimal", 1, true) ~= nil

  if segs[1] == "_admin" then
    if not authorized(self, headers, self.admin_token) then return unauthorized() end
    if #segs ~= 2 then return route_admin(self, method, "", ctx) end
    if req.body and req.body ~= "" then
      local body, err = decode_body(req)
      if body == nil then return endpoints.error(400, "invalidSyntax", "the body is not valid JSON: " .. err) end
      ctx.body = body
    end
    return route_admin(self, method, segs[2], ctx)
  end

  local st = self.stats_data
  st.requests = st.requests + 1
  local decision = self.injector:decide(method, started)
  if decision.latency > 0 then self:pause(decision.latency) end
  ctx.patch_cost = decision.patch_cost
  local f = decision.fault
  local route, kind = route_of(segs)
  local res, outcome
  if f then
    st.injected = st.injected + 1
    bump(st.faults, f.kind)
  end
  if f and f.status then
    res, outcome = fault_response(f), tostring(f.status)
  elseif f and f.kind == "reset" then
    res, outcome = { drop = true }, "reset"
  elseif f and f.kind == "hang" then
    self:pause(f.hang_for)
    res, outcome = { drop = true }, "hang"
  else
    res = process(self, req, segs, route, kind, ctx)
    outcome = tostring(res.status)
    if f and f.kind == "lost" then
      outcome = outcome .. " lost"
      res = { drop = true }
    end
  end
  bump(st.by_status, method .. " " .. outcome)
  bump(st.by_route, method .. " " .. route)
  if self.on_request then
    self.on_request({ index = decision.index, method = method, path = path, status = res.status,
      outcome = outcome, fault = f and f.kind, ms = (self.now() - started) * 1000 })
  end
  return res
end

function Sandbox:handle(req)
  local res = handle(self, req)
  if self.injector.drops and not res.drop then
    -- libcurl silently re-sends a request once when a *reused* connection closes without an
    -- answer; one connection per request keeps every injected drop visible to the client.
    res.headers = res.headers or {}
    res.headers.Connection = "close"
  end
  return res
end

-- server wrapper ------------------------------------------------------------------------------

function M.start(opts)
  opts = opts or {}
  local ok, hs = pcall(require, "scimrun.httpserver")
  if not ok then return nil, "the sandbox needs scimrun.httpserver, which this build lacks: " .. tostring(hs) end
  local sb, err = M.new({ token = opts.token, faults = opts.faults, seed = opts.seed, persist = opts.persist,
    base_path = opts.base_path, on_request = opts.on_request, on_warning = opts.on_warning })
  if not sb then return nil, err end
  local host = opts.host or "127.0.0.1"
  local srv, serr = hs.listen({ host = host, port = opts.port or 0, handler = function(req) return sb:handle(req) end })
  if not srv then return nil, ("cannot listen on %s:%s: %s"):format(host, tostring(opts.port or 0), tostring(serr)) end
  if scimrun and scimrun.log and scimrun.log.add_secret then scimrun.log.add_secret(sb.token) end
  local port = srv:port()
  local shown = host:find(":", 1, true) and ("[" .. host .. "]") or host
  if shown == "0.0.0.0" then shown = "127.0.0.1" end
  local server = { url = ("http://%s:%d%s"):format(shown, port, sb.base_path), token = sb.token, port = port,
    sb = sb, server = srv }
  function server.close()
    sb:close()
    srv:close()
  end
  return server
end

return M
