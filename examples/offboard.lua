-- Offboarding: every user listed in a CSV (column userName) is deactivated (active=false, the
-- reversible form of de-provisioning) and removed from its groups; with grace_days set, a user
-- deactivated at least that many days ago is then deleted.
--
--   scimrun examples/offboard.lua --sandbox
--   SCIM_BASE_URL=https://... SCIM_TOKEN=... scimrun examples/offboard.lua --param csv=leavers.csv
--
-- Params: csv; grace_days ("none": never delete; 0: delete right after deactivating; N: delete
-- users whose account has been inactive, unchanged, for N days, judged by the provider's
-- meta.lastModified); max_count and max_percent, the mass de-provisioning guard; concurrency;
-- mapping (a mapping file: only its userName entry is used, so an HR export can name the column);
-- keep and keep_filter, the accounts scimrun does not manage. See docs/examples.md.
--
-- Keep list: accounts that are never touched (break-glass admins, service accounts), even when
-- the CSV lists them: keep=FILE names them, one userName per line (case-insensitive; blank
-- lines and # comments ignored), and keep_filter='userType eq "Service"' (a SCIM filter the
-- provider evaluates, read once) adds the users it matches. A kept leaver is reported skipped.
--
-- Guard: before its first write the run counts the users it would deactivate or delete (those
-- the keep list protects are not counted). Over max_count users or max_percent of all users on
-- the provider, it writes nothing, lists what it would do and stops with exit code 2; rerun with
-- --allow-deletes N to approve N of them. A truncated HR export must not wipe the directory.
local scim = require "scimrun.scim"
local csv = require "scimrun.csv"
local errors = require "scimrun.errors"
local mapping = require "scimrun.mapping"

