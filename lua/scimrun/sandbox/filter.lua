-- SCIM filter expressions (RFC 7644 section 3.4.2.2) and attribute paths.
--   filter.parse(str) -> ast | nil, message
--   filter.matches(ast, resource) -> boolean
--   filter.parse_path(str) -> { urn, attr, sub, filter } | nil, message   (PATCH paths)
--   filter.get(obj, name) -> value: attribute lookup, case-insensitive on the name
-- Attribute names are case-insensitive; string comparisons are too, except for the
-- caseExact attributes of RFC 7643 (id, externalId, member and group references).
local json = require "scimrun.sandbox.json"

local M = {}

local CORE = {
  ["urn:ietf:params:scim:schemas:core:2.0:user"] = true,
  ["urn:ietf:params:scim:schemas:core:2.0:group"] = true,
}
local KNOWN_URNS = {
  "urn:ietf:params:scim:schemas:core:2.0:user",
  "urn:ietf:params:scim:schemas:core:2.0:group",
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user",
}
M.CASE_EXACT = { id = true, externalid = true, ["members.value"] = true, ["groups.value"] = true,
  ["meta.version"] = true, ["members.$ref"] = true, ["groups.$ref"] = true }

local OPS = { eq = true, ne = true, co = true, sw = true, ew = true, gt = true, ge = true, lt = true, le = true }

function M.get(obj, name)
  if type(obj) ~= "table" or json.is_array(obj) then return nil end
  local v = obj[name]
  if v ~= nil then return v, name end
  local lname = name:lower()
  for k, x in pairs(obj) do
    if type(k) == "string" and k:lower() == lname then return x, k end
  end
end

-- tokenizer ---------------------------------------------------------------------------------

local function tokenize(s)
  local toks, i, n = {}, 1, #s
  while i <= n do
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

