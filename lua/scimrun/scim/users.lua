-- User-only operations: deactivation (the safe form of de-provisioning) and the deletion guard.
local request = require "scimrun.scim.request"
local did = require("scimrun.scim.resource").did

local U = {}

-- PATCH active=false (a JSON boolean), then read back and verify. 404 means already gone.
-- Returns resource, nil, "deactivated" | "absent" (noted as the item outcome "updated" |
-- "skipped"), or nil, err.
function U:deactivate(id)
  local op = "users.deactivate"
  if type(id) ~= "string" or id == "" then error(op .. ": id must be a non-empty string", 2) end
  local _, err = self:patch(id, { { op = "replace", path = "active", value = false } },
                           { op = op, outcome = "deactivated" })
  if err then
    if err.status == 404 then return did({ id = id, active = false }, "absent", "skipped") end
    return nil, err
  end
  if self.sp.dry_run then return did({ id = id, active = false }, "deactivated", "updated") end
  local cur, gerr = self:get(id, { op = op })
  if not cur then
    if gerr.status == 404 then return did({ id = id, active = false }, "absent", "skipped") end
    return nil, gerr
  end
  if cur.active ~= false then
    return nil, request.error({ op = op, url = self.sp.base_url .. self:_path(id), method = "GET" },
      { class = "permanent", reason = "not_deactivated",
        detail = ("%s: the provider accepted active=false but %s still reads active=%s")
          :format(op, id, tostring(cur.active)),
        suggest = "this provider may not support deactivation; delete the user instead" })
  end
  return did(cur, "deactivated", "updated")
end

-- Total number of users the provider reports (one small page), or nil, err.
function U:count(filter_expr)
  local op = "users.search"
  local q = { { "filter", filter_expr }, { "startIndex", 1 }, { "count", 1 } }
  local res, err = self:_call(op, "GET", self.endpoint, q)
  if not res then return nil, err end
  local total = type(res.json) == "table" and tonumber(res.json.totalResults)
  if not total then
    return nil, request.error({ op = op, url = res.url, method = "GET" },
      { class = "permanent", reason = "bad_response", detail = op .. ": ListResponse without totalResults" })
  end
  return total
end

-- Guard against mass de-provisioning (a truncated HR export must not wipe the directory).
-- opts: threshold_count (10), threshold_percent (10), allow (operator-approved count, e.g. from
-- --allow-deletes N), total (skip asking the provider). Over a threshold -> nil, err listing
-- what would happen; else a plan {ids, count, total, percent}.
function U:plan_deprovision(ids, opts)
  opts = opts or {}
  local op = "users.deprovision"
  if type(ids) ~= "table" then error(op .. ": ids must be an array", 2) end
  local n = #ids
  local max_count = opts.threshold_count or 10
  local max_pct = opts.threshold_percent or 10
  local total = opts.total
  if total == nil and n > 0 then
    local t, err = self:count()
    if not t then return nil, err end
    total = t
  end
  local pct = (total and total > 0) and (n * 100 / total) or (n > 0 and 100 or 0)
  local plan = { ids = ids, count = n, total = total, percent = pct }
  local over = n > max_count or pct > max_pct
  if not over then return plan end
  if opts.allow and n <= opts.allow then
    plan.allowed_by = opts.allow
    return plan
  end
  local sample = {}
  for i = 1, math.min(n, 20) do sample[i] = tostring(ids[i]) end
  local err = request.error({ op = op, url = self.sp.base_url .. self.endpoint, method = "DELETE" }, {
    class = "permanent", reason = "deprovision_threshold",
    detail = ("would de-provision %d of %s users (%.1f%%), over the threshold of %d users or %g%%: %s%s")
      :format(n, tostring(total or "?"), pct, max_count, max_pct, table.concat(sample, ", "),
              n > #sample and (", ... (" .. (n - #sample) .. " more)") or ""),
    suggest = ("check the source data; if these %d removals are intended, re-run with --allow-deletes %d")
      :format(n, n),
  })
  err.would = { ids = ids, count = n, total = total, percent = pct }
  return nil, err
end

return U
