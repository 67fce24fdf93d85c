-- Users and Groups operations of the SCIM client (one table of methods, two configurations).
-- Each method names its operation ("users.create", "groups.add_member", ...): that name is the
-- executor's op and err.op. Results are plain JSON-serialisable tables.
local cjson = require "cjson"
local filter = require "scimrun.scim.filter"
local request = require "scimrun.scim.request"
local patch = require "scimrun.scim.patch"
local list = require "scimrun.scim.list"

local M = {}
local R = {}
R.__index = R

local NULL = cjson.null
local PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
local MAX_PRECONDITION_RETRIES = 3

local function perr(self, op, detail, f)
  f = f or {}
  f.class = f.class or "permanent"
  f.detail = detail
  return request.error({ op = op, url = self.sp.base_url .. self.endpoint, method = f.method }, f)
end

local function present(v) return v ~= nil and v ~= NULL end

local function same(a, b, ci)
  if ci and type(a) == "string" and type(b) == "string" then return a:lower() == b:lower() end
  return a == b
end

function R:_path(id) return self.endpoint .. "/" .. filter.segment(id) end

function R:_op(verb) return self.name .. "." .. verb end

function R:_call(op, method, path, query, body, extra)
  local req = { op = op, method = method, path = path, query = filter.query(query or {}), body = body,
                if_match = extra and extra.if_match }
  local res, err = self.sp:call(req, extra)
  return res, err, req
end

function R:_match_attr() return self.kind.match_attr(self.sp) end

-- Is `found` the same identity as the wanted attributes? The match attribute must be equal and,
-- when matching by userName, an externalId on both sides must agree (same name, other person).
function R:_same_identity(found, attrs)
  local attr = self:_match_attr()
  if not same(patch.get_ci(found, attr), patch.get_ci(attrs, attr), self.kind.ci[attr]) then return false end
  if attr ~= "externalId" then
    local fe, we = patch.get_ci(found, "externalId"), patch.get_ci(attrs, "externalId")
    if present(fe) and present(we) and fe ~= we then return false end
  end
  return true
end

local function without_secrets(attrs)
  local out = patch.copy(attrs)
  if type(out) == "table" then out.password = nil end
  return out
end

function R:_conflict(op, found, attrs)
  local attr = self:_match_attr()
  return perr(self, op, ("%s %s already exists as %s but is not the same %s (externalId %s, wanted %s)")
    :format(attr, tostring(patch.get_ci(attrs, attr)), tostring(found.id), self.kind.noun,
            tostring(patch.get_ci(found, "externalId")), tostring(patch.get_ci(attrs, "externalId"))),
    { class = "conflict", status = 409, scim_type = "uniqueness", method = "POST",
      suggest = "resolve the clash in the source data or the service provider, then replay" })
end

-- Adds existing/wanted to a conflict error (kept out of request.error: they are resources).
local function with_states(err, found, attrs)
  err.existing = found
  err.wanted = without_secrets(attrs)
  return err
end

