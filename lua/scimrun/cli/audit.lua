-- `scimrun audit [--run ID] [--user NAME] [--limit N] [--json] [--state FILE]`: the audit
-- trail (scimrun.observe.audit), every write made at a service provider, oldest first.
local cjson = require "cjson"
local common = require "scimrun.cli.common"
local flags = require "scimrun.cli.flags"
local changes = require "scimrun.scim.changes"

local M = {}

local function decode(json)
  if not json then return nil end
  local ok, v = pcall(cjson.decode, json)
  return ok and v or nil
end

-- The rows `audit --json` prints (scimrun ui's /api/audit serves the same), oldest first:
-- o.run, o.user, o.limit as the flags. nil, err when the state file has no audit trail.
function M.rows(db, o)
  local rows, err = db:audit_list { run_id = o.run, user = o.user, limit = o.limit }
  if not rows then return nil, err end
  for _, r in ipairs(rows) do
    r.changes = decode(r.changes_json)
    r.changes_json = nil
  end
  return rows
end

function M.main(args, cli)
  local o, pos = flags.parse("audit", args, cli)
  if pos[1] then cli.fail("unexpected argument %s (see: scimrun help audit)", pos[1]) end
  local limit
  if o.limit then
    limit = tonumber(o.limit)
    if not limit or limit < 1 or limit % 1 ~= 0 or limit > 2 ^ 31 - 1 then
      cli.fail("--limit must be a whole number >= 1, got %s", tostring(o.limit))
    end
  end
  local db, path = common.open_store(o, cli, true)
  if o.run and not db:run_get(o.run) then
    db:close()
    cli.fail("no run %s in %s (see: scimrun runs list)", o.run, path)
  end
  local rows, err = M.rows(db, { run = o.run, user = o.user, limit = limit })
  db:close()
  if not rows then
    if tostring(err):find("no such table", 1, true) then
      cli.fail("%s has no audit trail yet (written by an older scimrun); the next run records one", path)
    end
    cli.fail("%s", tostring(err))
  end
  if o.json then
    io.stdout:write(#rows == 0 and "[]" or cjson.encode(rows), "\n")
    return 0
  end
  if #rows == 0 then
    io.stdout:write("no writes recorded", o.run and (" for run " .. o.run) or "", o.user and (" for " .. o.user) or "",
      "\n")
    return 0
  end
  for _, r in ipairs(rows) do
    local what = (r.resource_type or "?") .. "/" .. (r.resource_id or "?")
    if r.resource_name then what = what .. " (" .. r.resource_name .. ")" end
    if r.member_id then what = what .. " member " .. r.member_id end
    io.stdout:write(("%s  %s  %-22s %-11s %s%s\n"):format(common.time(r.at), r.run_id, r.operation,
      r.result .. (r.status and (" " .. r.status) or ""), what, r.item and ("  [" .. r.item .. "]") or ""))
    local text = r.changes and changes.text(r.changes) or ""
    if text ~= "" then io.stdout:write("    ", text, "\n") end
    if r.detail then io.stdout:write("    error: ", r.detail, "\n") end
  end
  return 0
end

return M
