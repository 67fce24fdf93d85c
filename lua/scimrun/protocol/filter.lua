-- SCIM filters (RFC 7644 section 3.4.2.2): parsed to an AST and evaluated against a resource (the
-- sandbox answers ?filter= with them), and built as text whose values can never change the
-- filter's meaning (the client's lookups).
-- Contract:
--   parse(text) -> ast | nil, message      the message names the offset ("expected a value at
--       offset 11"); the sandbox answers it as a 400 invalidFilter.
--       ast: { type = "and" | "or", [1], [2] } | { type = "not", [1] } | { type = "pr", path }
--          | { type = "cmp", path, op = "eq" ... "le", value } | { type = "vp", path, filter }
--       path: scimrun.protocol.path.parse_attr's; value: string, number, boolean or JSON null
--   matches(ast, resource[, parent]) -> boolean
--       Attribute names ignore case; so do string comparisons, except for caseExact attributes
--       (CASE_EXACT, by full name). parent names the multi-valued attribute whose element is
--       tested (`members` for a `members[value eq "x"]` path), so `value` is `members.value`.
--   looks_like_filter(text) -> boolean     `attr op literal` or `attr pr` at the start: a filter,
--       not a bare value ("Bob le Grand" is a value)
--   quote(s) -> JSON string literal; value(v) -> compValue text (string, number, boolean,
--       nil = null; anything else raises)
--   eq(attr, v) -> `attr eq v`; value_path(attr, v) -> `attr[value eq v]`: the attribute name is
--       checked (path.valid_attr), never escaped: an invalid one raises
local json = require "scimrun.sandbox.json"
local path = require "scimrun.protocol.path"

local M = {}

local lower, get, full_name = string.lower, path.get, path.full_name

-- RFC 7643: caseExact attributes of the User and Group schemas (all others compare ignoring case).
M.CASE_EXACT = { id = true, externalid = true, ["members.value"] = true, ["groups.value"] = true,
  ["meta.version"] = true, ["members.$ref"] = true, ["groups.$ref"] = true }

local OPS = { eq = true, ne = true, co = true, sw = true, ew = true, gt = true, ge = true, lt = true, le = true }

-- tokenizer ---------------------------------------------------------------------------------

-- Tokens of s (at most `limit`): { t = "(" | ")" | "[" | "]" | "str" | "word", v, pos }.
local function tokenize(s, limit)
  local toks, i, n = {}, 1, #s
  while i <= n and #toks < (limit or n) do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c == "(" or c == ")" or c == "[" or c == "]" then
      toks[#toks + 1] = { t = c, pos = i }
      i = i + 1
    elseif c == '"' then
      local j = i + 1
      while true do
        local d = s:sub(j, j)
        if d == "" then return nil, ("unterminated string starting at offset %d"):format(i - 1) end
        if d == "\\" then j = j + 2 elseif d == '"' then break else j = j + 1 end
      end
      local v, err = json.decode(s:sub(i, j))
      if v == nil then return nil, ("bad string at offset %d: %s"):format(i - 1, err) end
      toks[#toks + 1] = { t = "str", v = v, pos = i }
      i = j + 1
    else
      local a, b = s:find("^[%w_:%.%$%-%+]+", i)
      if not a then return nil, ("unexpected character '%s' at offset %d"):format(c, i - 1) end
      toks[#toks + 1] = { t = "word", v = s:sub(a, b), pos = i }
      i = b + 1
    end
  end
  return toks
end

-- A word that is a literal: true, false, null or a number (nil otherwise).
local function word_literal(w)
  local lw = lower(w)
  if lw == "true" then return true elseif lw == "false" then return false elseif lw == "null" then return json.null end
  return tonumber(w)
end

-- parser ------------------------------------------------------------------------------------

local Parser = {}
Parser.__index = Parser

function Parser:peek() return self.toks[self.i] end
function Parser:next()
  local t = self.toks[self.i]
  self.i = self.i + 1
  return t
end
function Parser:fail(msg, tok)
  tok = tok or self:peek()
  local where = tok and ("at offset %d"):format(tok.pos - 1) or "at the end"
  error({ filter_error = msg .. " " .. where }, 0)
end
function Parser:word_is(w)
  local t = self:peek()
  return t and t.t == "word" and lower(t.v) == w
end

function Parser:literal()
  local t = self:next()
  if not t then self:fail("expected a value") end
  if t.t == "str" then return t.v end
  if t.t == "word" then
    local v = word_literal(t.v)
    if v ~= nil then return v end
  end
  self:fail("expected a quoted string, number, true, false or null", t)
end

function Parser:attr_expr()
  local t = self:next()
  if not t or t.t ~= "word" then self:fail("expected an attribute name", t) end
  local p = path.parse_attr(t.v)
  if not p then self:fail(("'%s' is not an attribute path"):format(t.v), t) end
  local nx = self:peek()
  if nx and nx.t == "[" then
    if p.sub then self:fail("a value filter cannot follow a sub-attribute", nx) end
    self:next()
    local inner = self:expr()
    local close = self:next()
    if not close or close.t ~= "]" then self:fail("expected ']'", close) end
    return { type = "vp", path = p, filter = inner }
  end
  local op = self:next()
  if not op or op.t ~= "word" then self:fail("expected an operator after " .. t.v, op) end
  local o = lower(op.v)
  if o == "pr" then return { type = "pr", path = p } end
  if not OPS[o] then self:fail(("unknown operator '%s'"):format(op.v), op) end
  local value = self:literal()
  local vt = type(value)
  if (o == "co" or o == "sw" or o == "ew") and vt ~= "string" then
    self:fail(("'%s' needs a quoted string"):format(o), op)
  end
  if (o == "gt" or o == "ge" or o == "lt" or o == "le") and vt ~= "string" and vt ~= "number" then
    self:fail(("'%s' cannot compare booleans or null"):format(o), op)
  end
  return { type = "cmp", path = p, op = o, value = value }
end

function Parser:unary()
  local t = self:peek()
  if not t then self:fail("expected an expression") end
  if self:word_is("not") then
    self:next()
    return { type = "not", self:unary() }
  end
  if t.t == "(" then
    self:next()
    local e = self:expr()
    local close = self:next()
    if not close or close.t ~= ")" then self:fail("expected ')'", close) end
    return e
  end
  return self:attr_expr()
end

function Parser:and_expr()
  local left = self:unary()
  while self:word_is("and") do
    self:next()
    left = { type = "and", left, self:unary() }
  end
  return left
end

function Parser:expr()
  local left = self:and_expr()
  while self:word_is("or") do
    self:next()
    left = { type = "or", left, self:and_expr() }
  end
  return left
end

function M.parse(s)
  if type(s) ~= "string" or s:match("^%s*$") then return nil, "empty filter" end
  local toks, err = tokenize(s)
  if not toks then return nil, err end
  local p = setmetatable({ toks = toks, i = 1 }, Parser)
  local ok, ast = pcall(p.expr, p)
  if not ok then
    if type(ast) == "table" and ast.filter_error then return nil, ast.filter_error end
    error(ast, 0)
  end
  local extra = p:peek()
  if extra then
    return nil, ("unexpected '%s' at offset %d"):format(extra.v or extra.t, extra.pos - 1)
  end
  return ast
end

-- evaluation --------------------------------------------------------------------------------

-- All values the path designates; multi-valued attributes contribute each element
-- (complex elements through their "value" sub-attribute when no sub-attribute is named).
local function values_at(obj, p)
  local root = obj
  if p.urn then root = get(obj, p.urn) end
  local v = get(root, p.attr)
  local out = {}
  if v == nil or v == json.null then return out end
  local items = json.is_array(v) and v or { v }
  for _, item in ipairs(items) do
    local x = item
    if p.sub then
      x = get(item, p.sub)
    elseif type(item) == "table" and json.is_array(v) then
      x = get(item, "value")
    end
    if x ~= nil and x ~= json.null then out[#out + 1] = x end
  end
  return out
end

local function compare(op, have, want, exact)
  if want == json.null then
    if op == "eq" then return false elseif op == "ne" then return true end
    return false
  end
  if type(want) == "boolean" then
    if op == "eq" then return have == want end
    return have ~= want
  end
  if type(want) == "number" then
    local h = tonumber(have)
    if not h then return op == "ne" end
    if op == "eq" then return h == want elseif op == "ne" then return h ~= want
    elseif op == "gt" then return h > want elseif op == "ge" then return h >= want
    elseif op == "lt" then return h < want elseif op == "le" then return h <= want end
    return false
  end
  if type(have) ~= "string" then
    if type(have) == "number" or type(have) == "boolean" then have = tostring(have) else return op == "ne" end
  end
  if not exact then have, want = lower(have), lower(want) end
  if op == "eq" then return have == want
  elseif op == "ne" then return have ~= want
  elseif op == "co" then return have:find(want, 1, true) ~= nil
  elseif op == "sw" then return have:sub(1, #want) == want
  elseif op == "ew" then return want == "" or have:sub(-#want) == want
  elseif op == "gt" then return have > want
  elseif op == "ge" then return have >= want
  elseif op == "lt" then return have < want
  elseif op == "le" then return have <= want end
  return false
end

local function eval(node, obj, parent)
  local ty = node.type
  if ty == "and" then return eval(node[1], obj, parent) and eval(node[2], obj, parent) end
  if ty == "or" then return eval(node[1], obj, parent) or eval(node[2], obj, parent) end
  if ty == "not" then return not eval(node[1], obj, parent) end
  if ty == "pr" then
    for _, v in ipairs(values_at(obj, node.path)) do
      if v ~= "" and not (type(v) == "table" and next(v) == nil) then return true end
    end
    return false
  end
  if ty == "vp" then
    local root = node.path.urn and get(obj, node.path.urn) or obj
    local v = get(root, node.path.attr)
    if type(v) ~= "table" then return false end
    local name = full_name(node.path, parent)
    for _, item in ipairs(json.is_array(v) and v or { v }) do
      if type(item) == "table" and eval(node.filter, item, name) then return true end
    end
    return false
  end
  -- cmp
  local exact = M.CASE_EXACT[full_name(node.path, parent)]
  local vals = values_at(obj, node.path)
  if node.op == "ne" then
    for _, v in ipairs(vals) do
      if compare("eq", v, node.value, exact) then return false end
    end
    return node.value ~= json.null or #vals > 0
  end
  if node.value == json.null and node.op == "eq" then return #vals == 0 end
  for _, v in ipairs(vals) do
    if compare(node.op, v, node.value, exact) then return true end
  end
  return false
end

function M.matches(ast, obj, parent) return eval(ast, obj, parent) == true end

-- building ----------------------------------------------------------------------------------

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                  ["\r"] = "\\r", ["\t"] = "\\t" }

function M.quote(s)
  s = tostring(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

function M.value(v)
  local t = type(v)
  if t == "string" then return M.quote(v) end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("filter value must be a finite number", 3) end
    if v == math.floor(v) and math.abs(v) < 2^53 then return ("%d"):format(v) end
    return ("%.17g"):format(v)
  end
  if v == nil then return "null" end
  error("filter value must be a string, number or boolean (got " .. t .. ")", 3)
end

function M.eq(attr, value)
  if not path.valid_attr(attr) then
    error(("invalid SCIM attribute name %q in filter"):format(tostring(attr)), 2)
  end
  return attr .. " eq " .. M.value(value)
end

function M.value_path(attr, value)
  if not path.valid_attr(attr) then
    error(("invalid SCIM attribute name %q in path"):format(tostring(attr)), 2)
  end
  return attr .. "[value eq " .. M.value(value) .. "]"
end

function M.looks_like_filter(s)
  if type(s) ~= "string" then return false end
  local toks = tokenize(s, 4)
  if not toks then return false end
  local i = toks[1] and toks[1].t == "(" and 2 or 1
  local a, o, v = toks[i], toks[i + 1], toks[i + 2]
  if not (a and a.t == "word" and path.valid_attr(a.v) and o and o.t == "word") then return false end
  local op = lower(o.v)
  if op == "pr" then
    return v == nil or v.t == ")" or (v.t == "word" and (lower(v.v) == "and" or lower(v.v) == "or"))
  end
  return OPS[op] ~= nil and v ~= nil and (v.t == "str" or (v.t == "word" and word_literal(v.v) ~= nil))
end

return M