-- GET one resource. 404 -> nil, err (err.status == 404).
function R:get(id, opts)
  opts = opts or {}
  local op = opts.op or self:_op("get")
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  local q = {}
  if opts.attributes then q[#q + 1] = { "attributes", opts.attributes } end
  if opts.excluded_attributes then q[#q + 1] = { "excludedAttributes", opts.excluded_attributes } end
  local res, err, req = self:_call(op, "GET", self:_path(id), q)
  if not res then return nil, err end
  local r, rerr = request.need_resource(req, res)
  if not r then return nil, rerr end
  if res.etag and (type(r.meta) ~= "table" or r.meta.version == nil) then
    r.meta = type(r.meta) == "table" and r.meta or {}
    r.meta.version = res.etag
  end
  return r
end

-- Searches with a raw filter; returns the array of resources on the first page (count <= 10).
function R:_search(op, expr)
  local q = { { "filter", expr }, { "startIndex", 1 }, { "count", 10 } }
  if self.kind.search_excludes then q[#q + 1] = { "excludedAttributes", self.kind.search_excludes } end
  local res, err, req = self:_call(op, "GET", self.endpoint, q)
  if not res then
    if err.status == 404 then return {} end  -- some providers answer 404 to "no match"
    return nil, err
  end
  return list.resources(req, res)
end

local function index_key(v, ci)
  if type(v) ~= "string" then return v end
  return ci and v:lower() or v
end

-- Reads every resource of this kind once, when the provider holds at most opts.max (5000), so
-- that find_by on the match attribute answers from memory: a run that creates many resources
-- then sends one request per page instead of a lookup per resource. What this connection
-- creates or adopts is added. Another client creating the same resource meanwhile is still
-- caught: the create answers 409 and is resolved by a fresh lookup, never by the index.
-- Returns the number of resources indexed, nil when there are more than opts.max (lookups stay
-- one per resource), or nil, err.
function R:prefetch(opts)
  opts = opts or {}
  local max = opts.max or 5000
  local attr = self:_match_attr()
  local q = { { "startIndex", 1 }, { "count", 0 } } -- totalResults only (RFC 7644 3.4.2.4)
  local res, err = self:_call(self:_op("search"), "GET", self.endpoint, q)
  if not res then return nil, err end
  local total = type(res.json) == "table" and tonumber(res.json.totalResults)
  if not total or total > max then return nil end
  local ci = self.kind.ci[attr]
  local map, n = {}, 0
  local ok, perr_or = pcall(function()
    if total == 0 then return end
    for r in self:list {} do
      local v = patch.get_ci(r, attr)
      if v ~= nil and v ~= NULL then
        local k = index_key(v, ci)
        local prev = map[k]
        if prev then
          map[k] = prev.__matches and prev or { __matches = { prev } }
          map[k].__matches[#map[k].__matches + 1] = r
        else
          map[k] = r
        end
        n = n + 1
      end
    end
  end)
  if not ok then return nil, perr_or end
  self._index = { attr = attr, ci = ci, map = map }
  return n
end

function R:_index_add(r)
  local ix = self._index
  if not ix or type(r) ~= "table" then return end
  local v = patch.get_ci(r, ix.attr)
  if v ~= nil and v ~= NULL then ix.map[index_key(v, ix.ci)] = r end
end

-- One resource whose `attr` equals `value`, nil when none, or nil, err (ambiguity is permanent).
-- After prefetch, answered from memory unless opts.fresh.
function R:find_by(attr, value, opts)
  local op = opts and opts.op or self:_op("search")
  local expr = filter.eq(attr, value)
  local ix = self._index
  local found, err
  if ix and ix.attr == attr and not (opts and opts.fresh) then
    local hit = ix.map[index_key(value, ix.ci)]
    found = hit == nil and {} or hit.__matches or { hit }
  else
    found, err = self:_search(op, expr)
  end
  if not found then return nil, err end
  local ci = self.kind.ci[attr]
  local matches = {}
  for _, r in ipairs(found) do
    local v = patch.get_ci(r, attr)
    -- a provider that ignores the filter returns other resources: compare on our side too.
    if v == nil or same(v, value, ci) then matches[#matches + 1] = r end
  end
  if #matches > 1 then
    local ids = {}
    for i, r in ipairs(matches) do ids[i] = tostring(r.id) end
    return nil, perr(self, op, ("%d %s match %s: %s"):format(#matches, self.name, expr, table.concat(ids, ", ")),
      { reason = "ambiguous", method = "GET",
        suggest = "remove the duplicates in the service provider, then replay" })
  end
  return matches[1]
end

-- find(value) looks up by the match attribute; find('attr op "v"') or find{filter=...} searches.
function R:find(arg)
  local expr = type(arg) == "table" and arg.filter or (filter.looks_like_filter(arg) and arg)
  if not expr then return self:find_by(self:_match_attr(), arg) end
  local op = self:_op("search")
  local found, err = self:_search(op, expr)
  if not found then return nil, err end
  if #found > 1 then
    return nil, perr(self, op, ("%d %s match %s"):format(#found, self.name, expr),
                     { reason = "ambiguous", method = "GET" })
  end
  return found[1]
end

-- Iterator over every resource matching opts.filter (see scimrun.scim.list). Raises err tables.
function R:list(opts)
  opts = opts or {}
  local feats = self.sp:features()
  return list.iterate(self, feats, opts)
end

-- The `schemas` of a body we send (RFC 7643 section 3): the resource's core schema and the URN
-- of every extension whose attributes the body holds (a top-level "urn:..." key with a value),
-- each once (URNs compared ignoring case), extensions in sorted order. A list the caller gave is
-- kept (its duplicates dropped) and completed; a schemas value that is not a list is left alone.
local function complete_schemas(body, core)
  local given = body.schemas
  if given ~= nil and given ~= NULL and type(given) ~= "table" then return end
  local out, seen = {}, {}
  local function add(urn)
    if type(urn) ~= "string" then return end
    local k = urn:lower()
    if not seen[k] then
      seen[k] = true
      out[#out + 1] = urn
    end
  end
  if type(given) == "table" then
    for _, urn in ipairs(given) do add(urn) end
  else
    add(core)
  end
  local ext = {}
  for k, v in pairs(body) do
    if type(k) == "string" and k:sub(1, 4):lower() == "urn:" and present(v) then ext[#ext + 1] = k end
  end
  table.sort(ext)
  for _, urn in ipairs(ext) do add(urn) end
  if type(given) == "table" and #out == #given then
    local unchanged = true
    for i = 1, #out do
      if out[i] ~= given[i] then
        unchanged = false
        break
      end
    end
    if unchanged then return end -- the caller's own table (an empty list stays a JSON array)
  end
  body.schemas = out
end

function R:_with_schema(attrs)
  local body = patch.copy(attrs)
  complete_schemas(body, self.kind.schema)
  body.id = nil
  body.meta = nil
  return body
end

-- POST unless the resource already exists. Returns resource, "created" | "adopted" | "skipped".
function R:create(attrs, opts)
  opts = opts or {}
  local op = self:_op("create")
  if type(attrs) ~= "table" then error(op .. ": attributes must be a table", 2) end
  local attr = self:_match_attr()
  local key = patch.get_ci(attrs, attr)
  if not present(key) then key = nil end
  if key ~= nil and not opts.skip_lookup then
    local found, ferr = self:find_by(attr, key)
    if ferr then return nil, ferr end
    if found then
      if self:_same_identity(found, attrs) then return found, "skipped" end
      return nil, with_states(self:_conflict(op, found, attrs), found, attrs)
    end
  end
  local adopted = false
  local function before_retry()
    if key == nil or self.sp.dry_run then return nil end
    local found = self:find_by(attr, key, { fresh = true })
    if found and self:_same_identity(found, attrs) then
      adopted = true
      return { status = 200, json = found, adopted = true }
    end
    return nil
  end
  local res, err, req = self:_call(op, "POST", self.endpoint, nil, self:_with_schema(attrs),
                                   { before_retry = before_retry })
  if not res then
    if err.status == 409 and (err.scim_type == nil or err.scim_type == "uniqueness") and key ~= nil then
      local found, ferr = self:find_by(attr, key, { fresh = true })
      if ferr then return nil, ferr end
      if found and self:_same_identity(found, attrs) then
        self:_index_add(found)
        return found, "adopted"
      end
      if found then return nil, with_states(self:_conflict(op, found, attrs), found, attrs) end
      err.suggest = err.suggest or ("the provider reports a clash but no %s with %s %s is visible; "
        .. "check other unique attributes (emails, externalId)"):format(self.kind.noun, attr, tostring(key))
      err.wanted = without_secrets(attrs)
    end
    return nil, err
  end
  if adopted or res.adopted then
    self:_index_add(res.json)
    return res.json, "adopted"
  end
  local r, rerr = request.need_resource(req, res)
  if not r then return nil, rerr end
  self:_index_add(r)
  return r, "created"
end

-- Looks up by the match attribute; creates, PATCHes what differs, or leaves it alone.
function R:ensure(attrs)
  local op = self:_op("ensure")
  if type(attrs) ~= "table" then error(op .. ": attributes must be a table", 2) end
  local attr = self:_match_attr()
  local key = patch.get_ci(attrs, attr)
  if not present(key) then
    return nil, perr(self, op, ("ensure needs the match attribute %s"):format(attr),
                     { suggest = "add " .. attr .. " to the source data" })
  end
  local found, ferr = self:find_by(attr, key, { op = self:_op("search") })
  if ferr then return nil, ferr end
  if not found then return self:create(attrs, { skip_lookup = true }) end
  if not self:_same_identity(found, attrs) then
    return nil, with_states(self:_conflict(self:_op("create"), found, attrs), found, attrs)
  end
  local ops = patch.diff(found, attrs, { case_insensitive = self.kind.ci, ignore = self.kind.ensure_ignore })
  if #ops == 0 then return found, "skipped" end
  local r, err = self:patch(found.id, ops, { current = found })
  if not r then return nil, err end
  return r, "updated"
end

-- Read-modify-PUT for providers without PATCH; If-Match when ETags are supported; on 412 the
-- resource is re-read and the operations re-applied, up to 3 more times.
function R:_put_modify(id, ops, op)
  local feats = self.sp:features()
  local last_err
  for _ = 0, MAX_PRECONDITION_RETRIES do
    local cur, gerr = self:get(id, { op = op })
    if not cur then return nil, gerr end
    local new, why = patch.apply(cur, ops)
    if not new then return nil, perr(self, op, "cannot apply the change locally: " .. why, { method = "PUT" }) end
    local etag = feats.etag and type(cur.meta) == "table" and cur.meta.version or nil
    local body = patch.for_put(new)
    complete_schemas(body, self.kind.schema) -- the operations may have added an extension
    local res, err = self:_call(op, "PUT", self:_path(id), nil, body, { if_match = etag })
    if res then
      if type(res.json) == "table" and res.json.id then return res.json end
      return new
    end
    if err.status ~= 412 then return nil, err end
    last_err = err
  end
  last_err.suggest = "the resource keeps changing under us; replay later"
  return nil, last_err
end

-- PATCH (RFC 7644 §3.5.2). ops: array of {op, path, value}. Falls back to read-modify-PUT when
-- the provider has no PATCH (discovery, the `patch` option, or a 501 answer).
function R:patch(id, ops, opts)
  opts = opts or {}
  local op = opts.op or self:_op("patch")
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  if type(ops) ~= "table" then error(op .. ": operations must be a table", 2) end
  if ops.op then ops = { ops } end
  local feats = self.sp:features()
  if feats.patch then
    local res, err = self:_call(op, "PATCH", self:_path(id), nil, { schemas = { PATCH_SCHEMA }, Operations = ops })
    if res then
      -- 200 with the resource, or 204 (or 200) without a body: both mean applied.
      if type(res.json) == "table" and res.json.id ~= nil then return res.json end
      if opts.current then
        local applied = patch.apply(opts.current, ops)
        if applied then return applied end
      end
      return { id = id }
    end
    if err.status ~= 501 then return nil, err end
    self.sp:patch_unsupported()
  end
  if self.sp.dry_run then
    self:_call(op, "PUT", self:_path(id), nil, { Operations = ops })
    return { id = id }
  end
  return self:_put_modify(id, ops, op)
end

-- PUT the whole resource. On 412 the current version is read and the PUT repeated (max 3).
function R:replace(id, attrs, opts)
  opts = opts or {}
  local op = self:_op("replace")
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  if type(attrs) ~= "table" then error(op .. ": attributes must be a table", 2) end
  local feats = self.sp:features()
  local etag = opts.if_match or (feats.etag and type(attrs.meta) == "table" and attrs.meta.version) or nil
  local body = self:_with_schema(attrs)
  body.id = id
  local err
  for try = 0, MAX_PRECONDITION_RETRIES do
    local res, e, req = self:_call(op, "PUT", self:_path(id), nil, body, { if_match = etag })
    if res then
      if res.dry_run then return body end
      return request.need_resource(req, res)
    end
    err = e
    if e.status ~= 412 or try == MAX_PRECONDITION_RETRIES then break end
    local cur, gerr = self:get(id, { op = op })
    if not cur then return nil, gerr end
    etag = type(cur.meta) == "table" and cur.meta.version or nil
  end
  return nil, err
end

-- DELETE; 404 means already done. Returns true, "deleted" | "absent".
function R:delete(id)
  local op = self:_op("delete")
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  local res, err = self:_call(op, "DELETE", self:_path(id))
  if res then return true, "deleted" end
  if err.status == 404 then return true, "absent" end
  return nil, err
end

M.R = R

local USERS = {
  name = "users", noun = "user", endpoint_key = "users",
  schema = "urn:ietf:params:scim:schemas:core:2.0:User",
  match_attr = function(sp) return sp.match_attribute end,
  ci = { userName = true },
  ensure_ignore = { groups = true },
}

local GROUPS = {
  name = "groups", noun = "group", endpoint_key = "groups",
  schema = "urn:ietf:params:scim:schemas:core:2.0:Group",
  match_attr = function() return "displayName" end,
  ci = { displayName = true },
  ensure_ignore = { members = true },
  search_excludes = "members",
}

local function new(sp, kind, methods)
  local mt = { __index = function(_, k) return methods[k] or R[k] end }
  return setmetatable({ sp = sp, kind = kind, name = kind.name, endpoint = sp.endpoints[kind.endpoint_key] }, mt)
end

function M.users(sp) return new(sp, USERS, require "scimrun.scim.users") end
function M.groups(sp) return new(sp, GROUPS, require "scimrun.scim.groups") end

return M
