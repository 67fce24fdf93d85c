-- What the worker specs read back: rows of the run's PostgreSQL database (scimrun.pg, one
-- connection per query), and the provider's own records of a sandbox in the spec process (and
-- the check that a CSV's users are all there, each once).
local luassert = require "luassert"
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

-- Every user of the CSV at path csv is at the provider exactly once, and every account there is
-- in the group exactly once (busted assertions); returns the provider's dump.
function M.assert_each_user_once(srv, csv, group)
  local accounts, members, dump = M.provider_records(srv, group)
  local missing, dup = {}, {}
  for row in require("scimrun.csv").rows(csv) do
    local name = tostring(row.userName):lower()
    local n = accounts[name]
    if not n then missing[#missing + 1] = name elseif n > 1 then dup[#dup + 1] = name .. "x" .. n end
  end
  luassert.are.same({}, missing)
  luassert.are.same({}, dup)
  local not_member, twice = 0, 0
  for _, u in pairs(dump.users) do
    local m = members[u.id]
    if not m then not_member = not_member + 1 elseif m > 1 then twice = twice + 1 end
  end
  luassert.are.equal(0, not_member)
  luassert.are.equal(0, twice)
  return dump
end

return M
