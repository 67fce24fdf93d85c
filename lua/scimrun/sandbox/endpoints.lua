-- The SCIM operations on /Users and /Groups (RFC 7644 section 3): list, search, get, create,
-- replace, patch, delete. Each takes the sandbox, the resource kind ("Users" | "Groups") and
-- ctx { base, params, headers, body } and returns a response table { status, headers, body }.
-- Every mutation completes (store and snapshot) before the function returns, so a response
-- that is lost afterwards still leaves the change committed.
local json = require "scimrun.sandbox.json"
local path = require "scimrun.protocol.path"
local filter = require "scimrun.protocol.filter"
local patch = require "scimrun.protocol.patch"
local resources = require "scimrun.sandbox.resources"
local discovery = require "scimrun.sandbox.discovery"

local M = {}

M.CONTENT_TYPE = "application/scim+json"

function M.reply(status, body, headers)
  headers = headers or {}
  local text
  if body ~= nil then
    text = json.encode(body)
    headers["Content-Type"] = M.CONTENT_TYPE
  end
  return { status = status, headers = headers, body = text }
end

function M.error(status, scim_type, detail, headers)
  return M.reply(status, { schemas = json.array({ discovery.ERROR }), status = tostring(status),
    scimType = scim_type, detail = detail }, headers)
end

local function from_err(e) return M.error(e.status, e.scimType, e.detail) end

local SINGULAR = { Users = "user", Groups = "group" }

local function not_found(kind, id)
  return M.error(404, nil, ("%s %s not found"):format(SINGULAR[kind], id))
end

