-- Attribute mapping: turns an input row (CSV/JSONL) into SCIM attributes, as data.
--
--   local mapping = require "scimrun.mapping"
--   local spec = mapping.load(path_or_nil, { require = { "userName" } })  -- nil/"": the default mapping
--   local plan = mapping.plan(spec, columns)   -- { mapped, unmapped, missing_required, ... }
--   mapping.assert_header(plan)                -- raises exit-2 input error for a missing required column
--   mapping.log_plan(plan, wf.log)             -- info: column -> attribute; warn: unmapped columns
--   local attrs, reason = mapping.apply(plan or spec, row)   -- nil, "column 'email' ..." on a bad row
--   local result = mapping.check_rows(plan, csv.rows(path))  -- every bad row, duplicates included
--   mapping.prepare(spec, columns, { file, log, ignore })    -- plan + assert_header + log_plan
--   mapping.with_required(spec, attrs) / mapping.select(spec, attrs)  -- copies: more required / fewer attrs
--
-- A spec maps attribute paths to sources. In code it is a table; in a file (Lua, run in the same
-- restricted environment as policy files, or JSON) it is the same table, or
-- { extends = "default", attributes = {...}, ignore = { "column", ... } }.
--
--   userName = "email",                                  -- a string names a source column
--   ["name.givenName"] = { from = { "givenName", "first_name" } },  -- first name the header has
--   ['emails[type eq "work"].value'] = { from = "email", lower = true, required = true },
--   displayName = { concat = { "first_name", " ", "last_name" } },  -- columns and literal text
--   userType = { const = "Employee" },                   -- a constant (string, number, boolean)
--   ["urn:...:enterprise:2.0:User:department"] = { from = "dept", default = "none" },
--   active = { from = "status", map = { terminated = false, ["*"] = true } },
--   title = function(row) return row.job end,            -- a function(row) computes (Lua only)
--   nickName = { from = "nick", fn = function(value, row) return value:sub(1, 20) end },
--
-- Column names match ignoring case, spaces and punctuation (first_name = firstName = "First
-- Name"); in a list the first name the input has wins. Steps of a source, in order: read (from,
-- concat, const or a function), trim (on unless trim = false), default when empty, lower/upper,
-- map (exact then case-insensitive key, "*" for any other value), fn(value, row) (called when
-- there is a value, or always when the source reads nothing else), required.
-- A concat part is a column when it looks like a name (letters, digits, _ . -, starting with a
-- letter), otherwise literal text; { const = "text" } or { from = "A Column" } say it
-- explicitly. A concat whose columns are all empty is empty.
--
-- Rules of apply: an empty or absent value (nil, "", JSON null) sets nothing, so an empty email
-- creates no emails entry. A function may return nil, "reason" to fail the row. `active` and
-- `primary` accept true/false/yes/no/1/0 strings. A column mapped to an emails[...].value must
-- hold a valid address. A multi-valued entry built from a filter path gets primary=true when it
-- is the only entry of its attribute and none sets primary itself.
-- Spec mistakes (unparsable path, a path both a value and a parent, an unknown key) raise an
-- error table of class "config" (exit 2), naming the file and the key.
--
-- This file is the public facade; each concern lives in lua/scimrun/mapping/:
--   common.lua      shared helpers (column name form, empty values, spec errors, guard)
--   email.lua       valid_email
--   paths.lua       attribute paths: parsing, the SCIM User schema check
--   transforms.lua  a source and its transforms: compiling a source, evaluating it on a row
--   compile.lua     compiled specs: compile, with_required, select
--   load.lua        mapping files (restricted Lua or JSON), extends, the default mapping
--   apply.lua       one row -> SCIM attributes
--   plan.lua        matching a header: plan, assert_header, describe_plan, log_plan, prepare,
--                   columns, check_columns
--   check_rows.lua  preflight of every row
local common = require "scimrun.mapping.common"
local email = require "scimrun.mapping.email"
local paths = require "scimrun.mapping.paths"
local compile = require "scimrun.mapping.compile"
local loader = require "scimrun.mapping.load"
local apply = require "scimrun.mapping.apply"
local plan = require "scimrun.mapping.plan"
local check_rows = require "scimrun.mapping.check_rows"

return {
  ENTERPRISE = paths.ENTERPRISE,
  WORK_EMAIL = paths.WORK_EMAIL,
  normalize_column = common.norm,
  valid_email = email.valid_email,
  load = loader.load,
  compile = compile.compile,
  with_required = compile.with_required,
  select = compile.select,
  apply = apply.apply,
  columns = plan.columns,
  plan = plan.plan,
  assert_header = plan.assert_header,
  describe_plan = plan.describe_plan,
  log_plan = plan.log_plan,
  prepare = plan.prepare,
  check_columns = plan.check_columns,
  check_rows = check_rows.check_rows,
}