-- The value of a (value | nil, err) answer and what the call did (the SCIM client's third
-- value, which it has also noted as the item's outcome); raises the error of a (nil, err) answer.
local function must(v, err, how)
  if v == nil and err ~= nil then error(err, 0) end
  return v, how
end

local function usage(detail, suggest)
  error(errors.new { class = "usage", detail = detail, suggest = suggest }, 0)
end

-- Seconds since the epoch of an RFC 3339 time (meta.lastModified), or nil.
local function epoch(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  y, mo = tonumber(y), tonumber(mo)
  if mo <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + tonumber(d) - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  local t = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
  local sign, oh, om = rest:match("([%+%-])(%d%d):?(%d%d)$")
  if sign then t = t - (sign == "+" and 1 or -1) * (tonumber(oh) * 3600 + tonumber(om) * 60) end
  return t
end

-- The keep list file: lower-cased userName -> userName as written, and how many. One name per
-- line; blank lines, lines starting with # and trailing " # comments" are ignored.
local function read_keep(path)
  local f, ferr = io.open(path, "rb")
  if not f then
    usage(("cannot read the keep list %s: %s"):format(path, tostring(ferr)),
      "give --param keep=FILE, a file of userNames to leave alone (one per line, # comments)")
  end
  local set, n, lineno = {}, 0, 0
  for line in f:lines() do
    lineno = lineno + 1
    if lineno == 1 then line = line:gsub("^\239\187\191", "") end -- a UTF-8 byte order mark
    local name = line:gsub("\r$", ""):gsub("^%s*#.*$", ""):gsub("%s+#.*$", ""):gsub("^%s+", ""):gsub("%s+$", "")
    if name ~= "" then
      if not set[name:lower()] then n = n + 1 end
      set[name:lower()] = name
    end
  end
  f:close()
  return set, n
end

local function grace_seconds(v)
  if v == nil or v == "" or v == "none" then return nil end
  local n = tonumber(v)
  if not n or n < 0 then usage(("grace_days must be \"none\" or a number of days >= 0, got %q"):format(tostring(v))) end
  return n * 86400
end

return scimrun.workflow {
  name = "offboard",
  params = { csv = "data/offboard.csv", grace_days = "none", max_count = 25, max_percent = 10, concurrency = 8,
             mapping = "", keep = "", keep_filter = "" },
  run = function(wf, p)
    local sp = scim.connect { base_url = wf.env "SCIM_BASE_URL", token_env = "SCIM_TOKEN" }
    local limit = tonumber(p.concurrency) or 8
    local grace = grace_seconds(p.grace_days)
    -- the accounts scimrun does not manage, by name (read before anything is sent)
    local keep = {}
    if p.keep ~= "" then
      local keep_count
      keep, keep_count = read_keep(p.keep)
      wf.log("info", ("keep list: %d account(s) are never de-provisioned"):format(keep_count), { file = p.keep })
    end

    -- 1. The leavers. A bad row becomes a failed item (file:line) below; it removes no one.
    -- Only the userName is read from a row, through the mapping (default: a userName column);
    -- the file's other columns are left alone.
    local spec = mapping.select(mapping.load(p.mapping, { require = { "userName" } }), { "userName" })
    local header = csv.open(p.csv)
    header.close()
    local matched = mapping.assert_header(mapping.plan(spec, header.columns, { file = p.csv }))
    wf.log("info", ("leavers: userName from column '%s'"):format(matched.mapped[1] and matched.mapped[1].column
      or "?"), { file = p.csv })
    local rows = {}
    local ok, err = pcall(function()
      for row, info in csv.rows(p.csv) do
        local attrs
        if row and not info.error then
          local why
          attrs, why = mapping.apply(matched, row)
          if not attrs then info.error = why end
        end
        local user_name = attrs and tostring(attrs.userName)
        rows[#rows + 1] = { row = row, info = info, userName = user_name, key = user_name and user_name:lower() }
      end
    end)
    if not ok then usage(tostring(err), "check the file given as --param csv") end

    -- 2. What each would need (reads only): its account, its groups, whether it is due for deletion.
    local good = {}
    for _, r in ipairs(rows) do
      if r.userName and not r.info.error then good[#good + 1] = r end
    end
    local groups_known = false
    wf:map(good, { concurrency = limit }, function(r)
      local u = must(sp.users:find_by("userName", r.userName))
      r.user = u
      if u and type(u.groups) == "table" then groups_known = true end
    end)
    -- Providers that do not show a user's groups on the user: one listing of all groups.
    if not groups_known then
      local member_of = {}
      local ok_list, list_err = pcall(function()
        for g in sp.groups:list { attributes = "displayName,members" } do
          for _, m in ipairs(type(g.members) == "table" and g.members or {}) do
            if type(m) == "table" and m.value then
              member_of[m.value] = member_of[m.value] or {}
              table.insert(member_of[m.value], { value = g.id, display = g.displayName })
            end
          end
        end
      end)
      if not ok_list then error(list_err, 0) end
      for _, r in ipairs(good) do
        if r.user then r.user.groups = member_of[r.user.id] end
      end
    end
    -- ... and by a filter the provider evaluates (one listing of the users it matches)
    local kept_ids = {}
    if p.keep_filter ~= "" then
      local n = 0
      local ok_keep, keep_err = pcall(function()
        for u in sp.users:list { filter = p.keep_filter, attributes = "userName" } do
          if type(u.id) == "string" then kept_ids[u.id] = true; n = n + 1 end
        end
      end)
      if not ok_keep then error(keep_err, 0) end
      wf.log("info", ("keep filter: %d account(s) match, never de-provisioned"):format(n), { filter = p.keep_filter })
    end
    local function kept(r)
      local u = r.user
      if keep[r.key] or (type(u.userName) == "string" and keep[u.userName:lower()]) then return "keep list" end
      if kept_ids[u.id] then return "keep filter" end
    end

    local now = scimrun.wall()
    local affected, plan_lines, left_alone = {}, {}, {}
    for _, r in ipairs(good) do
      local u = r.user
      r.kept = u and kept(r)
      if r.kept then
        left_alone[#left_alone + 1] = ("%s (%s)"):format(r.userName, r.kept)
      elseif u then
        r.deactivate = u.active ~= false
        r.groups = {}
        for _, g in ipairs(type(u.groups) == "table" and u.groups or {}) do
          if type(g) == "table" and type(g.value) == "string" then r.groups[#r.groups + 1] = g end
        end
        if grace then
          local since = epoch(type(u.meta) == "table" and u.meta.lastModified or nil)
          r.delete = (r.deactivate and grace == 0) or (not r.deactivate and since ~= nil and now - since >= grace)
        end
        if r.deactivate or r.delete then
          affected[#affected + 1] = u.userName or r.userName
          local names = {}
          for _, g in ipairs(r.groups) do names[#names + 1] = tostring(g.display or g.value) end
          plan_lines[#plan_lines + 1] = ("  %s (%s):%s%s%s"):format(r.userName, u.id,
            r.deactivate and " deactivate" or "", #names > 0 and (", remove from " .. table.concat(names, ", ")) or "",
            r.delete and ", delete" or "")
        end
      end
    end

    if #left_alone > 0 then
      wf.log("warn", ("%d leaver(s) of %s are kept and left alone: %s%s"):format(#left_alone, p.csv,
        table.concat(left_alone, ", ", 1, math.min(#left_alone, 20)),
        #left_alone > 20 and (", ... (" .. (#left_alone - 20) .. " more)") or ""))
    end

    -- 3. The guard, before any write: it counts only the accounts left after the keep list.
    if #affected > 0 then
      local plan, gerr = sp.users:plan_deprovision(affected, { threshold_count = p.max_count,
        threshold_percent = p.max_percent, allow = wf.allow_deletes })
      if not plan then
        if gerr.reason ~= "deprovision_threshold" then error(gerr, 0) end
        io.stdout:write(("offboard: nothing was changed. It would de-provision %d user(s)%s:\n%s\n")
          :format(#affected, #left_alone > 0 and (" (%d more kept by the keep list)"):format(#left_alone) or "",
            table.concat(plan_lines, "\n")))
        usage(gerr.detail, gerr.suggest)
      end
      if plan.allowed_by then
        wf.log("warn", "mass de-provisioning approved by --allow-deletes",
               { count = #affected, allowed = plan.allowed_by })
      end
    end

    -- 4. The writes, one item per CSV row.
    local i = 0
    local function items()
      i = i + 1
      local r = rows[i]
      if r then return r, r.info end
    end
    wf:each(items, { concurrency = limit }, function(r)
      local u = r.user
      if not u or r.kept then
        wf:outcome("skipped") -- no such account, or one scimrun does not manage: nothing to de-provision
        return
      end
      -- each SCIM call notes the item's outcome: updated, or skipped for an account already gone
      local changed = false
      if r.deactivate then
        wf:step("deactivate:" .. r.key, function()
          local res, how = must(sp.users:deactivate(u.id)) -- "deactivated" or "absent"
          return { id = res.id, active = false, was = how }
        end)
        changed = true
      end
      for _, g in ipairs(r.groups) do
        wf:step("ungroup:" .. r.key .. ":" .. g.value, function()
          return must(sp.groups:remove_member(g.value, u.id))
        end)
        changed = true
      end
      if r.delete then
        wf:step("delete:" .. r.key, function()
          local _, how = must(sp.users:delete(u.id)) -- "deleted" or "absent"
          return { id = u.id, deleted = how }
        end)
        changed = true
      end
      if not changed then wf:outcome("skipped") end
    end)
  end,
}