local function iso(t)
  local ms = math.floor((t % 1) * 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. (".%03dZ"):format(ms)
end

local function version_of(res) return tonumber(tostring(res.meta.version):match("(%d+)")) or 0 end

local function weak(tag) return (tag:gsub("^%s*[Ww]/", ""):gsub("^%s+", ""):gsub("%s+$", "")) end

-- If-Match (RFC 7232): a list of entity tags or "*"; compared weakly.
local function precondition(ctx, res)
  local want = ctx.headers["if-match"]
  if not want or want:match("^%s*%*%s*$") then return nil end
  local have = weak(res.meta.version)
  for tag in want:gmatch("[^,]+") do
    if weak(tag) == have then return nil end
  end
  return M.error(412, nil, ("If-Match %s does not match the current version %s"):format(want, res.meta.version),
    { ETag = res.meta.version })
end

local function commit(sb)
  local ok, err = sb.store:commit()
  if not ok and sb.on_warning then sb.on_warning(err) end
end

local function excludes_members(excluded)
  if excluded == nil then return false end
  local list = "," .. tostring(excluded):lower():gsub("%s", "") .. ","
  return list:find("[,:]members,") ~= nil
end

-- Decides what to send before rendering: a minimal answer or one without members must not
-- copy and encode a group of 10,000 members.
local function show(sb, kind, res, ctx, status, extra)
  local headers = { ETag = res.meta.version }
  for k, v in pairs(extra or {}) do headers[k] = v end
  if ctx.prefer_minimal and status == 200 then return { status = 204, headers = headers } end
  local src = res
  if kind == "Groups" and excludes_members(ctx.params.excludedAttributes) then
    src = {}
    for k, v in pairs(res) do if k ~= "members" then src[k] = v end end
  end
  local out = resources.render(kind, src, sb.store, ctx.base)
  out = resources.project(out, ctx.params.attributes, ctx.params.excludedAttributes)
  return M.reply(status, out, headers)
end

local function integer_param(name, text, default)
  if text == nil or text == "" then return default end
  local n = tonumber(text)
  if not n or n % 1 ~= 0 then
    return nil, M.error(400, "invalidValue", ("%s must be an integer, got '%s'"):format(name, tostring(text)))
  end
  return n
end

local function run_list(sb, kind, ctx, q)
  local ast
  if q.filter ~= nil and q.filter ~= "" then
    local err
    ast, err = filter.parse(q.filter)
    if not ast then return M.error(400, "invalidFilter", ("bad filter %q: %s"):format(q.filter, err)) end
  end
  local start, e1 = integer_param("startIndex", q.startIndex, 1)
  if not start then return e1 end
  local count, e2 = integer_param("count", q.count, discovery.MAX_RESULTS)
  if not count then return e2 end
  start = math.max(1, start)
  count = math.min(math.max(0, count), discovery.MAX_RESULTS)
  local needs_render = q.filter and q.filter:lower():find("groups", 1, true)
  local candidates
  local unique_attr = kind == "Users" and "username" or "displayname"
  if ast and ast.type == "cmp" and ast.op == "eq" and not ast.path.sub and not ast.path.urn
      and ast.path.attr:lower() == unique_attr and type(ast.value) == "string" then
    -- The lookup every provisioning client does before a create: answered from the index.
    local id = sb.store:find_unique(kind, ast.value)
    candidates = { id and sb.store:get(kind, id) }
  elseif ast and ast.type == "cmp" and ast.op == "eq" and not ast.path.sub and not ast.path.urn
      and ast.path.attr:lower() == "externalid" and type(ast.value) == "string" then
    -- the lookup of a client matching by externalId first (a rename keeps it): from the index
    candidates = {}
    for _, id in ipairs(sb.store:find_external(kind, ast.value)) do
      candidates[#candidates + 1] = sb.store:get(kind, id)
    end
  end
  local hits = {}
  for _, res in ipairs(candidates or sb.store:list(kind)) do
    local subject = needs_render and resources.render(kind, res, sb.store, ctx.base) or res
    if not ast or filter.matches(ast, subject) then hits[#hits + 1] = res end
  end
  local page = json.array({})
  for i = start, math.min(#hits, start + count - 1) do
    local out = resources.render(kind, hits[i], sb.store, ctx.base)
    page[#page + 1] = resources.project(out, q.attributes, q.excludedAttributes)
  end
  return M.reply(200, { schemas = json.array({ discovery.LIST }), totalResults = #hits, startIndex = start,
    itemsPerPage = #page, Resources = page })
end

function M.list(sb, kind, ctx)
  return run_list(sb, kind, ctx, ctx.params)
end

-- POST /Users/.search: the same query as a JSON body.
function M.search(sb, kind, ctx)
  local body = ctx.body
  if type(body) ~= "table" or json.is_array(body) then
    return M.error(400, "invalidSyntax", "the .search body must be a JSON object")
  end
  local function list_text(v)
    if json.is_array(v) then return table.concat(v, ",") end
    return v
  end
  return run_list(sb, kind, ctx, {
    filter = path.get(body, "filter"),
    startIndex = path.get(body, "startIndex") and tostring(path.get(body, "startIndex")),
    count = path.get(body, "count") and tostring(path.get(body, "count")),
    attributes = list_text(path.get(body, "attributes")),
    excludedAttributes = list_text(path.get(body, "excludedAttributes")),
  })
end

function M.get(sb, kind, id, ctx)
  local res = sb.store:get(kind, id)
  if not res then return not_found(kind, id) end
  local inm = ctx.headers["if-none-match"]
  if inm then
    for tag in inm:gmatch("[^,]+") do
      if weak(tag) == weak(res.meta.version) then return { status = 304, headers = { ETag = res.meta.version } } end
    end
  end
  return show(sb, kind, res, ctx, 200)
end

function M.create(sb, kind, ctx)
  local res, err = resources.validate(kind, ctx.body, sb.store, nil)
  if not res then return from_err(err) end
  local now = iso(sb.clock())
  res.id = sb.store:new_id()
  res.meta = { resourceType = kind == "Users" and "User" or "Group", created = now, lastModified = now,
    version = 'W/"1"' }
  sb.store:put(kind, res)
  commit(sb)
  return show(sb, kind, res, ctx, 201, { Location = ("%s/%s/%s"):format(ctx.base, kind, res.id) })
end

local function store_update(sb, kind, old, new)
  new.id = old.id
  new.meta = json.copy(old.meta)
  new.meta.lastModified = iso(sb.clock())
  new.meta.version = ('W/"%d"'):format(version_of(old) + 1)
  sb.store:put(kind, new)
  commit(sb)
  return new
end

function M.replace(sb, kind, id, ctx)
  local old = sb.store:get(kind, id)
  if not old then return not_found(kind, id) end
  local pre = precondition(ctx, old)
  if pre then return pre end
  local res, err = resources.validate(kind, ctx.body, sb.store, id)
  if not res then return from_err(err) end
  if kind == "Users" and old.password and res.password == nil then res.password = old.password end
  return show(sb, kind, store_update(sb, kind, old, res), ctx, 200)
end

-- A PatchOp made only of `add members` and `remove members[value eq "id"]` operations, as
-- {adds = clean member entries, removes = values}, or nil for anything else (general path).
local function member_ops(sb, group_id, body)
  if type(body) ~= "table" or type(body.Operations) ~= "table" or #body.Operations == 0 then return nil end
  local adds, removes = {}, {}
  for _, o in ipairs(body.Operations) do
    local op = type(o) == "table" and type(o.op) == "string" and o.op:lower()
    if op == "add" and o.path == "members" and json.is_array(o.value) then
      for _, m in ipairs(o.value) do
        local v = type(m) == "table" and m.value
        if type(v) ~= "string" then return nil end
        local user, group = sb.store:get("Users", v), sb.store:get("Groups", v)
        if (not user and not group) or v == group_id then return nil end -- the general path explains
        adds[#adds + 1] = { value = v, type = user and "User" or "Group",
          display = user and (user.displayName or user.userName) or group.displayName }
      end
    elseif op == "remove" and type(o.path) == "string" and o.path:match('^members%[value eq "[^"]+"%]$') then
      local v = o.path:match('^members%[value eq "([^"]+)"%]$')
      local groups = sb.store.member_of[v]
      if not (groups and groups[group_id]) then return nil end -- not a member: the general path says noTarget
      removes[#removes + 1] = v
    else
      return nil
    end
  end
  return { adds = adds, removes = removes }
end

function M.patch(sb, kind, id, ctx)
  local old = sb.store:get(kind, id)
  if not old then return not_found(kind, id) end
  local pre = precondition(ctx, old)
  if pre then return pre end
  local fast = kind == "Groups" and member_ops(sb, id, ctx.body)
  if fast then
    if sb.store:change_members(old, fast.adds, fast.removes) then
      old.meta.lastModified = iso(sb.clock())
      old.meta.version = ('W/"%d"'):format(version_of(old) + 1)
      commit(sb)
    end
    -- 204 No Content, as RFC 7644 3.5.2 allows and Okta- and Entra-style providers answer to
    -- membership PATCHes: echoing a 10,000-member group on every add made onboarding quadratic.
    return { status = 204, headers = { ETag = old.meta.version } }
  end
  local patched, perr = patch.apply(old, ctx.body)
  if not patched then return from_err(perr) end
  local res, err = resources.validate(kind, patched, sb.store, id)
  if not res then return from_err(err) end
  return show(sb, kind, store_update(sb, kind, old, res), ctx, 200)
end

-- Removes `id` from every group listing it (deleting a user or a nested group).
local function drop_memberships(sb, id)
  for _, g in ipairs(sb.store:groups_of(id)) do
    local new = json.copy(g)
    local keep = json.array({})
    for _, m in ipairs(new.members or {}) do
      if m.value ~= id then keep[#keep + 1] = m end
    end
    new.members = keep
    new.id = nil
    new.meta = nil
    store_update(sb, "Groups", g, new)
  end
end

function M.delete(sb, kind, id, ctx)
  local old = sb.store:get(kind, id)
  if not old then return not_found(kind, id) end
  local pre = precondition(ctx, old)
  if pre then return pre end
  drop_memberships(sb, id)
  sb.store:delete(kind, id)
  commit(sb)
  return { status = 204, headers = {} }
end

return M
