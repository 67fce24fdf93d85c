-- The lookups of the SCIM client by one attribute (mixed into scimrun.scim.resource's methods):
--   R:prefetch(opts)            reads every resource of the kind once into a copy in memory
--   R:_index_add(r, old)        keeps that copy up to date with what the connection writes
--   R:find_by(attr, value, opts) one resource by an attribute: from the copy, else a search
-- Contract and behaviour are those documented on each function below.
local filter = require "scimrun.protocol.filter"
local patch = require "scimrun.scim.patch"

local M = {}

-- R: the resource methods; h: resource.lua's helpers (perr, same, present, listed).
function M.mix(R, h)
  local perr, same, present, listed = h.perr, h.same, h.present, h.listed

  local function index_key(v, ci)
    if type(v) ~= "string" then return v end
    return ci and v:lower() or v
  end

  -- Reads every resource of this kind once, when the provider holds at most opts.max (5000), so
  -- that lookups by the match attributes (users: externalId and userName) answer from memory: a
  -- run that creates many resources then sends one request per page instead of a lookup per
  -- resource. What this connection creates, adopts or renames is kept up to date. Another client
  -- creating the same resource meanwhile is still caught: the create answers 409 and is
  -- resolved by a fresh lookup, never by the copy.
  -- Returns the number of resources indexed, nil when there are more than opts.max (lookups stay
  -- one per resource), or nil, err.
  function R:prefetch(opts)
    opts = opts or {}
    local max = opts.max or 5000
    local attrs = {}
    for _, a in ipairs(self:_match_order()) do attrs[#attrs + 1] = a end
    if not listed(attrs, self:_match_attr()) then attrs[#attrs + 1] = self:_match_attr() end
    local q = { { "startIndex", 1 }, { "count", 0 } } -- totalResults only (RFC 7644 3.4.2.4)
    local res, err = self:_call(self:_op("search"), "GET", self.endpoint, q)
    if not res then return nil, err end
    local total = type(res.json) == "table" and tonumber(res.json.totalResults)
    if not total or total > max then return nil end
    local ix = { by = {} }
    for _, a in ipairs(attrs) do ix.by[a] = { ci = self.kind.ci[a], map = {} } end
    local n = 0
    local ok, perr_or = pcall(function()
      if total == 0 then return end
      for r in self:list {} do
        n = n + 1
        for a, one in pairs(ix.by) do
          local v = patch.get_ci(r, a)
          if present(v) then
            local k = index_key(v, one.ci)
            local prev = one.map[k]
            if prev then
              one.map[k] = prev.__matches and prev or { __matches = { prev } }
              one.map[k].__matches[#one.map[k].__matches + 1] = r
            else
              one.map[k] = r
            end
          end
        end
      end
    end)
    if not ok then return nil, perr_or end
    self._index = ix
    return n
  end

  -- Keeps the prefetched copy up to date: `old` (the resource as it was) leaves it, `r` enters,
  -- as its id only (`__slim`), under the values it is looked up by: a run creating 100,000 users
  -- held ~170 MB of whole resources here. A lookup that lands on such an entry reads the
  -- resource again (R:find_by: one GET, rare, as the preflight refuses an input naming one
  -- identity twice).
  function R:_index_add(r, old)
    local ix = self._index
    if not ix then return end
    local entry = type(r) == "table" and r.id ~= nil and { id = r.id, __slim = true } or r
    for a, one in pairs(ix.by) do
      local ov = type(old) == "table" and patch.get_ci(old, a)
      if present(ov) then
        local k = index_key(ov, one.ci)
        local cur = one.map[k]
        if cur and cur.__matches then
          for i = #cur.__matches, 1, -1 do
            if cur.__matches[i].id == old.id then table.remove(cur.__matches, i) end
          end
          if #cur.__matches == 1 then one.map[k] = cur.__matches[1] end
        elseif cur and cur.id == old.id then
          one.map[k] = nil
        end
      end
      local v = type(r) == "table" and patch.get_ci(r, a)
      if present(v) then one.map[index_key(v, one.ci)] = entry end
    end
  end

  -- One resource whose `attr` equals `value`, nil when none, or nil, err (ambiguity is permanent).
  -- After prefetch, answered from memory unless opts.fresh.
  function R:find_by(attr, value, opts)
    local op = opts and opts.op or self:_op("search")
    local one = self._index and self._index.by[attr]
    local found, err
    if one and not (opts and opts.fresh) then
      local hit = one.map[index_key(value, one.ci)]
      if hit == nil then return nil end -- the prefetched copy holds none: the common answer
      found = {}
      for _, r in ipairs(hit.__matches or { hit }) do
        if r.__slim then -- written by this connection: kept as its id, read again
          local full, gerr = self:get(r.id, { op = op })
          if full then
            found[#found + 1] = full
          elseif gerr.status ~= 404 then -- a resource deleted since is simply not found
            return nil, gerr
          end
        else
          found[#found + 1] = r
        end
      end
    else
      found, err = self:_search(op, filter.eq(attr, value))
    end
    if not found then return nil, err end
    local ci = self.kind.ci[attr]
    local matches = {}
    for _, r in ipairs(found) do
      local v = patch.get_ci(r, attr)
      -- a provider that ignores the filter returns other resources: compare on our side too (a
      -- resource read without the attribute counts, except for externalId, which is never
      -- implied: a user without one is not the user with one)
      if (v == nil and attr ~= "externalId") or same(v, value, ci) then matches[#matches + 1] = r end
    end
    if #matches > 1 then
      local ids = {}
      for i, r in ipairs(matches) do ids[i] = tostring(r.id) end
      return nil, perr(self, op, ("%d %s match %s: %s"):format(#matches, self.name, filter.eq(attr, value),
                                                               table.concat(ids, ", ")),
        { reason = "ambiguous", method = "GET",
          suggest = "remove the duplicates in the service provider, then replay" })
    end
    return matches[1]
  end
end

return M
