-- The source of one attribute and its transforms: compiling a source definition into a node,
-- and evaluating a node against a row.
-- Contract:
--   NODE_KEYS, IS_NODE_KEY   the keys a source table takes (from, concat, const, fn, default,
--                            lower, upper, trim, map, required)
--   compile(v, ctx, key, top) -> node
--       v: a column name, a function(row), or a source table. ctx: { src (file, for messages),
--       guarded (functions come from a mapping file), json }; key names v in messages; top is
--       true for an attribute's own source (only it may say required). A mistake raises a
--       "config" error (common.spec_error) naming ctx.src and key.
--   column_nodes(node) -> { { node, fallback } }   the column-reading nodes of a source;
--       fallback when read only through a default
--   resolve(node, st) -> column | nil      the input column a column node reads in this row
--   eval(node, st, e) -> value, err, column
--       st: { row, bind (a plan's node -> column, or nil: match in the row) }; e: the entry (for
--       messages). Steps, in order: read (from, concat, const or a function), trim, default when
--       empty, lower/upper, map (exact, then case-insensitive key, then "*"), fn(value, row).
--       err is a message naming the attribute when a function fails or returns nil, reason.
local common = require "scimrun.mapping.common"

local NULL, trim, norm, is_empty, is_scalar = common.NULL, common.trim, common.norm, common.is_empty, common.is_scalar
local spec_error, did_you_mean, guard = common.spec_error, common.did_you_mean, common.guard
local find, lower, upper = string.find, string.lower, string.upper
local concat = table.concat

local M = {}

local NODE_KEYS = { "from", "concat", "const", "fn", "default", "lower", "upper", "trim", "map", "required" }
local IS_NODE_KEY = {}
for _, k in ipairs(NODE_KEYS) do IS_NODE_KEY[k] = true end

local function column_node(names)
  local n = {}
  for i, name in ipairs(names) do n[i] = norm(name) end
  return { names = names, norm = n, trim = true }
end

-- A concat part written as a plain string is a column when it looks like a name.
local function looks_like_column(s) return find(s, "^[%a_][%w_%.%-]*$") ~= nil end

local compile_node

local function compile_table_node(v, ctx, key, top)
  for k in pairs(v) do
    if type(k) ~= "string" or not IS_NODE_KEY[k] then
      local hint = type(k) == "string" and did_you_mean(k, NODE_KEYS) or ""
      spec_error(ctx.src, key, ("unknown key '%s'%s; a source takes %s"):format(tostring(k), hint,
        concat(NODE_KEYS, ", ")))
    end
  end
  local node
  local bases = {}
  for _, b in ipairs({ "from", "concat", "const" }) do
    if v[b] ~= nil and v[b] ~= NULL then bases[#bases + 1] = b end
  end
  if #bases > 1 then
    spec_error(ctx.src, key, ("give one of from, concat and const, not %s"):format(concat(bases, " and ")))
  end
  if v.from ~= nil and v.from ~= NULL then
    local names = v.from
    if type(names) == "string" then names = { names } end
    if type(names) ~= "table" or #names == 0 then
      spec_error(ctx.src, key .. ".from", "expected a column name or a list of column names")
    end
    local copy = {}
    for i, name in ipairs(names) do
      if type(name) ~= "string" or name == "" then
        spec_error(ctx.src, ("%s.from[%d]"):format(key, i), "expected a column name (a non-empty string)")
      end
      copy[i] = name
    end
    node = column_node(copy)
  elseif v.concat ~= nil and v.concat ~= NULL then
    if type(v.concat) ~= "table" or #v.concat == 0 then
      spec_error(ctx.src, key .. ".concat", 'expected a list of parts, as in { "first_name", " ", "last_name" }')
    end
    local parts, columns = {}, 0
    for i, part in ipairs(v.concat) do
      local pkey = ("%s.concat[%d]"):format(key, i)
      if type(part) == "string" and not looks_like_column(part) then
        parts[i] = { lit = part }
      elseif type(part) == "number" then
        parts[i] = { lit = tostring(part) }
      else
        parts[i] = compile_node(part, ctx, pkey)
        columns = columns + 1
      end
    end
    if columns == 0 then
      spec_error(ctx.src, key .. ".concat", "no part reads a column; write { const = ... } for fixed text")
    end
    node = { parts = parts, trim = true }
  elseif v.const ~= nil and v.const ~= NULL then
    if not is_scalar(v.const) then
      spec_error(ctx.src, key .. ".const", ("expected a string, number or boolean, got %s"):format(type(v.const)))
    end
    node = { const = v.const }
  else
    node = { trim = true }
  end
  if v.fn ~= nil then
    if type(v.fn) ~= "function" then
      spec_error(ctx.src, key .. ".fn", ("expected a function(value, row), got %s"):format(type(v.fn)),
        ctx.json and "functions need a Lua mapping file; a JSON file cannot hold one" or nil)
    end
    node.fn = v.fn
    node.guarded = ctx.guarded
    node.fn_only = #bases == 0 or nil -- with nothing to read, fn(nil, row) computes the value
  end
  if #bases == 0 and v.fn == nil and (v.default == nil or v.default == NULL) then
    spec_error(ctx.src, key, "a source needs one of from, concat, const, fn or default")
  end
  if v.default ~= nil and v.default ~= NULL then
    if is_scalar(v.default) then
      node.default = v.default
    else
      node.default_node = compile_node(v.default, ctx, key .. ".default")
    end
  end
  for _, flag in ipairs({ "lower", "upper", "trim", "required" }) do
    if v[flag] ~= nil and type(v[flag]) ~= "boolean" then
      spec_error(ctx.src, key .. "." .. flag, ("expected true or false, got %s"):format(type(v[flag])))
    end
  end
  if v.lower and v.upper then spec_error(ctx.src, key, "lower and upper cannot both be set") end
  node.lower, node.upper = v.lower or nil, v.upper or nil
  if v.trim == false then node.trim = nil end
  if v.required ~= nil then
    if not top then
      spec_error(ctx.src, key .. ".required", "required applies to an attribute, not to a part of its source")
    end
    node.required = v.required
  end
  if v.map ~= nil and v.map ~= NULL then
    if type(v.map) ~= "table" then
      spec_error(ctx.src, key .. ".map", ("expected a table of value = replacement, got %s"):format(type(v.map)))
    end
    local map, map_ci = {}, {}
    for mk, mv in pairs(v.map) do
      if type(mk) ~= "string" then
        spec_error(ctx.src, key .. ".map", ("keys must be strings, got %s"):format(type(mk)))
      end
      if not is_scalar(mv) and mv ~= NULL then
        spec_error(ctx.src, ("%s.map[%q]"):format(key, mk), ("expected a string, number, boolean or null, got %s")
          :format(type(mv)))
      end
      if mk == "*" then node.map_other = mv else
        map[mk] = mv
        if map_ci[lower(mk)] == nil then map_ci[lower(mk)] = mv end
      end
    end
    node.map, node.map_ci = map, map_ci
  end
  return node
end

compile_node = function(v, ctx, key, top)
  local tv = type(v)
  if tv == "string" then
    if v == "" then spec_error(ctx.src, key, "an empty column name") end
    return column_node({ v })
  elseif tv == "function" then
    return { call = v, guarded = ctx.guarded }
  elseif tv == "table" then
    return compile_table_node(v, ctx, key, top)
  end
  spec_error(ctx.src, key, ("maps to a %s; use a column name (string), a function(row), or a table such as "
    .. "{ from = \"column\" } or { const = %s }"):format(tv, tv == "boolean" and tostring(v) or "\"text\""))
end

-- Column nodes of a source: { { node, fallback } }, fallback when read only through a default.
local function column_nodes(node, out, fallback)
  out = out or {}
  if node.names then out[#out + 1] = { node = node, fallback = fallback or false } end
  if node.parts then
    for _, p in ipairs(node.parts) do
      if not p.lit then column_nodes(p, out, fallback) end
    end
  end
  if node.default_node then column_nodes(node.default_node, out, true) end
  return out
end


-- The input column a column node reads in this row: bound by a plan, else found in the row.
local function resolve(node, st)
  local bind = st.bind
  if bind then return bind[node] or nil end
  local row = st.row
  local idx = st.nidx
  for i, name in ipairs(node.names) do
    if row[name] ~= nil then return name end
    if not idx then
      idx = {}
      for k in pairs(row) do
        if type(k) == "string" then
          local n = norm(k)
          if n ~= "" and (idx[n] == nil or k < idx[n]) then idx[n] = k end
        end
      end
      st.nidx = idx
    end
    local hit = idx[node.norm[i]]
    if hit then return hit end
  end
  return nil
end

local function call(fn, guarded, what, ...)
  if guarded then return guard(fn, what, ...) end
  return pcall(fn, ...)
end

-- value, err, column (the column the value came from, when one did)
local function eval(node, st, e)
  local v, col
  if node.names then
    col = resolve(node, st)
    if col then
      v = st.row[col]
      if node.trim and type(v) == "string" then v = trim(v) end
    end
  elseif node.parts then
    local out, any = {}, false
    for _, part in ipairs(node.parts) do
      if part.lit then
        out[#out + 1] = part.lit
      else
        local pv, err = eval(part, st, e)
        if err then return nil, err end
        if not is_empty(pv) then
          any = true
          out[#out + 1] = tostring(pv)
        end
      end
    end
    if any then
      v = concat(out)
      if node.trim then v = trim(v) end
    end
  elseif node.const ~= nil then
    v = node.const
  elseif node.call then
    local ok, res, err = call(node.call, node.guarded, "the mapping function of " .. e.path, st.row)
    if not ok then return nil, ("attribute '%s': the mapping function failed: %s"):format(e.path, tostring(res)) end
    if res == nil and err ~= nil then return nil, ("attribute '%s': %s"):format(e.path, tostring(err)) end
    v = res
  end
  if is_empty(v) then
    if node.default_node then
      local err, dcol
      v, err, dcol = eval(node.default_node, st, e)
      if err then return nil, err end
      col = dcol or col
    elseif node.default ~= nil then
      v = node.default
    end
  end
  if type(v) == "string" then
    if node.lower then v = lower(v) elseif node.upper then v = upper(v) end
  end
  if node.map and not is_empty(v) then
    local k = tostring(v)
    local m = node.map[k]
    if m == nil then m = node.map_ci[lower(k)] end
    if m == nil then m = node.map_other end
    if m ~= nil then v = m end
  end
  if node.fn and (not is_empty(v) or node.fn_only) then
    local ok, res, err = call(node.fn, node.guarded, "the fn of " .. e.path, v, st.row)
    if not ok then return nil, ("attribute '%s': the mapping function failed: %s"):format(e.path, tostring(res)) end
    if res == nil and err ~= nil then return nil, ("attribute '%s': %s"):format(e.path, tostring(err)) end
    v = res
  end
  return v, nil, col
end

M.NODE_KEYS, M.IS_NODE_KEY = NODE_KEYS, IS_NODE_KEY
M.compile = compile_node
M.column_nodes = column_nodes
M.resolve = resolve
M.eval = eval

return M
