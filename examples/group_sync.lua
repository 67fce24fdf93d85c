-- Group sync: every group named in a CSV (columns group,userName) ends up with exactly the
-- members the CSV lists. Missing groups are created; members are added and removed by delta
-- (one PATCH per group and direction, chunked by the policy's scim.max_members_per_patch); a
-- listed member without an account is created first. Groups the CSV does not name are left alone.
--
--   scimrun examples/group_sync.lua --sandbox            (uses policies/group_sync.lua)
--   SCIM_BASE_URL=https://... SCIM_TOKEN=... scimrun examples/group_sync.lua --policy group_sync \
--       --param csv=memberships.csv
--
-- Params: csv (the desired memberships), remove (false: only add), max_removals (more removals
-- than this stop the run before its first write unless --allow-deletes N allows them),
-- concurrency, mapping (a mapping file for the member columns; default: the default mapping).
-- Optional CSV columns email and displayName (any column of the mapping) fill in a member user
-- that has to be created. See docs/examples.md.
--
-- Safety: a malformed CSV row would make its member look unwanted and so be removed; the run
-- therefore refuses a file with bad rows before any write. Every run reads the groups' current
-- members and sends only the difference, so a rerun (or --resume) after any failure converges.
-- Its policy (policies/group_sync.lua) retries reads and user creation, not membership changes:
-- when one fails transiently (a 5xx, a timeout, a lost answer, a 412) the group is read again
-- and only what is still missing is sent, at most PASSES times per group in a run; what a rerun
-- would do, for that group only. A delta is never re-sent blindly.
local scim = require "scimrun.scim"
local csv = require "scimrun.csv"
local errors = require "scimrun.errors"
local mapping = require "scimrun.mapping"

-- Iterates { item, info } records the way csv.rows does, for wf:each.
local function records(list)
  local i = 0
  return function()
    i = i + 1
    local r = list[i]
    if r then return r.item, r.info end
  end
end

-- The value of a (value | nil, err) answer and what the call did (the SCIM client's third
-- value, which it has also noted as the item's outcome); raises the error of a (nil, err) answer.
local function must(v, err, how)
  if v == nil and err ~= nil then error(err, 0) end
  return v, how
end

local function usage(detail, suggest)
  error(errors.new { class = "usage", detail = detail, suggest = suggest }, 0)
end

-- Reads of a group's membership and fresh deltas per group and run (see the header).
local PASSES = 3

-- A failed membership change worth a fresh read and a new delta: the target may have applied
-- it (lost answer) or not (5xx), or the group changed under it (412). Not auth, not a refusal.
local function reconcilable(err)
  return err.class == "transient" or err.class == "rate_limited" or (err.class == "conflict" and err.status == 412)
end

-- The user members of a group resource: id -> display name (or true). Nested groups are not
-- managed by this CSV.
local function members_of(group)
  local out = {}
  for _, mem in ipairs(type(group.members) == "table" and group.members or {}) do
    if type(mem) == "table" and type(mem.value) == "string" and mem.type ~= "Group" then
      out[mem.value] = type(mem.display) == "string" and mem.display or true
    end
  end
  return out
end

-- Reads the desired state: groups in file order, each with its members in file order. A
-- member's attributes (for creating a missing account) come from the row through the plan.
local function read_desired(path, plan)
  local groups, by_key, bad = {}, {}, {}
  for row, info in csv.rows(path, { required = { "group" } }) do
    local why = info.error
    local attrs
    if row and not why then
      if row.group == "" then why = "empty group" else attrs, why = mapping.apply(plan, row) end
    end
    if why then
      bad[#bad + 1] = ("%s:%d: %s"):format(info.file, info.line, why)
    else
      local gkey = row.group:lower()
      local g = by_key[gkey]
      if not g then
        g = { name = row.group, key = gkey, line = info.line, members = {}, seen = {} }
        by_key[gkey] = g
        groups[#groups + 1] = g
      end
      local user_name = tostring(attrs.userName)
      local ukey = user_name:lower()
      if not g.seen[ukey] then
        g.seen[ukey] = true
        g.members[#g.members + 1] = { key = ukey, userName = user_name, attrs = attrs }
      end
    end
  end
  return groups, bad
end

return scimrun.workflow {
  name = "group_sync",
  params = { csv = "data/groups.csv", remove = true, max_removals = 50, concurrency = 8, mapping = "" },
  -- only users.create retries (policies/group_sync.lua); --policy FILE still overrides
  options = { policy = "group_sync" },
  run = function(wf, p)
    local sp = scim.connect { base_url = wf.env "SCIM_BASE_URL", token_env = "SCIM_TOKEN" }
    local limit = tonumber(p.concurrency) or 8

    -- 1. Desired state. A bad row stops the run here, before anything is read or written.
    -- The mapping turns a row into the member's attributes (default: userName, and email,
    -- displayName, ... when the file has such columns); the group column is not an attribute.
    local spec = mapping.load(p.mapping, { require = { "userName" } })
    local header = csv.open(p.csv, { required = { "group" } })
    header.close()
    local plan = mapping.prepare(spec, header.columns, { file = p.csv, log = wf.log, ignore = { "group" } })
    local ok, groups, bad = pcall(read_desired, p.csv, plan)
    if not ok then usage(tostring(groups), "check the file given as --param csv") end
    if #bad > 0 then
      usage(("%d malformed row(s) in %s; nothing was changed (a missing row would remove its member):\n  %s")
        :format(#bad, p.csv, table.concat(bad, "\n  ")), "fix the rows, then run again")
    end

    -- 2. Current state: every member's account and every group's members (reads only).
    local users, wanted, wanted_list = {}, {}, {}
    for _, g in ipairs(groups) do
      for _, m in ipairs(g.members) do
        if not wanted[m.key] then wanted[m.key] = m; wanted_list[#wanted_list + 1] = m end
      end
    end
    wf:map(wanted_list, { concurrency = limit }, function(m)
      local u = must(sp.users:find_by("userName", m.userName))
      if u then users[m.key] = u.id end
    end)
    wf:map(groups, { concurrency = limit }, function(g)
      local found = must(sp.groups:find_by("displayName", g.name))
      g.current = {}
      if found then
        g.id = found.id
        g.current = members_of(must(sp.groups:get(found.id)))
      end
    end)

    -- 3. The plan: removals are computed now, from the reads above.
    local removals, total_removals = {}, 0
    for _, g in ipairs(groups) do
      local ids = {}
      for _, m in ipairs(g.members) do
        if users[m.key] then ids[users[m.key]] = true end
      end
      local rm = {}
      if p.remove then
        for id in pairs(g.current) do
          if not ids[id] then rm[#rm + 1] = id end
        end
        table.sort(rm)
      end
      removals[g.key] = rm
      total_removals = total_removals + #rm
    end
    if total_removals > p.max_removals and not (wf.allow_deletes and total_removals <= wf.allow_deletes) then
      io.stdout:write(("group_sync: would remove %d membership(s), over max_removals = %d:\n")
        :format(total_removals, p.max_removals))
      for _, g in ipairs(groups) do
        for _, id in ipairs(removals[g.key]) do
          local who = g.current[id] ~= true and (g.current[id] .. " (" .. id .. ")") or id
          io.stdout:write(("  remove %s from %s\n"):format(who, g.name))
        end
      end
      usage(("would remove %d memberships, over max_removals = %d; nothing was changed")
        :format(total_removals, p.max_removals),
        ("check %s; if these removals are intended, rerun with --allow-deletes %d"):format(p.csv, total_removals))
    end

    -- 4. Members without an account: created once each, before the groups that list them.
    local missing = {}
    for _, m in ipairs(wanted_list) do
      if not users[m.key] then missing[#missing + 1] = { item = { userName = m.userName }, info = { file = p.csv } } end
    end
    wf:each(records(missing), { concurrency = limit }, function(item)
      local m = wanted[item.userName:lower()]
      local u = wf:step("user:" .. m.key, function()
        local r = must(sp.users:create(m.attrs)) -- notes created (or adopted, skipped)
        return { id = r.id }
      end, {
        -- in doubt after a crash: did the create reach the provider? look before re-sending
        recover = function()
          local found = must(sp.users:find_by("userName", m.userName))
          return found and { id = found.id } or nil
        end,
      })
      users[m.key] = u.id
    end)

    -- 5. Each group: create it if missing, then add and remove the difference.
    local list = {}
    for _, g in ipairs(groups) do
      list[#list + 1] = { item = { displayName = g.name }, info = { file = p.csv, line = g.line, index = #list + 1 } }
    end
    local by_key = {}
    for _, g in ipairs(groups) do by_key[g.key] = g end
    wf:each(records(list), { concurrency = limit }, function(item)
      local g = by_key[item.displayName:lower()]
      local group = wf:step("group:" .. g.key, function()
        if g.id then -- found by the read above
          wf:outcome("skipped")
          return { id = g.id }
        end
        local r = must(sp.groups:ensure { displayName = g.name }) -- notes created (or adopted)
        return { id = r.id }
      end)
      local want = {}
      for _, m in ipairs(g.members) do
        -- a member whose account could not be created (dead-lettered) is left out
        if users[m.key] then want[#want + 1] = users[m.key] end
      end
      local current, changed = g.current, false
      for pass = 1, PASSES do
        -- pass 2 and later: after a failed change, the group as it is now (a read, retried)
        if pass > 1 then current = members_of(must(sp.groups:get(group.id))) end
        local tag = pass > 1 and ("#" .. pass) or ""
        local add, rm = {}, {}
        for _, id in ipairs(want) do
          if not current[id] then add[#add + 1] = id end
        end
        -- only the removals planned (and approved) above, of members still there
        for _, id in ipairs(removals[g.key]) do
          if pass == 1 or current[id] then rm[#rm + 1] = id end
        end
        local sent, err = pcall(function()
          if #add > 0 then
            changed = true
            wf:step("add:" .. g.key .. tag, function()
              return must(sp.groups:add_members(group.id, add)) -- notes updated
            end)
          end
          if #rm > 0 then
            changed = true
            wf:step("remove:" .. g.key .. tag, function()
              return must(sp.groups:remove_members(group.id, rm)) -- notes updated
            end)
          end
        end)
        if sent then break end
        err = errors.normalize(err)
        if pass == PASSES or not reconcilable(err) then error(err, 0) end
        wf.log("warn", "membership change failed; reading the group again to send only what is still missing",
          { group = g.name, step = err.step, class = err.class, status = err.status, pass = pass })
      end
      if not changed then wf:outcome("skipped") end
    end)
  end,
}
