-- SCIM 2.0 client (RFC 7643/7644) for workflows.
--   local scim = require "scimrun.scim"
--   local sp = scim.connect { base_url = ..., token_env = "SCIM_TOKEN" }
--   sp.users:ensure { userName = "alice", ... }      -> resource (or nil, err)
--     what it did ("created"|"skipped"|"updated"|"adopted") is noted as the running item's outcome
--     (scimrun.engine.outcome; outside a run, nothing) and returned third: `local u, err, how =`
--     the existing user is found by externalId, then by userName ignoring case (connect option
--     match = { "externalId", "userName" }, or ensure(attrs, { match = ... })): a user renamed
--     at the source is renamed (PATCH userName), not created again; only the attributes that
--     differ are sent, and an unchanged user gets no write at all
--   sp.groups:add_members(group_id, { user_id, ... })   concurrent calls for one group share one
--     PATCH (scimrun.scim.member_batch; option member_batch_window, seconds, 0 = off)
-- Every request goes through one executor (the retry layer, scimrun.resilience.retry) under an operation
-- name such as "users.create"; without one, each operation is attempted once. The bearer token
-- is registered with the log redactor and never copied into an error, a plan or a log line.
-- Operations live in scimrun.scim.resource; one HTTP attempt in scimrun.scim.request.
local request = require "scimrun.scim.request"
local resource = require "scimrun.scim.resource"
local filter = require "scimrun.protocol.filter"

local M = {}
M.filter = filter

local function log() return rawget(_G, "scimrun") and scimrun.log end

-- Seconds a batch of membership changes to one group stays open after its latest caller joined
-- (connect option member_batch_window; see scimrun.scim.member_batch).
M.default_member_batch_window = 0.02

-- A single attempt, no retries: used when no executor is given (one retry layer only).
M.single_attempt = { run = function(_, _, _, attempt_fn, _) return attempt_fn(1) end }

-- Discovery results per base URL, shared by every connection in the process.
local discovered = {}

-- Forgets cached discovery results (specs; or after the provider changed its configuration).
function M.forget_discovery(base_url)
  if base_url then discovered[base_url] = nil else discovered = {} end
end

local KNOWN_OPTIONS = {
  base_url = true, token_env = true, token_file = true, token = true, headers = true, executor = true,
  target = true, match = true, match_attribute = true, max_members_per_patch = true, timeout = true,
  connect_timeout = true,
  insecure = true, ca_file = true,
  patch = true, dry_run = true, discover = true, endpoints = true, page_size = true, max_pages = true,
  member_batch_window = true, events = true,
}

-- A configuration mistake in the workflow: an error of class "config" (exit code 2) that cites
-- the workflow's file:line.
local function fail(msg, level)
  local info = debug.getinfo((level or 1) + 1, "Sl")
  local where = info and info.currentline and info.currentline > 0
    and (info.short_src .. ":" .. info.currentline .. ": ") or ""
  error(require("scimrun.errors").new { class = "config", detail = where .. "scim.connect: " .. msg }, 0)
end

