-- Onboarding: every row of a CSV becomes a SCIM user, then a member of one group. Columns
-- become attributes through a mapping: the default one (SCIM names or users.csv's names as
-- headers), or --param mapping=FILE.
-- Each user is a saga: if adding the membership fails permanently, a user created by this
-- run is deactivated again, so no half-onboarded account is left behind.
--
--   scimrun examples/onboard.lua --sandbox                       (embedded provider)
--   SCIM_BASE_URL=https://... SCIM_TOKEN=... scimrun examples/onboard.lua --param csv=people.csv
--   scimrun examples/onboard.lua --sandbox --param csv=hr.csv --param mapping=examples/mappings/hr_export.lua
local scim = require "scimrun.scim"
local csv = require "scimrun.csv"
local mapping = require "scimrun.mapping"

return scimrun.workflow {
  name = "onboard",
  -- mapping: a mapping file (.lua or .json, docs/examples.md "Attribute mapping"); "" is the
  -- default mapping (SCIM attribute names or users.csv's snake_case names as headers)
  -- concurrency: rows under way at once. An item spends most of its time waiting for its steps'
  -- durable commits and for its membership batch, not on the wire: requests in flight stay
  -- bounded by the policy's bulkhead (32 a target by default), so 256 rows keep the connection
  -- busy (10,000 users on the sandbox: 4,400 users/s at 256, 3,600-4,000 at 64; bench/README.md)
  params = { csv = "data/users.csv", group = "Engineering", concurrency = 256, mapping = "" },
  run = function(wf, p)
    -- Before any write: the mapping is read (a bad file stops here), the input's header is
    -- matched against it (a required column it lacks stops here), and the log says which
    -- column feeds which attribute and which columns feed nothing.
    local sp = scim.connect { base_url = wf.env "SCIM_BASE_URL", token_env = "SCIM_TOKEN" }
    local spec = mapping.load(p.mapping, { require = { "userName", mapping.WORK_EMAIL } })
    local header = csv.open(p.csv)
    header.close()
    local plan = mapping.prepare(spec, header.columns, { file = p.csv, log = wf.log })
    local rows = csv.rows(p.csv)
    local group = wf:step("group:" .. p.group, function()
      local g, err = sp.groups:ensure { displayName = p.group }
      if not g then return nil, err end -- fails the step with the SCIM error
      return { id = g.id, displayName = g.displayName }
    end)
    -- The group's members, read once: a rerun sends no PATCH for someone already in it (some
    -- providers append a value that a repeated PATCH "add" repeats). A dry-run group has none.
    local members = {}
    if not tostring(group.id):find("^dry%-run:") then
      local g, gerr = sp.groups:get(group.id)
      if not g then error(gerr, 0) end
      for _, m in ipairs(type(g.members) == "table" and g.members or {}) do members[m.value] = true end
    end
    -- A target holding up to 5000 users is read once (one request per page): each row's
    -- "does this user exist?" is then answered from memory instead of by one request per row.
    local _, perr = sp.users:prefetch { max = 5000 }
    if perr then error(perr, 0) end
    -- preflight: the whole input is read through the mapping first, so bad values and
    -- duplicate userNames are listed before the first write (and `--check` stops there)
    wf:each(rows, { concurrency = tonumber(p.concurrency),
                    preflight = function(it) return mapping.check_rows(plan, it) end }, function(row)
      local attrs, bad = mapping.apply(plan, row)
      if not attrs then
        error({ class = "permanent", detail = bad, suggest = "fix the row in " .. p.csv .. ", then rerun" }, 0)
      end
      local user_name = tostring(attrs.userName)
      -- Steps are keyed by the userName (unique in the input: the preflight refuses duplicates,
      -- of externalIds too). A user renamed at the source gets new keys in the next run, whose
      -- steps are all new anyway; its ensure finds the account by externalId and renames it.
      local key = user_name:lower()
      wf:saga(function()
        -- ensure notes the item's outcome itself (created, updated, skipped or adopted); its
        -- third value says which, kept here so the compensation undoes only a creation
        local user = wf:step("user:" .. key, function()
          local u, err, how = sp.users:ensure(attrs)
          if not u then return nil, err end -- fails the step with the SCIM error
          return { id = u.id, created = how == "created" }
        end, {
          -- in doubt after a crash: did the create reach the provider? look before re-sending
          -- (by externalId, then userName); an account found under another userName (a rename
          -- in doubt) is left to ensure, which renames it without creating another
          recover = function()
            local u, err = sp.users:match(attrs, { fresh = true })
            if not u and err then error(err, 0) end -- cannot tell: the step stays in doubt
            if not u or tostring(u.userName):lower() ~= key then return nil end
            return { id = u.id, created = true }
          end,
          -- undo only what this run created; a pre-existing account is left alone
          compensate = function(u)
            if not u.created then return end
            local ok, err = sp.users:deactivate(u.id)
            if not ok then error(err, 0) end
          end,
        })
        -- Always a step, so one a crash left in doubt is settled: already a member (the group
        -- was read at the start) is skipped. No recover check: adding a member again is
        -- harmless, so a step in doubt simply runs again, and the step does not wait for its
        -- start to be durable before it joins the membership batch.
        local already = members[user.id] and { group_id = group.id, count = 0 } or nil
        wf:step("member:" .. p.group .. ":" .. key, function()
          if already then return already end
          return sp.groups:add_members(group.id, { user.id }) -- notes updated
        end)
      end)
    end)
  end,
}