-- Splits "urn:...:User:name.familyName" / "emails.value" / "userName" into urn, attr, sub.
local function split_attr(word)
  local lw, urn, rest = word:lower(), nil, word
  if lw:sub(1, 4) == "urn:" then
    for _, u in ipairs(KNOWN_URNS) do
      if lw == u then return { attr = word } end
      if lw:sub(1, #u + 1) == u .. ":" then urn, rest = word:sub(1, #u), word:sub(#u + 2) break end
    end
    if not urn then
      urn, rest = word:match("^(.*):([^:]+)$")
      if not urn then return nil end
    end
    if CORE[urn:lower()] then urn = nil end
  end
  local attr, sub = rest:match("^([%a%$][%w_%-%$]*)%.([%a%$][%w_%-%$]*)$")
  if not attr then
    attr = rest:match("^[%a%$][%w_%-%$]*$")
    if not attr then return nil end
  end
  return { urn = urn, attr = attr, sub = sub }
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
  return t and t.t == "word" and t.v:lower() == w
end

function Parser:literal()
  local t = self:next()
  if not t then self:fail("expected a value") end
  if t.t == "str" then return t.v end
  if t.t == "word" then
    local w = t.v:lower()
    if w == "true" then return true elseif w == "false" then return false elseif w == "null" then return json.null end
    local num = tonumber(t.v)
    if num then return num end
  end
  self:fail("expected a quoted string, number, true, false or null", t)
end

function Parser:attr_expr()
  local t = self:next()
  if not t or t.t ~= "word" then self:fail("expected an attribute name", t) end
  local path = split_attr(t.v)
  if not path then self:fail(("'%s' is not an attribute path"):format(t.v), t) end
  local nx = self:peek()
  if nx and nx.t == "[" then
    if path.sub then self:fail("a value filter cannot follow a sub-attribute", nx) end
    self:next()
    local inner = self:expr()
    local close = self:next()
    if not close or close.t ~= "]" then self:fail("expected ']'", close) end
    return { type = "vp", path = path, filter = inner }
  end
  local op = self:next()
  if not op or op.t ~= "word" then self:fail("expected an operator after " .. t.v, op) end
  local o = op.v:lower()
  if o == "pr" then return { type = "pr", path = path } end
  if not OPS[o] then self:fail(("unknown operator '%s'"):format(op.v), op) end
  local value = self:literal()
  local vt = type(value)
  if (o == "co" or o == "sw" or o == "ew") and vt ~= "string" then
    self:fail(("'%s' needs a quoted string"):format(o), op)
  end
  if (o == "gt" or o == "ge" or o == "lt" or o == "le") and vt ~= "string" and vt ~= "number" then
    self:fail(("'%s' cannot compare booleans or null"):format(o), op)
  end
  return { type = "cmp", path = path, op = o, value = value }
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

local function run_parser(s, rule)
  if type(s) ~= "string" or s:match("^%s*$") then return nil, "empty filter" end
  local toks, err = tokenize(s)
  if not toks then return nil, err end
  local p = setmetatable({ toks = toks, i = 1 }, Parser)
  local ok, res = pcall(rule, p)
  if not ok then
    if type(res) == "table" and res.filter_error then return nil, res.filter_error end
    error(res, 0)
  end
  return res, p
end

function M.parse(s)
  local ast, p = run_parser(s, Parser.expr)
  if not ast then return nil, p end
  local extra = p:peek()
  if extra then
    return nil, ("unexpected '%s' at offset %d"):format(extra.v or extra.t, extra.pos - 1)
  end
  return ast
end

-- PATCH path: attrPath, attrPath[valFilter] or attrPath[valFilter].subAttr
function M.parse_path(s)
  if type(s) ~= "string" or s == "" then return nil, "empty path" end
  local head, inner, tail = s:match("^([^%[]+)%[(.*)%](.*)$")
  if not head then
    local path = split_attr(s:match("^%s*(.-)%s*$"))
    if not path then return nil, ("'%s' is not an attribute path"):format(s) end
    return path
  end
  local path = split_attr(head)
  if not path or path.sub then return nil, ("'%s' is not an attribute path"):format(s) end
  local f, err = M.parse(inner)
  if not f then return nil, ("bad filter in path '%s': %s"):format(s, err) end
  path.filter = f
  if tail ~= "" then
    path.sub = tail:match("^%.([%a%$][%w_%-%$]*)$")
    if not path.sub then return nil, ("bad sub-attribute after ']' in '%s'"):format(s) end
  end
  return path
end

-- evaluation --------------------------------------------------------------------------------

-- All values the path designates; multi-valued attributes contribute each element
-- (complex elements through their "value" sub-attribute when no sub-attribute is named).
local function values_at(obj, path)
  local root = obj
  if path.urn then root = M.get(obj, path.urn) end
  local v = M.get(root, path.attr)
  local out = {}
  if v == nil or v == json.null then return out end
  local items = json.is_array(v) and v or { v }
  for _, item in ipairs(items) do
    local x = item
    if path.sub then
      x = M.get(item, path.sub)
    elseif type(item) == "table" and json.is_array(v) then
      x = M.get(item, "value")
    end
    if x ~= nil and x ~= json.null then out[#out + 1] = x end
  end
  return out
end

local function full_name(path)
  return path.attr:lower() .. (path.sub and ("." .. path.sub:lower()) or "")
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
  if not exact then have, want = have:lower(), want:lower() end
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

local function eval(node, obj)
  local ty = node.type
  if ty == "and" then return eval(node[1], obj) and eval(node[2], obj) end
  if ty == "or" then return eval(node[1], obj) or eval(node[2], obj) end
  if ty == "not" then return not eval(node[1], obj) end
  if ty == "pr" then
    for _, v in ipairs(values_at(obj, node.path)) do
      if v ~= "" and not (type(v) == "table" and next(v) == nil) then return true end
    end
    return false
  end
  if ty == "vp" then
    local root = node.path.urn and M.get(obj, node.path.urn) or obj
    local v = M.get(root, node.path.attr)
    if type(v) ~= "table" then return false end
    for _, item in ipairs(json.is_array(v) and v or { v }) do
      if type(item) == "table" and eval(node.filter, item) then return true end
    end
    return false
  end
  -- cmp
  local exact = M.CASE_EXACT[full_name(node.path)]
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

function M.matches(ast, obj) return eval(ast, obj) == true end

return M
