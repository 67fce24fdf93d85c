-- Runs a data-driven SCIM conformance file (spec/conformance/*.lua) against any server.
--   local conformance = require "helpers.conformance"
--   local results = conformance.run(require "conformance.scim_conformance", { url = BASE, token = TOKEN })
--   results = { passed = n, failed = n, steps = { { name, ok, status, problems = {...} } } }
--   conformance.report(results) -> text naming every failed step and why
-- Server-neutral: it needs only scimrun.http and cjson, and sends what Okta's suite sends.
local http = require "scimrun.http"
local cjson = require "cjson"

local M = {}

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function uuid()
  local hex = {}
  for i = 1, 32 do hex[i] = ("%x"):format(math.random(0, 15)) end
  hex[13] = "4"
  local s = table.concat(hex)
  return ("%s-%s-%s-%s-%s"):format(s:sub(1, 8), s:sub(9, 12), s:sub(13, 16), s:sub(17, 20), s:sub(21, 32))
end

local function fill(v, vars)
  if type(v) == "string" then
    return (v:gsub("{{(%w+):?(%w*)}}", function(a, b)
      local name, upper = a, false
      if b ~= "" then name, upper = b, a == "upper" end
      local value = vars[name]
      if value == nil then error(("the conformance file uses {{%s}}, which no earlier step saved"):format(name), 0) end
      return upper and tostring(value):upper() or tostring(value)
    end))
  end
  if type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = fill(x, vars) end
    return out
  end
  return v
end

-- "Resources.1.id" -> doc.Resources[1].id
local function lookup(doc, path)
  local cur = doc
  for part in path:gmatch("[^%.]+") do
    if type(cur) ~= "table" then return nil end
    local n = tonumber(part)
    cur = n and cur[n] or cur[part]
  end
  return cur
end

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

local function check(step, res, doc, vars)
  local problems, e = {}, fill(step.expect or {}, vars)
  local function fail(fmt, ...) problems[#problems + 1] = fmt:format(...) end
  local want = e.status
  if want then
    local ok = false
    for _, s in ipairs(type(want) == "table" and want or { want }) do if res.status == s then ok = true end end
    if not ok then
      fail("status %d, expected %s", res.status, type(want) == "table" and table.concat(want, " or ") or want)
    end
  end
  local needs_doc = e.fields or e.types or e.contains or e.min or e.absent
  if needs_doc and type(doc) ~= "table" then
    fail("the body is not a JSON object: %s", (res.body or ""):sub(1, 200))
    return problems
  end
  for path, v in pairs(e.fields or {}) do
    local got = lookup(doc, path)
    if got ~= v then fail("%s is %s, expected %s", path, show(got), show(v)) end
  end
  for path, ty in pairs(e.types or {}) do
    local got = lookup(doc, path)
    if type(got) ~= ty then fail("%s is a %s, expected a %s", path, type(got), ty) end
  end
  for path, v in pairs(e.contains or {}) do
    local list, found = lookup(doc, path), false
    for _, x in ipairs(type(list) == "table" and list or {}) do if x == v then found = true end end
    if not found then fail("%s does not contain %s", path, show(v)) end
  end
  for path, n in pairs(e.min or {}) do
    local got = lookup(doc, path)
    if type(got) ~= "number" or got < n then fail("%s is %s, expected at least %d", path, show(got), n) end
  end
  for _, path in ipairs(e.absent or {}) do
    if lookup(doc, path) ~= nil then fail("%s must not be returned", path) end
  end
  return problems
end

local function run_step(step, opts, vars)
  local url = opts.url .. fill(step.path, vars)
  if step.query then
    local keys, parts = {}, {}
    for k in pairs(step.query) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = escape(k) .. "=" .. escape(fill(step.query[k], vars)) end
    url = url .. "?" .. table.concat(parts, "&")
  end
  local headers = { Authorization = "Bearer " .. opts.token, Accept = "application/scim+json" }
  local body
  if step.body then
    body = cjson.encode(fill(step.body, vars))
    headers["Content-Type"] = "application/scim+json"
  end
  local res, msg, kind = http.request({ method = step.method, url = url, headers = headers, body = body,
    timeout = opts.timeout or 10 })
  if not res then
    return { name = step.name, ok = false, problems = { ("%s %s failed: %s %s"):format(step.method, url,
      tostring(kind), tostring(msg)) } }
  end
  local doc
  if res.body and res.body ~= "" then
    local ok, d = pcall(cjson.decode, res.body)
    if ok then doc = d end
  end
  local problems = check(step, res, doc, vars)
  if #problems == 0 then
    for var, path in pairs(step.save or {}) do
      local v = type(doc) == "table" and lookup(doc, path) or nil
      if v == nil then problems[#problems + 1] = ("cannot save %s: the answer has no %s"):format(var, path) end
      vars[var] = v
    end
  end
  return { name = step.name, ok = #problems == 0, status = res.status, problems = problems,
    request = step.method .. " " .. url, body = res.body }
end

function M.run(suite, opts)
  assert(type(opts) == "table" and opts.url and opts.token, "conformance.run needs { url = BASE, token = TOKEN }")
  opts.url = opts.url:gsub("/+$", "")
  local tag = ("%d%04d"):format(os.time() % 100000, math.random(0, 9999))
  local vars = {
    userName = ("Conf.User%s@Example.com"):format(tag),
    givenName = "Conf", familyName = "User" .. tag, randomId = uuid(),
  }
  for k, v in pairs(opts.vars or {}) do vars[k] = v end
  local results = { passed = 0, failed = 0, steps = {} }
  for _, step in ipairs(suite.steps) do
    local ok, r = pcall(run_step, step, opts, vars)
    if not ok then r = { name = step.name, ok = false, problems = { tostring(r) } } end
    results.steps[#results.steps + 1] = r
    if r.ok then results.passed = results.passed + 1 else results.failed = results.failed + 1 end
  end
  return results
end

function M.report(results)
  local lines = { ("%d passed, %d failed"):format(results.passed, results.failed) }
  for _, s in ipairs(results.steps) do
    if not s.ok then
      lines[#lines + 1] = ("FAIL %s (%s)"):format(s.name, s.request or "?")
      for _, p in ipairs(s.problems) do lines[#lines + 1] = "  - " .. p end
      if s.body then lines[#lines + 1] = "  body: " .. s.body:sub(1, 300) end
    end
  end
  return table.concat(lines, "\n")
end

return M
