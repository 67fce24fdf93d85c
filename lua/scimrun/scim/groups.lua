-- Group membership: PATCH add with a members value array, PATCH remove with members[value eq
-- "id"] paths, chunked by max_members_per_patch; a 413 splits the chunk and sends the halves.
-- A whole membership is never PUT from a read that may be partial: the read-modify-PUT fallback
-- (providers without PATCH) always starts from a fresh full GET of the group.
local filter = require "scimrun.scim.filter"

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

function G:_members(group_id, ids, mode)
  local op = mode == "add" and "groups.add_member" or "groups.remove_member"
  if type(group_id) ~= "string" or group_id == "" then error(op .. ": group id must be a non-empty string", 3) end
  ids = unique_ids(op, ids)
  local summary = { group_id = group_id, count = #ids, requests = 0 }
  if #ids == 0 then return summary end
  local feats = self.sp:features()
  if not feats.patch and not self.sp.dry_run then
    local _, err = self:_put_modify(group_id, ops_for(mode, ids), op)
    if err then return nil, err end
    summary.requests = 1
    return summary
  end
  local function send(chunk)
    local res, err = self:_call(op, "PATCH", self:_path(group_id), nil,
                                { schemas = { PATCH_SCHEMA }, Operations = ops_for(mode, chunk) })
    summary.requests = summary.requests + 1
    if res then return true end
    if err.status == 413 and #chunk > 1 then
      local half = math.floor(#chunk / 2)
      local a, b = {}, {}
      for i, id in ipairs(chunk) do
        if i <= half then a[#a + 1] = id else b[#b + 1] = id end
      end
      local ok, e = send(a)
      if not ok then return nil, e end
      return send(b)
    end
    if err.status == 400 and err.scim_type == "noTarget" and mode == "remove" then
      return true  -- the member is already gone: removal is idempotent
    end
    if err.status == 501 then
      self.sp:patch_unsupported()
      local _, perr = self:_put_modify(group_id, ops_for(mode, chunk), op)
      if perr then return nil, perr end
      return true
    end
    return nil, err
  end
  local size = self.sp.max_members_per_patch
  for first = 1, #ids, size do
    local chunk = {}
    for i = first, math.min(first + size - 1, #ids) do chunk[#chunk + 1] = ids[i] end
    local ok, err = send(chunk)
    if not ok then return nil, err end
  end
  return summary
end

-- Returns {group_id, count, requests} or nil, err.
function G:add_members(group_id, ids) return self:_members(group_id, ids, "add") end
function G:remove_members(group_id, ids) return self:_members(group_id, ids, "remove") end
function G:add_member(group_id, id) return self:_members(group_id, { id }, "add") end
function G:remove_member(group_id, id) return self:_members(group_id, { id }, "remove") end

return G