-- The permission bits of path as `ls -l` shows them ("rw-------"), or nil, message, code
-- (scimrun.fs's: "ENOENT" when it does not exist).
local function file_mode(path)
  local st, err, code = require("scimrun.fs").stat(path)
  if not st then return nil, err, code end
  local band, lshift = bit.band, bit.lshift
  local out = {}
  for i, c in ipairs { "r", "w", "x", "r", "w", "x", "r", "w", "x" } do
    out[i] = band(st.perm, lshift(1, 9 - i)) ~= 0 and c or "-"
  end
  return table.concat(out)
end

local function read_token(o)
  local sources = (o.token and 1 or 0) + (o.token_env and 1 or 0) + (o.token_file and 1 or 0)
  if sources > 1 then fail("give only one of token, token_env, token_file", 3) end
  if o.token then
    if type(o.token) ~= "string" or o.token == "" then fail("token must be a non-empty string", 3) end
    return o.token
  end
  if o.token_env then
    if type(o.token_env) ~= "string" then fail("token_env must be the name of an environment variable", 3) end
    local t = os.getenv(o.token_env)
    if not t or t == "" then
      fail(("environment variable %s is not set; export %s=<bearer token>"):format(o.token_env, o.token_env), 3)
    end
    return t
  end
  if o.token_file then
    local path = o.token_file
    if type(path) ~= "string" then fail("token_file must be a path", 3) end
    local perms, serr, scode = file_mode(path)
    if not perms and scode == "ENOENT" then fail(("token_file %s does not exist"):format(path), 3) end
    if not perms then fail(("token_file %s cannot be read: %s"):format(path, serr), 3) end
    if perms:sub(4) ~= "------" then
      fail(("token_file %s is readable by others (mode %s); run: chmod 600 %s"):format(path, perms, path), 3)
    end
    local f, ferr = io.open(path, "rb")
    if not f then fail(("token_file %s cannot be read: %s"):format(path, tostring(ferr)), 3) end
    local t = f:read("*a"):gsub("^%s+", ""):gsub("%s+$", "")
    f:close()
    if t == "" then fail(("token_file %s is empty"):format(path), 3) end
    return t
  end
  return nil
end

local SP = {}
SP.__index = SP

function M.connect(o)
  if type(o) ~= "table" then fail("expects a table of options", 2) end
  for k in pairs(o) do
    if not KNOWN_OPTIONS[k] then fail(("unknown option %q"):format(tostring(k)), 2) end
  end
  -- Defaults come from the run this task belongs to (scimrun.ctx().run, set once by the runner:
  -- its retry layer, dry-run flag and policy), or stand alone outside a run.
  local run = rawget(_G, "scimrun") and scimrun.ctx and scimrun.ctx().run or {}
  local base = o.base_url
  -- --check sends nothing, so it needs no provider
  if run.offline and (base == nil or base == "") then base = "http://scimrun-check.invalid/scim/v2" end
  if type(base) ~= "string" or not base:find("^https?://[^/]") then
    fail(("base_url must be an http(s) URL, got %s (set SCIM_BASE_URL, or run with --sandbox)")
      :format(tostring(base)), 2)
  end
  base = base:gsub("/+$", "")
  -- Which existing user is the one a row means (scimrun.scim.resource R:match): the attributes
  -- tried in order. The default finds a user by externalId first, so a user renamed at the
  -- source is renamed at the provider rather than created again, then by userName (ignoring
  -- case). match_attribute (one attribute; the older option) matches by that one alone and
  -- treats a different externalId on both sides as another person.
  if o.match ~= nil and o.match_attribute ~= nil then fail("give only one of match, match_attribute", 2) end
  local match = o.match_attribute or "userName"
  if match ~= "userName" and match ~= "externalId" then
    fail("match_attribute must be \"userName\" or \"externalId\"", 2)
  end
  local order = o.match_attribute and { o.match_attribute } or o.match or { "externalId", "userName" }
  do
    local ok = type(order) == "table" and #order >= 1
    local seen = {}
    for k, a in pairs(ok and order or {}) do
      if type(k) ~= "number" or (a ~= "userName" and a ~= "externalId") or seen[a] then ok = false end
      seen[a] = true
    end
    if not ok then
      fail('match must be a list of "externalId" and/or "userName", in the order they are tried, e.g. '
        .. '{ "externalId", "userName" }', 2)
    end
  end
  if o.events ~= nil and (type(o.events) ~= "table" or type(o.events.emit) ~= "function") then
    fail("events must be an event stream (scimrun.engine.events.new())", 2)
  end
  local chunk = o.max_members_per_patch or run.max_members_per_patch or 100
  if type(chunk) ~= "number" or chunk < 1 or chunk % 1 ~= 0 then
    fail("max_members_per_patch must be a positive integer", 2)
  end
  if o.patch ~= nil and type(o.patch) ~= "boolean" then fail("patch must be true, false or nil", 2) end
  -- concurrent membership changes of one group share one PATCH (scimrun.scim.member_batch);
  -- 0 sends each call on its own
  local window = o.member_batch_window
  if window == nil then window = M.default_member_batch_window end
  if type(window) ~= "number" or window < 0 or window ~= window or window > 60 then
    fail("member_batch_window must be a number of seconds from 0 to 60 (0: no coalescing)", 2)
  end
  if o.executor ~= nil and (type(o.executor) ~= "table" or type(o.executor.run) ~= "function") then
    fail("executor must have a run(self, op, target, attempt_fn, opts) method", 2)
  end
  local token
  if not run.offline then token = read_token(o) end -- --check sends nothing: no token needed
  if token and log() then log().add_secret(token) end
  local host = base:match("^https?://([^/?#]+)")
  local version = rawget(_G, "scimrun") and scimrun.version or "dev"
  local sp = setmetatable({
    base_url = base,
    target = o.target or host,
    executor = o.executor or run.executor or M.single_attempt,
    match_attribute = match,
    match = order,
    -- the run's event stream: every write becomes a `write` event (the change diff and the
    -- audit trail are written from them)
    events = o.events or run.events,
    max_members_per_patch = chunk,
    member_batch_window = window,
    -- requests inside SP:call now (retries and waits included), when each task last used the
    -- connection and how long a call takes (moving average, seconds): a membership batch waits
    -- for the tasks that may still join it (scimrun.scim.member_batch)
    in_flight = 0,
    call_time = nil,
    last_used = setmetatable({}, { __mode = "k" }),
    backing_off = setmetatable({}, { __mode = "k" }), -- tasks sleeping out a backoff in SP:call -> wake time
    -- where the token comes from, named when the target rejects it (never the token itself)
    credential = o.token_env or (o.token_file and ("token_file " .. tostring(o.token_file)))
      or (o.token and "the token given to scim.connect") or nil,
    dry_run = o.dry_run == true or (o.dry_run == nil and run.dry_run == true),
    patch_override = o.patch,
    discover_enabled = o.discover ~= false,
    page_size = o.page_size or 100,
    max_pages = o.max_pages or 100000,
    endpoints = { users = "/Users", groups = "/Groups", config = "/ServiceProviderConfig" },
    _planned = {},
  }, SP)
  for k, v in pairs(o.endpoints or {}) do sp.endpoints[k] = v end
  -- conn is what request.send reads; the token lives only here and in the redactor.
  -- A private CA: the option, else SCIMRUN_CA_FILE, else what curl's own tools honour.
  local function env(name) local v = os.getenv(name); return v ~= "" and v or nil end
  local ca_file = o.ca_file or env("SCIMRUN_CA_FILE") or env("SSL_CERT_FILE") or env("CURL_CA_BUNDLE")
  if ca_file ~= nil then
    if type(ca_file) ~= "string" or ca_file == "" then fail("ca_file must be the path of a PEM file", 2) end
    local f = io.open(ca_file)
    if not f then
      fail(("ca_file %s cannot be read (from %s)"):format(ca_file, o.ca_file and "scim.connect"
        or env("SCIMRUN_CA_FILE") and "SCIMRUN_CA_FILE" or "SSL_CERT_FILE/CURL_CA_BUNDLE"), 2)
    end
    f:close()
  end
  local timeouts = run.timeouts or {}
  sp.conn = { base_url = base, token = token, headers = o.headers or {},
              timeout = o.timeout or timeouts.request or 30,
              connect_timeout = o.connect_timeout or timeouts.connect or 10,
              insecure = o.insecure == true, ca_file = ca_file, user_agent = "scimrun/" .. tostring(version),
              offline = run.offline }
  sp.users = resource.users(sp)
  sp.groups = resource.groups(sp)
  M._connections[#M._connections + 1] = sp
  return sp
end

-- Every connection made in this process (weak), so a dry run can list all planned writes.
M._connections = setmetatable({}, { __mode = "v" })

function M.planned_all()
  local out = {}
  for _, sp in pairs(M._connections) do
    for _, p in ipairs(sp:planned()) do
      local what = p.changes and #p.changes > 0 and ("  " .. require("scimrun.scim.changes").text(p.changes)) or ""
      out[#out + 1] = { op = p.op, summary = p.method .. " " .. p.url .. what }
    end
  end
  return out
end

-- The request body kept with a dead letter for replay: never a password.
local function replayable_body(body)
  if type(body) ~= "table" then return body end
  local copy = {}
  for k, v in pairs(body) do
    if type(k) ~= "string" or not k:lower():find("password", 1, true) then copy[k] = v end
  end
  local ok, json = pcall(require("cjson").encode, copy)
  return ok and json or nil
end

local function warn(msg, fields)
  local l = log()
  if l then l.emit("warn", msg, fields) end
end

-- Reads /ServiceProviderConfig once per base URL (SCIM 1.1: /ServiceProviderConfigs). A failure
-- never fails the run: the defaults (PATCH on, no ETags, no page cap) are used and logged.
local function discover(sp)
  local conn = sp.conn
  if conn.offline then return nil end -- --check: the defaults, without a word
  local paths = { sp.endpoints.config, "/ServiceProviderConfigs" }
  local saved_timeout = conn.timeout
  local dconn = setmetatable({ timeout = math.min(saved_timeout, 10) }, { __index = conn })
  local last_err
  for _, path in ipairs(paths) do
    local res, err = request.send(dconn, { op = "config.read", method = "GET", path = path })
    if res and type(res.json) == "table" then return res.json end
    last_err = err or { detail = "answered " .. tostring(res and res.status) .. " without JSON" }
    if err and err.status ~= 404 then break end
  end
  warn("ServiceProviderConfig unavailable; assuming PATCH supported, no ETags",
       { url = sp.base_url, detail = last_err and last_err.detail or "" })
  return nil
end

local function truthy(t, key)
  return type(t) == "table" and type(t[key]) == "table" and t[key].supported == true
end

-- Effective features: {patch, etag, filter, max_results, discovered}. Cached; concurrent
-- callers wait for the one discovery in flight.
function SP:features()
  local entry = discovered[self.base_url]
  if entry and entry.state == "done" then return self:_with_overrides(entry) end
  if entry and entry.state == "pending" then
    entry.waiters[#entry.waiters + 1] = coroutine.running()
    scimrun.park()
    return self:_with_overrides(discovered[self.base_url] or entry)
  end
  entry = { state = "pending", waiters = {}, patch = true, etag = false, filter = true }
  discovered[self.base_url] = entry
  local spc = self.discover_enabled and discover(self) or nil
  if spc then
    entry.discovered = true
    entry.patch = truthy(spc, "patch")
    entry.etag = truthy(spc, "etag")
    entry.filter = spc.filter == nil or truthy(spc, "filter")
    local mr = type(spc.filter) == "table" and tonumber(spc.filter.maxResults)
    if mr and mr >= 1 then entry.max_results = math.floor(mr) end
  end
  entry.state = "done"
  local waiters = entry.waiters
  entry.waiters = {}
  for _, co in ipairs(waiters) do scimrun.wake(co) end
  return self:_with_overrides(entry)
end

function SP:_with_overrides(entry)
  if self.patch_override ~= nil then
    return setmetatable({ patch = self.patch_override }, { __index = entry })
  end
  return entry
end

-- Called when PATCH answered 501: the target gets read-modify-PUT from now on.
function SP:patch_unsupported()
  local entry = discovered[self.base_url]
  if entry then entry.patch = false end
  self.patch_override = false
  warn("PATCH not implemented by the service provider; using read-modify-PUT", { url = self.base_url })
end

-- Writes recorded by a dry run, in order: {op, method, url, body}.
function SP:planned()
  local out = {}
  for i, p in ipairs(self._planned) do out[i] = p end
  return out
end

-- Runs one named operation through the executor. req: {op, method, path, query, body, if_match}.
-- extra.before_retry: adoption hook for an outcome-unknown create.
function SP:call(req, extra)
  if self.dry_run and req.method ~= "GET" then
    local n = #self._planned + 1
    local url = request.url_for(self.conn, req)
    self._planned[n] = { op = req.op, method = req.method, url = url, body = req.body,
                         changes = extra and extra.changes }
    local json
    if req.method == "POST" and type(req.body) == "table" then
      json = {}
      for k, v in pairs(req.body) do json[k] = v end
      json.id = "dry-run:" .. n
    end
    return { status = json and 201 or 204, json = json, headers = {}, url = url, dry_run = true }
  end
  local conn = self.conn
  local opts = {
    before_retry = extra and extra.before_retry, credential = self.credential,
    method = req.method, url = request.url_for(conn, req), payload = req.body,
  }
  -- In flight while the executor runs it (queued for the limiter or bulkhead, or sending), but
  -- not while it sleeps out a backoff: a membership batch waits for the tasks that may join it
  -- soon (scimrun.scim.member_batch), and call_time (how long a call's attempts take on the
  -- wire) stretches its window.
  local co = coroutine.running()
  local clock = rawget(_G, "scimrun") and scimrun.now
  local t0 = co and clock and clock()
  if t0 then
    self.last_used[co] = t0
    opts.on_backoff = function(sleeping, seconds)
      if sleeping then
        self.in_flight = self.in_flight - 1
        self.last_used[co] = nil
        self.backing_off[co] = seconds and clock() + seconds or math.huge -- when it wakes
        if self._member_queues then require("scimrun.scim.member_batch").backing_off(self, co) end
      else
        self.in_flight = self.in_flight + 1
        self.last_used[co] = clock()
        self.backing_off[co] = nil
      end
    end
  end
  self.in_flight = self.in_flight + 1
  local wire, sent = 0, 0 -- seconds of this call's attempts on the wire (queueing and backoffs excluded)
  local function attempt()
    -- An attempt never outlives the running step's timeouts.step deadline.
    local step = scimrun.ctx().step
    local left = step and step.deadline and step.deadline - scimrun.now()
    if not left then return request.send(conn, req) end
    local bounded = setmetatable({ timeout = math.max(left, 0.001) }, { __index = req })
    return request.send(conn, bounded)
  end
  local ok, res, err = pcall(self.executor.run, self.executor, req.op, self.target, function()
    if not t0 then return attempt() end
    local ta = clock()
    local r1, r2 = attempt()
    wire, sent = wire + (clock() - ta), sent + 1
    return r1, r2
  end, opts)
  self.in_flight = self.in_flight - 1
  if t0 then
    self.backing_off[co] = nil -- also when the executor raised in a backoff
    self.last_used[co] = clock()
    -- call_time is the server's pace, not the client's own: time queued for the rate limit or
    -- the bulkhead would stretch the membership batches' window just when the client is the
    -- bottleneck, and slower batches made a lower learned rate look binding (a spiral)
    -- (a call that never went out, refused by an open breaker or a rejected token, says nothing)
    if sent > 0 then self.call_time = self.call_time and (self.call_time * 0.9 + wire * 0.1) or wire end
  end
  if not ok then error(res, 0) end
  if res == nil and err == nil then
    err = request.error({ op = req.op, url = opts.url, method = req.method },
                        { class = "permanent", detail = "executor returned neither a result nor an error" })
  end
  if err and err.op == nil then err.op = req.op end
  if err and err.class == nil then
    -- no retry layer classified it (a connection made outside a run): the same built-in rules
    local class, rule, suggest = require("scimrun.resilience.classify").classify(nil, err, req.op)
    err.class, err.rule = class, rule
    if err.suggest == nil then err.suggest = suggest end
  end
  if err and req.body ~= nil and err.request_body == nil then err.request_body = replayable_body(req.body) end
  if req.method ~= "GET" and not (extra and extra.audited) and self.events then self:_written_raw(req, res, err) end
  return res, err
end

-- A write a workflow sent itself through sp:call (the client's operations emit their own):
-- a `write` event all the same, with what its body sets, for the diff and the audit trail.
function SP:_written_raw(req, res, err)
  local changes = require "scimrun.scim.changes"
  local body = req.body
  local list
  if type(body) == "table" and type(body.Operations) == "table" then
    list = changes.from_ops(body.Operations)
  elseif type(body) == "table" then
    list = changes.from_attrs(body, { replace = req.method ~= "POST" })
  end
  local kind, id = tostring(req.path or ""):match("^/(%a+)/([^/?]+)$")
  if not kind then kind = tostring(req.path or ""):match("^/(%a+)$") end
  if res and res.json and type(res.json) == "table" and res.json.id ~= nil then id = tostring(res.json.id) end
  local step = scimrun.ctx and scimrun.ctx().step
  self.events:emit {
    type = "write", op = req.op, method = req.method, target = self.target, resource = kind and kind:lower(),
    id = id, changes = list, item = step and step.key or nil, dry_run = self.dry_run or nil,
    result = err and "failed" or (self.dry_run and "planned" or "ok"),
    status = err and err.status or (res and res.status), class = err and err.class,
    detail = err and changes.redact(err.detail) or nil,
  }
end

return M
