-- Loading mapping files: Lua (run in the policy files' restricted environment, scimrun.sandboxed_load)
-- or JSON, the `extends` chain down to the default mapping (lua/scimrun/mappings/default.lua), merged.
-- Contract:
--   load(path, opts) -> compiled spec (scimrun.mapping.compile)
--       path: a .lua or .json file; nil, "" or "default": the default mapping (compiled once).
--       opts.require: attribute paths the caller needs (marked required; each must have an entry).
--       A file holds { extends, attributes, ignore } or just the attributes table. An own entry
--       set to false/null drops the inherited one. Every mistake (unreadable file, syntax error,
--       invalid JSON, unknown key, wrong type, a path that is no SCIM User attribute, an extends
--       cycle) raises a "config" error (exit 2) naming the file and the key.
--   A Lua mapping file gets no io, no require and no global writes: math, string, table,
--   os.time/date/getenv and a few base functions; its functions run guarded (sandboxed_load.guard).
local errors = require "scimrun.errors"
local common = require "scimrun.mapping.common"
local transforms = require "scimrun.mapping.transforms"
local compile = require "scimrun.mapping.compile"
local sandboxed_load = require "scimrun.sandboxed_load"

local NULL, spec_error, did_you_mean, guard = common.NULL, common.spec_error, common.did_you_mean, common.guard
local IS_NODE_KEY = transforms.IS_NODE_KEY
local compile_entries, finish = compile.entries, compile.finish
local find, sub = string.find, string.sub
local concat = table.concat

local M = {}

local TOP_KEYS = { "extends", "attributes", "ignore" }

local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then
    local reason = err and err:match(": ([^:]+)$") or tostring(err)
    spec_error(path, nil, ("cannot read the mapping file: %s"):format(reason),
      "check the path given as --param mapping (a .lua or .json file)")
  end
  local text = f:read("*a")
  f:close()
  return text
end

local function line_col(text, pos)
  local line, last = 1, 0
  local i = find(text, "\n", 1, true)
  while i and i < pos do
    line, last = line + 1, i
    i = find(text, "\n", i + 1, true)
  end
  return line, pos - last
end

local function is_json(path, text)
  if path:match("%.[Jj][Ss][Oo][Nn]$") then return true end
  if path:match("%.lua$") then return false end
  return text:match("^%s*[{%[]") ~= nil
end

-- "FILE:12: message" -> "line 12: message" (the file is named once, at the start of the error).
local function at_line(msg, path)
  msg = errors.cite_file(msg, path)
  if sub(msg, 1, #path + 1) == path .. ":" then
    local l, rest = msg:match("^:(%d+): (.*)$", #path + 1)
    if l then return ("line %s: %s"):format(l, rest) end
  end
  return msg
end

-- Reads one mapping file into a raw table: { attributes, extends, ignore } (plain form folded in).
local function read_mapping_file(path)
  local text = read_text(path)
  local raw, json
  if is_json(path, text) then
    json = true
    local cjson = require("cjson").new()
    local ok, res = pcall(cjson.decode, text)
    if not ok then
      local msg = tostring(res)
      local at = tonumber(msg:match("at character (%d+)"))
      if at then
        local l, c = line_col(text, at)
        msg = ("%s (line %d, column %d)"):format(msg:gsub(" at character %d+", ""), l, c)
      end
      spec_error(path, nil, "not valid JSON: " .. msg)
    end
    raw = res
  else
    local chunk, err = sandboxed_load.load(text, path, "mapping")
    if not chunk then spec_error(path, nil, "syntax error: " .. at_line(err, path)) end
    local ok, res = guard(chunk, "mapping file " .. path)
    if not ok then spec_error(path, nil, at_line(res, path)) end
    raw = res
  end
  if type(raw) ~= "table" then
    spec_error(path, nil, ("the file must %s a table, it %s %s"):format(json and "hold" or "return",
      json and "holds" or "returned", raw == NULL and "null" or type(raw)),
      json and 'write { "attributes": { ... } }' or "end the file with `return { attributes = { ... } }`")
  end
  local structured = raw.attributes ~= nil or raw.extends ~= nil or raw.ignore ~= nil
  local def = { json = json }
  if structured then
    for k in pairs(raw) do
      local ok = false
      for _, t in ipairs(TOP_KEYS) do if k == t then ok = true end end
      if not ok then
        spec_error(path, tostring(k), ("unknown key%s; a mapping file holds %s"):format(
          type(k) == "string" and did_you_mean(k, TOP_KEYS) or "", concat(TOP_KEYS, ", ")))
      end
    end
    if raw.attributes ~= nil and type(raw.attributes) ~= "table" then
      spec_error(path, "attributes", ("expected a table of attribute = source, got %s"):format(type(raw.attributes)))
    end
    def.attributes = raw.attributes or {}
    if raw.extends ~= nil and raw.extends ~= NULL and raw.extends ~= false then
      if type(raw.extends) ~= "string" or raw.extends == "" then
        spec_error(path, "extends", 'expected "default" or the path of another mapping file')
      end
      def.extends = raw.extends
    end
    def.ignore = {}
    if raw.ignore ~= nil and raw.ignore ~= NULL then
      if type(raw.ignore) ~= "table" then spec_error(path, "ignore", "expected a list of column names") end
      for i, c in ipairs(raw.ignore) do
        if type(c) ~= "string" then
          spec_error(path, ("ignore[%d]"):format(i), "expected a column name (a string)")
        end
        def.ignore[#def.ignore + 1] = c
      end
    end
  else
    for k, v in pairs(raw) do
      if type(k) == "string" and type(v) == "table" and next(v) ~= nil then
        local node_like = false
        for nk in pairs(v) do if IS_NODE_KEY[nk] then node_like = true end end
        local hint = did_you_mean(k, TOP_KEYS)
        if not node_like and hint ~= "" then
          spec_error(path, k, ("unknown key%s; a mapping file holds %s"):format(hint, concat(TOP_KEYS, ", ")))
        end
      end
    end
    def.attributes = raw
    def.ignore = {}
  end
  return def
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

local DEFAULT_NAME = "the default mapping"

local function default_path()
  local p = package.searchpath("scimrun.mappings.default", package.path)
  if not p then error("mapping: lua/scimrun/mappings/default.lua is not on package.path", 0) end
  return p
end

-- Loads a file and what it extends into merged entries: by_path, ignore list, source name.
local function load_chain(path, seen, builtin)
  if seen[path] then spec_error(path, "extends", "extends itself (a cycle through " .. path .. ")") end
  seen[path] = true
  local def = read_mapping_file(path)
  local ctx = { src = path, guarded = not def.json, json = def.json, check_names = true,
    allow_false = def.extends ~= nil, builtin = builtin }
  local own = compile_entries(def.attributes, ctx)
  local by_path, ignore = {}, {}
  if def.extends then
    local parent
    if def.extends == "default" then
      parent = default_path()
    else
      parent = def.extends
      if sub(parent, 1, 1) ~= "/" then parent = dirname(path) .. "/" .. parent end
    end
    local pby, pignore = load_chain(parent, seen, def.extends == "default")
    by_path, ignore = pby, pignore
  end
  for k, e in pairs(own) do
    if e.drop and not by_path[k] then
      spec_error(path, ("attribute '%s'"):format(e.path), ("is set to %s but the mapping it extends (%s) has no such "
        .. "attribute"):format(e.drop, def.extends))
    end
    by_path[k] = e
  end
  for _, c in ipairs(def.ignore) do ignore[#ignore + 1] = c end
  return by_path, ignore
end

local default_cache

-- Loads a mapping file (Lua or JSON), or the default mapping for nil, "" or "default".
-- opts.require: attribute paths the caller needs (marked required; each must have an entry).
-- Returns a compiled spec; raises a "config" error (exit 2) naming the file and key.
function M.load(path, opts)
  opts = opts or {}
  local compiled
  if path == nil or path == "" or path == "default" then
    if not default_cache then
      local by_path, ignore = load_chain(default_path(), {}, true)
      default_cache = finish(by_path, { source = DEFAULT_NAME, ignore = ignore })
    end
    compiled = default_cache
  else
    if type(path) ~= "string" then error("mapping.load: path must be a string or nil", 2) end
    local by_path, ignore = load_chain(path, {}, false)
    compiled = finish(by_path, { source = path, file = path, ignore = ignore })
  end
  if opts.require and #opts.require > 0 then compiled = compile.with_required(compiled, opts.require) end
  return compiled
end

return M
