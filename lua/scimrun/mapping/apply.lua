-- Applying a mapping to one input row: the SCIM attributes of the row, or why it is refused.
-- Contract:
--   apply(spec, row) -> attrs | nil, reason
--       spec: a spec table, a compiled spec (mapping.load) or a plan (mapping.plan; its columns
--       are then bound by header). row: column name -> value. attrs nests each entry's value
--       along its path (filter segments create or reuse the matching multi-valued entry). An
--       empty value (nil, "", JSON null) sets nothing; a required one refuses the row naming its
--       column; active/primary take true/false/yes/no/1/0; an emails[...].value must be a valid
--       address; a multi-valued entry built from a filter path gets primary = true when it is
--       the only one of its attribute and sets none itself. reason names the column at fault.
local common = require "scimrun.mapping.common"
local email = require "scimrun.mapping.email"
local transforms = require "scimrun.mapping.transforms"
local compile = require "scimrun.mapping.compile"

local is_empty = common.is_empty
local valid_email = email.valid_email
local resolve, eval = transforms.resolve, transforms.eval
local PLAN, compiled_cache = compile.PLAN, compile.cache
local lower = string.lower

local M = {}

local TRUTHY = { ["true"] = true, yes = true, ["1"] = true, y = true }
local FALSY = { ["false"] = false, no = false, ["0"] = false, n = false }

local function describe(e, col)
  return col and ("column '%s' (mapped to %s)"):format(col, e.path) or ("attribute '%s'"):format(e.path)
end

-- Why a required attribute has no value in this row, naming its column.
local function required_reason(e, st)
  local first = e.columns[1]
  if not first then return ("attribute '%s' is required and has no value"):format(e.path) end
  local col = resolve(first.node, st)
  if col then return ("required column '%s' is empty"):format(col) end
  return ("required column '%s' is missing"):format(first.node.names[1])
end

-- Builds the SCIM attributes for one row: attrs, or nil and a message naming the column.
-- spec: a spec table, a compiled spec (mapping.load) or a plan (mapping.plan).
function M.apply(spec, row)
  local compiled, bind
  if getmetatable(spec) == PLAN then
    compiled, bind = spec.spec, spec.bind
  else
    compiled = compiled_cache[spec] or compile.compile(spec)
  end
  if type(row) ~= "table" then error("mapping.apply: row must be a table", 2) end
  local st = { row = row, bind = bind }
  local attrs, lists = {}, nil
  for _, e in ipairs(compiled.entries) do
    local v, err, col = eval(e.node, st, e)
    if err then return nil, err end
    if is_empty(v) then
      if e.required then return nil, required_reason(e, st) end
    else
      if e.boolean and (type(v) == "string" or type(v) == "number") then
        local s = lower(tostring(v))
        local b = TRUTHY[s]
        if b == nil then b = FALSY[s] end
        if b == nil then
          return nil, ("%s: %q is not a boolean (use true/false, yes/no or 1/0)"):format(describe(e, col), tostring(v))
        end
        v = b
      end
      if e.email then
        local ok, why = valid_email(v)
        if not ok then
          return nil, ("%s: %q is not a valid email address (%s)"):format(describe(e, col), tostring(v), why)
        end
      end
      local t = attrs
      for i = 1, e.nsteps - 1 do
        local stp = e.steps[i]
        local child = t[stp.name]
        if stp.attr then
          if child == nil then
            child = {}
            t[stp.name] = child
            lists = lists or {}
            lists[#lists + 1] = child
          end
          local entry
          for _, item in ipairs(child) do
            if item[stp.attr] == stp.value then
              entry = item
              break
            end
          end
          if not entry then
            entry = { [stp.attr] = stp.value }
            child[#child + 1] = entry
          end
          child = entry
        elseif child == nil then
          child = {}
          t[stp.name] = child
        end
        t = child
      end
      t[e.steps[e.nsteps].name] = v
    end
  end
  if lists then
    for _, list in ipairs(lists) do
      if #list == 1 and list[1].primary == nil then list[1].primary = true end
    end
  end
  return attrs
end

return M
