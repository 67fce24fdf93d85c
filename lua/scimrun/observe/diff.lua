-- The change diff (`--diff FILE`): one JSON line per write the run makes, or with --dry-run
-- would make, so an operator can review a sync before applying it:
--
--   {"run":"r-...","item":"user:alice","op":"users.patch","resource":"users","id":"2819c223",
--    "name":"alice","result":"updated","changes":[{"attribute":"title","before":"Engineer",
--    "after":"Lead"}]}
--
-- item is the step that made the write; result is created, adopted, updated, deactivated,
-- deleted, absent, added, removed, replaced or failed (then status, class and error), or
-- planned in a dry run ("dry_run":true). changes (scimrun.scim.changes): per attribute, before
-- (null: the resource did not hold it; absent: not read) and after (absent: removed); group
-- membership as {"attribute":"members","added":[ids]} or "removed". Unchanged resources are
-- not written at all, so they have no line. No secrets: password values read "(secret)" and
-- every string went through the log redactor. The file is created with mode 0600 (it holds
-- people's attributes).
local cjson = require "cjson"

local M = {}

local Diff = {}
Diff.__index = Diff

local FIELDS = { "item", "op", "resource", "id", "name", "result", "dry_run", "status", "class" }
local CHANGE_FIELDS = { "attribute", "before", "after", "added", "removed" }

-- {"k":v,...} with the keys in the order given (cjson's order is the hash's): a line reads
-- item, operation, resource, result, then the changes.
local function ordered(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    if kv[2] ~= nil then parts[#parts + 1] = cjson.encode(kv[1]) .. ":" .. kv[2] end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function M.line(ev, run_id)
  local fields = { { "run", cjson.encode(run_id) } }
  for _, k in ipairs(FIELDS) do
    if ev[k] ~= nil then fields[#fields + 1] = { k, cjson.encode(ev[k]) } end
  end
  if ev.detail then fields[#fields + 1] = { "error", cjson.encode(ev.detail) } end
  if ev.changes and #ev.changes > 0 then
    local list = {}
    for i, c in ipairs(ev.changes) do
      local cf = {}
      for _, k in ipairs(CHANGE_FIELDS) do
        if c[k] ~= nil then cf[#cf + 1] = { k, cjson.encode(c[k]) } end
      end
      list[i] = ordered(cf)
    end
    fields[#fields + 1] = { "changes", "[" .. table.concat(list, ",") .. "]" }
  end
  return ordered(fields)
end

-- Opens FILE (o.path) and subscribes to the run's stream. Returns the diff (count, path,
-- close()), nil when no path was given, or nil, err when the file cannot be written.
function M.open(stream, o)
  if not o.path or o.path == "" then return nil end
  local f, err = io.open(o.path, "w")
  if not f then return nil, ("--diff %s cannot be written: %s"):format(o.path, tostring(err)) end
  -- owner only, whatever the umask (as the report): it names the people provisioned
  local ffi = require "ffi"
  pcall(ffi.cdef, "int chmod(const char *path, unsigned int mode);")
  ffi.C.chmod(o.path, 384) -- 0600
  local self = setmetatable({ f = f, path = o.path, count = 0 }, Diff)
  self.unsubscribe = stream:subscribe(function(ev)
    if not self.f then return end
    self.f:write(M.line(ev, o.run_id), "\n")
    self.count = self.count + 1
  end, { "write" })
  return self
end

function Diff:close()
  if self.unsubscribe then self.unsubscribe() end
  if self.f then
    self.f:close()
    self.f = nil
  end
end

return M
