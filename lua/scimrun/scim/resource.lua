-- Users and Groups operations of the SCIM client (one table of methods, two configurations).
-- Each method names its operation ("users.create", "groups.add_member", ...): that name is the
-- executor's op and err.op. Results are plain JSON-serialisable tables.
-- One answer shape: `value` on success, `nil, err` on failure. An operation that writes, or
-- decides not to, also says what it did: it notes the item outcome on the running task's
-- context (scimrun.engine.outcome: the step running, else the item; nothing outside a run) and
-- returns it as a third value, `value, nil, how`, for a caller that wants it (the second slot
-- is the error's only): ensure "created" | "adopted" | "updated" | "skipped", create
-- "created" | "adopted" | "skipped", patch and replace "updated", delete "deleted" | "absent"
-- (noted as "updated" | "skipped"); users.lua's deactivate and groups.lua's add/remove_members
-- likewise.
local cjson = require "cjson"
local filter = require "scimrun.protocol.filter"
local url = require "scimrun.scim.url"
local request = require "scimrun.scim.request"
local patch = require "scimrun.scim.patch"
local patch_op = require "scimrun.protocol.patch"
local list = require "scimrun.scim.list"
local changes = require "scimrun.scim.changes"
local outcome = require "scimrun.engine.outcome"

local M = {}
local R = {}
R.__index = R

local NULL = cjson.null
local find = string.find
local PATCH_SCHEMA = patch_op.SCHEMA
local MAX_PRECONDITION_RETRIES = 3

local function perr(self, op, detail, f)
  f = f or {}
  f.class = f.class or "permanent"
  f.detail = detail
  return request.error({ op = op, url = self.sp.base_url .. self.endpoint, method = f.method }, f)
end

local function present(v) return v ~= nil and v ~= NULL end

-- A successful operation's answer: its value, no error, and what it did (`how`), noted as the
-- item outcome `noted` (default: `how`) on the running task's context.
local function did(value, how, noted)
  outcome.note(noted or how)
  return value, nil, how
end
M.did = did

local function same(a, b, ci)
  if ci and type(a) == "string" and type(b) == "string" then return a:lower() == b:lower() end
  return a == b
end

function R:_path(id) return self.endpoint .. "/" .. url.segment(id) end

-- The operation's name ("users.create"), built once per verb: asked several times a call.
function R:_op(verb)
  local ops = self._ops
  if not ops then
    ops = {}
    self._ops = ops
  end
  local op = ops[verb]
  if not op then
    op = self.name .. "." .. verb
    ops[verb] = op
  end
  return op
end

function R:_call(op, method, path, query, body, extra)
  local req = { op = op, method = method, path = path, query = url.query(query or {}), body = body,
                if_match = extra and extra.if_match }
  extra = extra or {}
  extra.audited = true -- the operation emits its own write event (R:_written)
  local res, err = self.sp:call(req, extra)
  return res, err, req
end

function R:_match_attr() return self.kind.match_attr(self.sp) end

-- The attributes that identify a resource, in the order they are tried (users: the
-- connection's `match`, by default externalId then userName; groups: displayName).
function R:_match_order(given) return given or self.kind.match(self.sp) end

-- Attributes that, held by both sides with different values, make a match by another
-- attribute a different identity (same userName, other person) unless the order lists them.
local GUARDS = { users = { "externalId" } }

local function listed(names, x)
  for _, v in ipairs(names) do if v == x then return true end end
  return false
end

-- The existing resource that is the same identity as `attrs`, looked up by the match order:
-- the first attribute of the order that finds a resource decides (externalId, then userName
-- compared case-insensitively, for users by default), so a user whose userName changed at the
-- source but whose externalId did not is found and renamed, never created again. A resource
-- found by a later attribute whose earlier (or guard) attribute holds another value is another
-- identity: a conflict. Attributes without a value in `attrs` are skipped.
-- Returns resource, attr | nil (no such resource) | nil, err.
-- opts: match (an order for this call), fresh (ask the provider, not the prefetched copy), op.
-- Without the prefetched copy, userName (which providers index) is asked first: a resource it
-- finds agreeing on every other attribute of the order is the answer in one request.
function R:match(attrs, opts)
  opts = opts or {}
  local order = self:_match_order(opts.match)
  local wanted, n = {}, 0
  for _, a in ipairs(order) do
    local v = patch.get_ci(attrs, a)
    if present(v) and not (self.sp.match_unsupported or {})[a] then
      wanted[a] = v
      n = n + 1
    end
  end
  if n == 0 then return nil end
  local lopts = { fresh = opts.fresh, op = opts.op }
  local looked = {}
  local function lookup(a)
    if looked[a] then return looked[a][1], looked[a][2] end
    local r, err = self:find_by(a, wanted[a], lopts)
    if err and a == "externalId" and n > 1 and err.status == 400 then
      -- a provider that cannot filter on externalId: the rest of the order still works
      self.sp.match_unsupported = self.sp.match_unsupported or {}
      self.sp.match_unsupported[a] = true
      local l = rawget(_G, "scimrun") and scimrun.log
      if l then
        local rest = {}
        for _, b in ipairs(order) do if b ~= a then rest[#rest + 1] = b end end
        l.emit("warn", ("the provider refuses filters on %s; matching %s by %s from now on")
          :format(a, self.name, table.concat(rest, ", ")), { url = self.sp.base_url, detail = err.detail })
      end
      looked[a] = { nil, nil }
      return nil, nil
    end
    looked[a] = { r, err }
    return r, err
  end
  local function agrees(r, a)
    local have = patch.get_ci(r, a)
    return present(have) and same(have, wanted[a], self.kind.ci[a])
  end
  local probe = wanted.userName ~= nil and listed(order, "userName") and "userName" or nil
  if probe and n > 1 and not (self._index and self._index.by[probe] and not opts.fresh) then
    local r, err = lookup(probe)
    if err then return nil, err end
    if r then
      local all = true
      for a in pairs(wanted) do
        if not agrees(r, a) then all = false break end
      end
      if all then return r, order[1] end
    end
  end
  local guards = GUARDS[self.name] or {}
  for i, a in ipairs(order) do
    if wanted[a] ~= nil then
      local r, err = lookup(a)
      if err then return nil, err end
      if r then
        local clash
        for j = 1, i - 1 do
          local b = order[j]
          if wanted[b] ~= nil and present(patch.get_ci(r, b)) and not agrees(r, b) then clash = b break end
        end
        for _, g in ipairs(guards) do
          local wg = patch.get_ci(attrs, g)
          if not clash and g ~= a and not listed(order, g) and present(wg) then
            local hg = patch.get_ci(r, g)
            if present(hg) and not same(hg, wg, self.kind.ci[g]) then clash = g end
          end
        end
        if clash then return nil, self:_conflict(self:_op("create"), r, attrs, a, clash) end
        return r, a
      end
    end
  end
  return nil
end

local function without_secrets(attrs)
  local out = patch.copy(attrs)
  if type(out) == "table" then out.password = nil end
  return out
end

function R:_conflict(op, found, attrs, by, clash)
  by = by or self:_match_attr()
  clash = clash or "externalId"
  local err = perr(self, op, ("%s %s already exists as %s but is not the same %s (%s %s, wanted %s)")
    :format(by, tostring(patch.get_ci(attrs, by)), tostring(found.id), self.kind.noun,
            clash, tostring(patch.get_ci(found, clash)), tostring(patch.get_ci(attrs, clash))),
    { class = "conflict", status = 409, scim_type = "uniqueness", method = "POST",
      suggest = "resolve the clash in the source data or the service provider, then replay" })
  -- both states ride along (kept out of request.error: they are resources)
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

-- R:prefetch, R:_index_add and R:find_by: the lookups by one attribute, answered by the
-- prefetched copy or a search (scimrun.scim.lookup).
require("scimrun.scim.lookup").mix(R, { perr = perr, same = same, present = present, listed = listed })

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
local function add_schema(out, seen, urn)
  if type(urn) ~= "string" then return end
  local k = urn:lower()
  if not seen[k] then
    seen[k] = true
    out[#out + 1] = urn
  end
end

local function complete_schemas(body, core)
  local given = body.schemas
  if given ~= nil and given ~= NULL and type(given) ~= "table" then return end
  local out, seen = {}, {}
  if type(given) == "table" then
    for _, urn in ipairs(given) do add_schema(out, seen, urn) end
  else
    add_schema(out, seen, core)
  end
  local ext
  for k, v in pairs(body) do
    if type(k) == "string" and find(k, "^[Uu][Rr][Nn]:") and present(v) then
      ext = ext or {}
      ext[#ext + 1] = k
    end
  end
  if ext then
    table.sort(ext)
    for _, urn in ipairs(ext) do add_schema(out, seen, urn) end
  end
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

-- A top-level copy: complete_schemas replaces `schemas` and nothing changes a nested value, so
-- the body may share them with attrs (a deep copy was a twentieth of a create's CPU).
function R:_with_schema(attrs)
  local body = {}
  for k, v in pairs(attrs) do body[k] = v end
  complete_schemas(body, self.kind.schema)
  body.id = nil
  body.meta = nil
  return body
end

-- The name a resource is known by (userName, displayName), for the write events.
function R:_name_of(r)
  local v = type(r) == "table" and patch.get_ci(r, self.kind.name_attr) or nil
  if present(v) then return v end
  return nil
end

-- POST unless the resource already exists (looked up by the match order, see R:match).
-- Returns resource, nil, "created" | "adopted" | "skipped" (noted as the item outcome), or
-- nil, err. opts: match, skip_lookup.
function R:create(attrs, opts)
  opts = opts or {}
  local op = self:_op("create")
  if type(attrs) ~= "table" then error(op .. ": attributes must be a table", 2) end
  local mopts = { match = opts.match }
  if not opts.skip_lookup then
    local found, ferr = self:match(attrs, mopts)
    if found then return did(found, "skipped") end
    if ferr then return nil, ferr end
  end
  local fresh = { match = opts.match, fresh = true }
  local adopted = false
  local function before_retry()
    if self.sp.dry_run then return nil end
    local found = self:match(attrs, fresh)
    if found then
      adopted = true
      return { status = 200, json = found, adopted = true }
    end
    return nil
  end
  local added = changes.from_attrs(attrs)
  local function written(result, r, err)
    self:_written { op = op, method = "POST", id = r and r.id, name = self:_name_of(r or attrs),
                    changes = added, result = result, error = err }
  end
  local res, err, req = self:_call(op, "POST", self.endpoint, nil, self:_with_schema(attrs),
                                   { before_retry = before_retry, changes = added })
  if not res then
    if err.status == 409 and (err.scim_type == nil or err.scim_type == "uniqueness") then
      local found, ferr = self:match(attrs, fresh)
      if found then
        self:_index_add(found)
        written("adopted", found)
        return did(found, "adopted")
      end
      if ferr then
        written("failed", nil, ferr)
        return nil, ferr
      end
      local keys = {}
      for _, a in ipairs(self:_match_order(opts.match)) do keys[#keys + 1] = a end
      err.suggest = err.suggest or ("the provider reports a clash but no %s with the same %s is visible; "
        .. "check other unique attributes (emails, externalId)"):format(self.kind.noun, table.concat(keys, " or "))
      err.wanted = without_secrets(attrs)
    end
    written("failed", nil, err)
    return nil, err
  end
  if adopted or res.adopted then
    self:_index_add(res.json)
    written("adopted", res.json)
    return did(res.json, "adopted")
  end
  local r, rerr = request.need_resource(req, res)
  if not r then
    written("failed", nil, rerr)
    return nil, rerr
  end
  self:_index_add(r)
  written(res.dry_run and "planned" or "created", r)
  return did(r, "created")
end

-- Looks up by the match order (R:match: for users externalId, then userName ignoring case);
-- creates, PATCHes only the attributes that differ (a renamed user: its userName), or leaves
-- an unchanged resource alone without a write. opts: match (an order for this call).
-- Returns resource, nil, "created" | "adopted" | "updated" | "skipped" (noted as the item
-- outcome: scimrun.engine.outcome), or nil, err. A caller that wants the outcome takes the
-- third value: `local u, err, how = sp.users:ensure(attrs)`.
function R:ensure(attrs, opts)
  opts = opts or {}
  local op = self:_op("ensure")
  if type(attrs) ~= "table" then error(op .. ": attributes must be a table", 2) end
  local order = self:_match_order(opts.match)
  local any = false
  for _, a in ipairs(order) do any = any or present(patch.get_ci(attrs, a)) end
  if not any then
    local names = table.concat(order, " or ")
    return nil, perr(self, op, ("ensure needs the match attribute %s"):format(names),
                     { suggest = "add " .. names .. " to the source data" })
  end
  local found, ferr = self:match(attrs, { match = opts.match, op = self:_op("search") })
  if not found and ferr then return nil, ferr end
  if not found then return self:create(attrs, { skip_lookup = true, match = opts.match }) end
  local ops = patch.diff(found, attrs, { case_insensitive = self.kind.ci, ignore = self.kind.ensure_ignore })
  if #ops == 0 then return did(found, "skipped") end
  local r, err = self:patch(found.id, ops, { current = found, op = self:_op("patch") })
  if not r then return nil, err end
  self:_index_add(r, found)
  return did(r, "updated")
end

-- Read-modify-PUT for providers without PATCH; If-Match when ETags are supported; on 412 the
-- resource is re-read and the operations re-applied, up to 3 more times.
function R:_put_modify(id, ops, op)
  local feats = self.sp:features()
  local last_err
  for _ = 0, MAX_PRECONDITION_RETRIES do
    local cur, gerr = self:get(id, { op = op })
    if not cur then return nil, gerr end
    local new, why = patch_op.apply_ops(cur, ops)
    if not new then
      return nil, perr(self, op, "cannot apply the change locally: " .. why.detail, { method = "PUT" })
    end
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
-- opts: op (the operation's name), current (the resource as read: the answer of a provider
-- that returns no body is computed from it, and the write event says what each attribute was),
-- outcome (what the write event calls a success, default "updated").
-- Returns resource, nil, "updated" (noted as the item outcome), or nil, err.
function R:patch(id, ops, opts)
  opts = opts or {}
  local op = opts.op or self:_op("patch")
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  if type(ops) ~= "table" then error(op .. ": operations must be a table", 2) end
  if ops.op then ops = { ops } end
  local changed = changes.from_ops(ops, opts.current)
  local r, err, method = self:_patch(id, ops, op, opts, changed)
  local after = r and self:_name_of(r) ~= nil and r or nil
  self:_written { op = op, method = method, id = id, name = self:_name_of(after or opts.current), changes = changed,
                  result = err and "failed" or (self.sp.dry_run and "planned" or opts.outcome or "updated"),
                  error = err }
  if not r then return nil, err end
  return did(r, "updated")
end

function R:_patch(id, ops, op, opts, changed)
  local feats = self.sp:features()
  if feats.patch then
    local res, err = self:_call(op, "PATCH", self:_path(id), nil, { schemas = { PATCH_SCHEMA }, Operations = ops },
                                { changes = changed })
    if res then
      -- 200 with the resource, or 204 (or 200) without a body: both mean applied.
      if type(res.json) == "table" and res.json.id ~= nil then return res.json, nil, "PATCH" end
      if opts.current then
        local applied = patch_op.apply_ops(opts.current, ops)
        if applied then return applied, nil, "PATCH" end
      end
      return { id = id }, nil, "PATCH"
    end
    if err.status ~= 501 then return nil, err, "PATCH" end
    self.sp:patch_unsupported()
  end
  if self.sp.dry_run then
    self:_call(op, "PUT", self:_path(id), nil, { Operations = ops }, { changes = changed })
    return { id = id }, nil, "PUT"
  end
  local r, err = self:_put_modify(id, ops, op)
  return r, err, "PUT"
end

-- PUT the whole resource. On 412 the current version is read and the PUT repeated (max 3).
-- Returns resource, nil, "updated" (noted as the item outcome), or nil, err.
function R:replace(id, attrs, opts)
  opts = opts or {}
  local op = self:_op("replace")
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  if type(attrs) ~= "table" then error(op .. ": attributes must be a table", 2) end
  local set = changes.from_attrs(attrs)
  local r, err = self:_replace(id, attrs, opts, op, set)
  self:_written { op = op, method = "PUT", id = id, name = self:_name_of(r or attrs), changes = set,
                  result = err and "failed" or (self.sp.dry_run and "planned" or "replaced"), error = err }
  if not r then return nil, err end
  return did(r, "updated")
end

function R:_replace(id, attrs, opts, op, set)
  local feats = self.sp:features()
  local etag = opts.if_match or (feats.etag and type(attrs.meta) == "table" and attrs.meta.version) or nil
  local body = self:_with_schema(attrs)
  body.id = id
  local err
  for try = 0, MAX_PRECONDITION_RETRIES do
    local res, e, req = self:_call(op, "PUT", self:_path(id), nil, body, { if_match = etag, changes = set })
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

-- DELETE; 404 means already done. Returns true, nil, "deleted" | "absent" (noted as the item
-- outcome "updated" | "skipped"), or nil, err.
function R:delete(id, opts)
  local op = self:_op("delete")
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  local res, err = self:_call(op, "DELETE", self:_path(id))
  local how = res and "deleted" or (err.status == 404 and "absent") or nil
  self:_written { op = op, method = "DELETE", id = id, name = opts and opts.name, changes = {},
                  result = how and (self.sp.dry_run and "planned" or how) or "failed",
                  error = not how and err or nil }
  if how then return did(true, how, how == "deleted" and "updated" or "skipped") end
  return nil, err
end

-- One write this client made (or, in a dry run, would make), as a `write` event on the run's
-- stream (scimrun.engine.events): the change diff (--diff) and the audit trail in the state file are
-- written from it. ev: op, method, id, name, changes (scimrun.scim.changes: never a secret),
-- result, error; the resource kind, the target, the step (item) and dry_run are added here.
function R:_written(ev)
  local stream = self.sp.events
  if not stream then return end
  ev.type = "write"
  ev.resource = self.name
  ev.target = self.sp.target
  ev.dry_run = self.sp.dry_run or nil
  local sc = rawget(_G, "scimrun")
  local step = sc and sc.ctx and sc.ctx().step
  ev.item = step and step.key or nil
  local e = ev.error
  if type(e) == "table" then
    ev.error = nil
    ev.status, ev.class = e.status, e.class
    ev.detail = changes.redact(e.detail)
  end
  stream:emit(ev)
end

M.R = R

local USERS = {
  name = "users", noun = "user", endpoint_key = "users",
  schema = "urn:ietf:params:scim:schemas:core:2.0:User",
  match_attr = function(sp) return sp.match_attribute end,
  match = function(sp) return sp.match end,
  name_attr = "userName",
  ci = { userName = true, emails = true }, -- providers lower-case addresses (better-auth)
  ensure_ignore = { groups = true },
}

local GROUPS = {
  name = "groups", noun = "group", endpoint_key = "groups",
  schema = "urn:ietf:params:scim:schemas:core:2.0:Group",
  match_attr = function() return "displayName" end,
  match = function() return { "displayName" } end,
  name_attr = "displayName",
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
