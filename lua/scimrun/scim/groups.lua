-- Group membership: PATCH add with a members value array, PATCH remove with members[value eq
-- "id"] paths, chunked by max_members_per_patch. Concurrent calls for one group share one PATCH
-- (scimrun.scim.member_batch, connect option member_batch_window); a PATCH that fails because of
-- a member (4xx; 413) is split in halves so that only the callers of the bad members fail.
-- A whole membership is never PUT from a read that may be partial: the read-modify-PUT fallback
-- (providers without PATCH) always starts from a fresh full GET of the group.
local cjson = require "cjson"
local filter = require "scimrun.protocol.filter"
local member_batch = require "scimrun.scim.member_batch"
local changes = require "scimrun.scim.changes"
local did = require("scimrun.scim.resource").did

local G = {}

local PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

local function unique_ids(op, ids)
  if type(ids) == "string" then ids = { ids } end
  if type(ids) ~= "table" then error(op .. ": member ids must be an array of strings", 3) end
  local out, seen = {}, {}
  for i, id in ipairs(ids) do
    if type(id) ~= "string" or id == "" then
      error(("%s: member id #%d must be a non-empty string"):format(op, i), 3)
    end
    if not seen[id] then seen[id] = true; out[#out + 1] = id end
  end
  return out
end

local function ops_for(mode, ids)
  if mode == "add" then
    local values = {}
    for i, id in ipairs(ids) do values[i] = { value = id } end
    return { { op = "add", path = "members", value = values } }
  end
  local ops = {}
  for i, id in ipairs(ids) do ops[i] = { op = "remove", path = filter.value_path("members", id) } end
  return ops
end

-- Could this failure of a PATCH carrying several members be caused by one of them? A 4xx about
-- the request (bad value, unknown member, too large, conflict) may be; failures of the target as
-- a whole (5xx, timeouts, auth, rate limit, an open breaker, an exhausted budget) are not.
local NOT_MEMBER_SPECIFIC = { [401] = true, [403] = true, [407] = true, [408] = true, [429] = true }
local function member_specific(err)
  local st = type(err) == "table" and tonumber(err.status)
  return st and st >= 400 and st < 500 and not NOT_MEMBER_SPECIFIC[st] or false
end

-- Sends one chunk of members (at most max_members_per_patch) as one PATCH, or by
-- read-modify-PUT when the provider has no PATCH. A failed request carrying several members
-- is split in halves, recursively, when a member may be the cause (always on 413). Returns
-- {id = err} for the members that failed (empty when all were applied) and the request count.
function G:_send_members(group_id, mode, ids)
  local op = mode == "add" and "groups.add_member" or "groups.remove_member"
  local fails, requests = {}, 0
  local gone
  -- a 404 may name a member or the group itself: one read tells, instead of splitting for nothing
  local function group_gone(err)
    if err.status ~= 404 or self.sp.dry_run then return false end
    if gone == nil then
      local _, gerr = self:get(group_id, { op = op, attributes = "id" })
      gone = gerr ~= nil and gerr.status == 404
    end
    return gone
  end
  local function send(chunk)
    local err
    if self.sp:features().patch or self.sp.dry_run then
      local res
      res, err = self:_call(op, "PATCH", self:_path(group_id), nil,
                            { schemas = { PATCH_SCHEMA }, Operations = ops_for(mode, chunk) },
                            { changes = changes.members(mode, chunk) })
      requests = requests + 1
      if res then return end
      if err.status == 501 then
        self.sp:patch_unsupported()
        err = nil
      end
    end
    if not err then -- read-modify-PUT: no PATCH, or PATCH just answered 501
      local _, perr = self:_put_modify(group_id, ops_for(mode, chunk), op)
      if not perr then return end
      err = perr
    end
    if err.status == 400 and err.scim_type == "noTarget" and mode == "remove" and #chunk == 1 then
      return -- the member is already gone: removal is idempotent
    end
    if #chunk > 1 and (err.status == 413 or member_specific(err)) and not group_gone(err) then
      local half = math.floor(#chunk / 2)
      local a, b = {}, {}
      for i, id in ipairs(chunk) do
        if i <= half then a[#a + 1] = id else b[#b + 1] = id end
      end
      send(a)
      send(b)
      return
    end
    for _, id in ipairs(chunk) do fails[id] = err end
  end
  send(ids)
  return fails, requests
end

-- A caller's own copy of the error of a request that may have carried other callers' members
-- too (each step annotates its error), told as it concerns the caller's failed members `ids`:
-- a dead letter replays only those.
local function narrow(err, mode, ids)
  if type(err) ~= "table" then return err end
  local copy = setmetatable({}, getmetatable(err))
  for k, v in pairs(err) do copy[k] = v end
  if copy.request_body ~= nil then
    local ok, json = pcall(cjson.encode, { schemas = { PATCH_SCHEMA }, Operations = ops_for(mode, ids) })
    if ok then copy.request_body = json end
  end
  return copy
end

-- Each call is one `write` event (scimrun.scim.resource R:_written) for its own members, in
-- the caller's task, whichever caller's request carried them.
function G:_members(group_id, ids, mode)
  local op = mode == "add" and "groups.add_member" or "groups.remove_member"
  if type(group_id) ~= "string" or group_id == "" then error(op .. ": group id must be a non-empty string", 3) end
  ids = unique_ids(op, ids)
  if #ids == 0 then return did({ group_id = group_id, count = 0, requests = 0 }, "skipped") end
  local summary, err = self:_members_send(group_id, ids, mode, op)
  local done = mode == "add" and "added" or "removed"
  self:_written { op = op, method = "PATCH", id = group_id, changes = changes.members(mode, ids),
                  result = err and "failed" or (self.sp.dry_run and "planned" or done), error = err }
  if not summary then return nil, err end
  return did(summary, "updated")
end

function G:_members_send(group_id, ids, mode, op)
  local summary = { group_id = group_id, count = #ids, requests = 0 }
  local feats = self.sp:features()
  if not feats.patch and not self.sp.dry_run then
    local _, err = self:_put_modify(group_id, ops_for(mode, ids), op)
    if err then return nil, err end
    summary.requests = 1
    return summary
  end
  local function send(m, chunk) return self:_send_members(group_id, m, chunk) end
  local requests, err
  if self.sp.dry_run then
    requests, err = member_batch.unbatched(self.sp, mode, ids, send, narrow)
  else
    requests, err = member_batch.submit(self.sp, group_id, mode, ids, send, narrow)
  end
  if not requests then return nil, err end
  summary.requests = requests
  return summary
end

-- Returns {group_id, count, requests}, nil, "updated" ("skipped" for no ids; noted as the item
-- outcome), or nil, err. Each caller notes its own outcome, in its own task, whichever caller's
-- request carried its members.
function G:add_members(group_id, ids) return self:_members(group_id, ids, "add") end
function G:remove_members(group_id, ids) return self:_members(group_id, ids, "remove") end
function G:add_member(group_id, id) return self:_members(group_id, { id }, "add") end
function G:remove_member(group_id, id) return self:_members(group_id, { id }, "remove") end

return G
