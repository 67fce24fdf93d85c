-- What the worker specs read back: rows of the run's PostgreSQL database (scimrun.pg, one
-- connection per query), and the provider's own records of a sandbox in the spec process.
local sbrun = require "helpers.sbrun"

local M = {}

-- rows | nil, err (a database whose schema is not made yet, say)
function M.try_query(url, sql, ...)
  local conn = assert(require("scimrun.pg").connect(url))
  local rows, err = conn:exec(sql, ...)
  conn:close()
  return rows, err
end

function M.query(url, sql, ...) return assert(M.try_query(url, sql, ...)) end

-- userName -> number of accounts at the provider (case-insensitive), id -> number of
-- memberships in the group, and the whole dump
function M.provider_records(srv, group)
  local dump = sbrun.dump(srv)
  local accounts, members = {}, {}
  for _, u in pairs(dump.users or {}) do
    local name = tostring(u.userName):lower()
    accounts[name] = (accounts[name] or 0) + 1
  end
  for _, g in pairs(dump.groups or {}) do
    if g.displayName == group then
      for _, m in ipairs(g.members or {}) do members[m.value] = (members[m.value] or 0) + 1 end
    end
  end
  return accounts, members, dump
end

return M
