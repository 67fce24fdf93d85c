-- Compiled specs: from a table of attribute path = source to the ordered entries apply and plan use.
-- Contract:
--   COMPILED, PLAN    metatables of a compiled spec and of a plan (scimrun.mapping.plan)
--   cache             weak table: spec table (or compiled spec) -> its compiled spec
--   entries(attrs, ctx) -> { [lower-cased path] = entry }
--       entry: { path, steps, nsteps, node, required, origin, builtin, email, boolean }, or
--       { path, drop, origin } for false/null (drops an inherited entry; ctx.allow_false).
--       ctx: { src, guarded, json, check_names (User schema check), allow_false, builtin }
--   finish(by_path, meta) -> compiled spec { entries (sorted by path, each with .columns),
--       source, file, ignore }; raises when one path is both a value and a parent of another.
--       meta: { source, file, ignore }
--   compile(spec) -> compiled spec (cached per table; a compiled spec or a plan is returned as
--       it is / as its spec)
--   with_required(spec, attrs), select(spec, attrs) -> copies: more attributes required / only
--       those attributes. Each must have an entry, else a "config" error.
-- Mistakes raise "config" errors (common.spec_error), naming the file and key.
local common = require "scimrun.mapping.common"
local paths = require "scimrun.mapping.paths"
local transforms = require "scimrun.mapping.transforms"

local NULL, spec_error = common.NULL, common.spec_error
local compile_node, column_nodes = transforms.compile, transforms.column_nodes
local parse_path, check_user_attribute = paths.parse, paths.check_user_attribute
local lower = string.lower

local M = {}

local BOOLEAN_ATTRS = { active = true, primary = true }

-- Compiles one attribute table into entries, keyed by lower-cased path. ctx: { src, guarded,
-- json, check_names, allow_false }. A false (or JSON null) value drops an inherited entry.
local function compile_entries(attrs, ctx)
  local out = {}
  for path, source in pairs(attrs) do
    if type(path) ~= "string" then
      spec_error(ctx.src, nil, ("attribute paths must be strings, got %s"):format(type(path)))
    end
    local key = ("attribute '%s'"):format(path)
    if source == false or source == NULL then
      if not ctx.allow_false then
        spec_error(ctx.src, key, ("maps to %s, which drops an attribute of the mapping it extends, and this one "
          .. "extends none; for a constant write { const = false }"):format(source == false and "false" or "null"))
      end
      out[lower(path)] = { path = path, drop = source == false and "false" or "null", origin = ctx.src }
    else
      local steps, why = parse_path(path)
      if not steps then spec_error(ctx.src, nil, ("cannot read attribute path '%s': %s"):format(path, why)) end
      if ctx.check_names then check_user_attribute(ctx.src, path, steps) end
      local node = compile_node(source, ctx, key, true)
      local last = steps[#steps].name
      out[lower(path)] = {
        path = path, steps = steps, nsteps = #steps, node = node,
        required = node.required or false, origin = ctx.src, builtin = ctx.builtin,
        email = lower(steps[1].name) == "emails" and #steps == 2 and last == "value",
        boolean = BOOLEAN_ATTRS[last] or false,
      }
    end
  end
  return out
end

local compiled_cache = setmetatable({}, { __mode = "k" })
local COMPILED, PLAN = {}, {}

-- Orders entries, checks that no path is both a value and a parent, and builds the compiled spec.
local function finish(by_path, meta)
  local entries = {}
  for _, e in pairs(by_path) do
    if not e.drop then entries[#entries + 1] = e end
  end
  table.sort(entries, function(a, b) return a.path < b.path end)
  local shapes = {}
  for _, e in ipairs(entries) do
    local shape = ""
    local function claim(kind)
      local prev = shapes[shape]
      if prev and (prev.kind ~= kind or kind == "leaf") then
        spec_error(e.origin, nil, ("attribute '%s' conflicts with '%s'"):format(e.path, prev.path))
      end
      shapes[shape] = prev or { kind = kind, path = e.path }
    end
    for i, st in ipairs(e.steps) do
      shape = shape .. "/" .. st.name
      claim(i == e.nsteps and "leaf" or "parent")
      if st.attr then
        shape = shape .. "[" .. st.attr .. "=" .. st.value .. "]"
        claim("parent")
      end
    end
    e.columns = column_nodes(e.node)
  end
  local compiled = setmetatable({ entries = entries, source = meta.source or "the workflow's mapping",
    file = meta.file, ignore = meta.ignore or {} }, COMPILED)
  compiled_cache[compiled] = compiled
  return compiled
end

-- Validates a spec written in code and returns its compiled form (cached per spec table).
-- A compiled spec or a plan is returned as it is.
function M.compile(spec)
  if type(spec) ~= "table" then error("mapping: spec must be a table of attribute = source", 2) end
  local mt = getmetatable(spec)
  if mt == COMPILED then return spec end
  if mt == PLAN then return spec.spec end
  local cached = compiled_cache[spec]
  if cached then return cached end
  local compiled = finish(compile_entries(spec, {}), {})
  compiled_cache[spec] = compiled
  return compiled
end

-- The compiled spec and its entries for attrs (lower-cased path -> entry); a missing one raises.
local function wanted(spec, attrs)
  local compiled = M.compile(spec)
  local by = {}
  for _, e in ipairs(compiled.entries) do by[lower(e.path)] = e end
  local want = {}
  for _, a in ipairs(attrs or {}) do
    local e = by[lower(a)]
    if not e then
      spec_error(compiled.file, nil, ("it gives no value for %s, which this workflow requires"):format(a),
        ("add an entry for %s%s"):format(a, compiled.file and ' (or start from the default: extends = "default")'
          or ""))
    end
    want[lower(a)] = e
  end
  return compiled, want
end

-- A compiled spec like `compiled` with other entries (cached as compiled).
local function derived(compiled, entries)
  local out = setmetatable({ entries = entries, source = compiled.source, file = compiled.file,
    ignore = compiled.ignore }, COMPILED)
  compiled_cache[out] = out
  return out
end

-- Marks attributes as required (a copy; the spec is not changed). Each must have an entry.
function M.with_required(spec, attrs)
  local compiled, want = wanted(spec, attrs)
  local entries = {}
  for i, e in ipairs(compiled.entries) do
    if want[lower(e.path)] and not e.required then
      local c = {}
      for k, v in pairs(e) do c[k] = v end
      c.required = true
      entries[i] = c
    else
      entries[i] = e
    end
  end
  return derived(compiled, entries)
end

-- The spec restricted to some attributes (a copy), for a workflow that reads only those (an
-- offboarding list needs the userName, not the rest of an HR export). Each must have an entry.
function M.select(spec, attrs)
  local compiled, want = wanted(spec, attrs)
  local entries = {}
  for _, e in pairs(want) do entries[#entries + 1] = e end
  table.sort(entries, function(a, b) return a.path < b.path end)
  return derived(compiled, entries)
end

M.COMPILED, M.PLAN, M.cache = COMPILED, PLAN, compiled_cache
M.entries = compile_entries
M.finish = finish

return M
