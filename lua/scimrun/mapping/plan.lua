-- Matching a mapping against an input's header, before any row is read: which column feeds which
-- attribute, which columns feed nothing, which required columns are missing; and its log lines.
-- Contract:
--   columns(spec) -> { name, ... }    source columns the spec reads (sorted, unique)
--   plan(spec, columns, opts) -> plan (metatable compile.PLAN; mapping.apply accepts it and then
--       reads each attribute from the column bound here). Header columns match a source name
--       exactly, else ignoring case, white space and punctuation; in a list the first name the
--       header has wins. Its fields are listed where plan() is defined.
--   assert_header(plan) -> plan       raises an "input" error (exit 2) for a missing required column
--   describe_plan(plan) -> { info = text, warn = { text, ... } }
--   log_plan(plan, log) -> plan       writes describe_plan's lines (log: function(level, msg, fields))
--   prepare(spec, columns, opts)      plan + assert_header + log_plan (opts: file, ignore, log)
--   check_columns(spec, columns) -> true | nil, err   every column the spec reads is in the header
local errors = require "scimrun.errors"
local common = require "scimrun.mapping.common"
local compile = require "scimrun.mapping.compile"

local norm = common.norm
local PLAN = compile.PLAN
local concat = table.concat

local M = {}

-- Source columns the spec reads (sorted, unique; every name of a list).
function M.columns(spec)
  local seen, out = {}, {}
  for _, e in ipairs(compile.compile(spec).entries) do
    for _, c in ipairs(e.columns) do
      for _, name in ipairs(c.node.names) do
        if not seen[name] then
          seen[name] = true
          out[#out + 1] = name
        end
      end
    end
  end
  table.sort(out)
  return out
end

local function header_index(columns)
  local exact, normed = {}, {}
  for _, c in ipairs(columns) do
    exact[c] = true
    local n = norm(c)
    if n ~= "" and normed[n] == nil then normed[n] = c end
  end
  return exact, normed
end

-- The header column a node reads: for each of its names in order, that name, else a column
-- equal to it ignoring case, white space and punctuation. Also returns the other columns that
-- would have matched a later name (they are shadowed).
local function bind_node(node, exact, normed, columns)
  local found
  for i, name in ipairs(node.names) do
    if exact[name] then found = name
    elseif normed[node.norm[i]] then found = normed[node.norm[i]] end
    if found then break end
  end
  local shadowed = {}
  if found then
    for _, c in ipairs(columns) do
      if c ~= found then
        local n = norm(c)
        for _, nn in ipairs(node.norm) do
          if n == nn then
            shadowed[#shadowed + 1] = c
            break
          end
        end
      end
    end
  end
  return found, shadowed
end

local function how_computed(n)
  if n.call or n.fn then return "a function" end
  if n.const ~= nil then return ("constant %s"):format(tostring(n.const)) end
  if n.default ~= nil then return ("default %s"):format(tostring(n.default)) end
  if n.default_node then return how_computed(n.default_node) end
  return nil
end

-- Matches a spec against an input's header. Returns a plan (usable by mapping.apply) holding:
--   mapped           { { column, attributes = { "name.givenName", "displayName (fallback)" } } } header
--                    order; "(fallback)": read when the attribute's first source is empty
--   unmapped         { "column", ... } header columns nothing reads (ignored ones excepted)
--   why_unmapped     { column = "name.givenName comes from 'givenName'" } for shadowed columns
--   ignored          { "column", ... } columns the mapping (or opts.ignore) lists under ignore
--   computed         { { attribute, how = "constant x" | "default x" | "a function" } } set without a column
--   missing_required { { attribute, column, accepted = { names } } } required, no column in the header
--   missing          { { attribute, column, accepted } } a mapping file's optional attribute whose
--                    column the header lacks (the default mapping's are not listed: they are optional)
-- opts: file (the input, for messages), ignore (more columns to leave without a warning).
function M.plan(spec, columns, opts)
  opts = opts or {}
  local compiled = compile.compile(spec)
  if type(columns) ~= "table" then error("mapping.plan: columns must be a list of column names", 2) end
  local exact, normed = header_index(columns)
  local ignore_norm, ignored = {}, {}
  for _, list in ipairs({ compiled.ignore, opts.ignore or {} }) do
    for _, c in ipairs(list) do ignore_norm[norm(c)] = true end
  end
  local bind, used, why = {}, {}, {}
  local plan = setmetatable({ spec = compiled, bind = bind, file = opts.file, columns = columns,
    source = compiled.source, mapped = {}, unmapped = {}, why_unmapped = why, ignored = ignored,
    computed = {}, missing_required = {}, missing = {} }, PLAN)
  for _, e in ipairs(compiled.entries) do
    local any_direct, any = false, false
    local accepted = {}
    for _, c in ipairs(e.columns) do
      local col, shadowed = bind_node(c.node, exact, normed, columns)
      bind[c.node] = col or false
      for _, name in ipairs(c.node.names) do accepted[#accepted + 1] = name end
      if col then
        any = true
        if not c.fallback then any_direct = true end
        local u = used[col] or { direct = {}, fallback = {} }
        used[col] = u
        local list = c.fallback and u.fallback or u.direct
        if list[#list] ~= e.path then list[#list + 1] = e.path end
        for _, s in ipairs(shadowed) do
          -- a column shadowed for a direct read is explained by that one
          if not why[s] or (not c.fallback and why[s].fallback) then
            why[s] = { text = ("%s comes from '%s'"):format(e.path, col), fallback = c.fallback }
          end
        end
      end
    end
    local first = e.columns[1] and e.columns[1].node.names[1]
    if #e.columns > 0 and not any then
      if e.required then
        plan.missing_required[#plan.missing_required + 1] = { attribute = e.path, column = first, accepted = accepted }
      elseif not e.builtin and not how_computed(e.node) then
        plan.missing[#plan.missing + 1] = { attribute = e.path, column = first, accepted = accepted }
      end
    end
    if not any_direct then
      local how = how_computed(e.node)
      if #e.columns == 0 or (not any and how) then
        plan.computed[#plan.computed + 1] = { attribute = e.path, how = how or "a function" }
      end
    end
  end
  for s, w in pairs(why) do why[s] = w.text end
  for _, c in ipairs(columns) do
    if used[c] then
      local attrs = {}
      for _, a in ipairs(used[c].direct) do attrs[#attrs + 1] = a end
      for _, a in ipairs(used[c].fallback) do
        if attrs[#attrs] ~= a then attrs[#attrs + 1] = a .. " (fallback)" end
      end
      plan.mapped[#plan.mapped + 1] = { column = c, attributes = attrs }
    elseif ignore_norm[norm(c)] then
      ignored[#ignored + 1] = c
    else
      plan.unmapped[#plan.unmapped + 1] = c
    end
  end
  return plan
end

local function quote_list(names)
  local out = {}
  for i, n in ipairs(names) do out[i] = "'" .. n .. "'" end
  return concat(out, ", ")
end

-- Stops the run (error of class "input", exit 2) when the header lacks a required column:
-- one line naming the input file, the column and what to do.
function M.assert_header(plan)
  local miss = plan.missing_required
  if #miss == 0 then return plan end
  local names, details = {}, {}
  for i, m in ipairs(miss) do
    names[i] = m.column
    local others = {}
    for _, a in ipairs(m.accepted) do if a ~= m.column then others[#others + 1] = a end end
    details[i] = ("%s for %s%s"):format(m.column, m.attribute,
      #others > 0 and (" (also accepted: " .. concat(others, ", ") .. ")") or "")
  end
  local what = #miss == 1 and ("required column %s is"):format(quote_list(names))
    or ("required columns %s are"):format(quote_list(names))
  local src = plan.spec.file or plan.source
  error(errors.new { class = "input", file = plan.file,
    detail = ("%s: %s not in the header (columns: %s); %s reads %s"):format(plan.file or "input", what,
      concat(plan.columns, ", "), src, concat(details, "; ")),
    suggest = "fix the input file (add the column), or name the column holding it in a mapping file given with "
      .. "--param mapping=FILE; then run the workflow again" }, 0)
end

-- The lines log_plan writes: { info = text, warn = { text, ... } }.
function M.describe_plan(plan)
  local parts = {}
  for _, m in ipairs(plan.mapped) do
    parts[#parts + 1] = ("%s -> %s"):format(m.column, concat(m.attributes, ", "))
  end
  for _, c in ipairs(plan.computed) do parts[#parts + 1] = ("%s = %s"):format(c.attribute, c.how) end
  local out = { info = ("input columns -> SCIM attributes (%s): %s"):format(plan.source,
    #parts > 0 and concat(parts, "; ") or "nothing"), warn = {} }
  if #plan.unmapped > 0 then
    local names = {}
    for i, c in ipairs(plan.unmapped) do
      names[i] = plan.why_unmapped[c] and ("%s (%s)"):format(c, plan.why_unmapped[c]) or c
    end
    out.warn[#out.warn + 1] = ("%d input column(s) mapped to nothing, their values are not sent: %s; map them in "
      .. "a mapping file (--param mapping=FILE) or list them under its ignore"):format(#names, concat(names, ", "))
  end
  if #plan.missing > 0 then
    local names = {}
    for i, m in ipairs(plan.missing) do names[i] = ("%s <- %s"):format(m.attribute, concat(m.accepted, " | ")) end
    out.warn[#out.warn + 1] = ("the mapping reads column(s) the input does not have, so these attributes stay "
      .. "unset: %s"):format(concat(names, ", "))
  end
  return out
end

-- Logs the plan: info, which column feeds which attribute; warn, columns mapped to nothing.
-- log: function(level, msg, fields) (wf.log, or scimrun.log.emit by default).
function M.log_plan(plan, log)
  log = log or function(level, msg, fields) scimrun.log.emit(level, msg, fields) end
  local d = M.describe_plan(plan)
  local fields = plan.file and { file = plan.file } or nil
  log("info", d.info, fields)
  for _, w in ipairs(d.warn) do log("warn", w, fields) end
  return plan
end

-- plan + assert_header + log_plan. opts: file, ignore, log.
function M.prepare(spec, columns, opts)
  opts = opts or {}
  local plan = M.plan(spec, columns, opts)
  M.assert_header(plan)
  return M.log_plan(plan, opts.log)
end

-- Checks that every column the spec names is in `columns` (e.g. csv.open(path).columns), so a
-- typo in a workflow fails at start, not as silently missing attributes. true or nil, err.
function M.check_columns(spec, columns)
  local compiled = compile.compile(spec)
  local exact, normed = header_index(columns)
  for _, e in ipairs(compiled.entries) do
    for _, c in ipairs(e.columns) do
      if not bind_node(c.node, exact, normed, columns) then
        local names = c.node.names
        return nil, ("mapping for '%s' reads column '%s'%s, which the input does not have (columns: %s)")
          :format(e.path, names[1], #names > 1 and (" (or " .. concat(names, ", ", 2) .. ")") or "",
            concat(columns, ", "))
      end
    end
  end
  return true
end

return M
