-- Email address check used by mapping.apply for every emails[...].value (scimrun.mapping.valid_email).
-- Contract: valid_email(s) -> true, or false and a short reason ("has no @", ...). It checks an
-- address the way a provisioning target will: one @, a plausible local part (at most 64 bytes)
-- and a dotted domain of valid labels with a non-numeric top-level part; non-ASCII bytes are
-- allowed (internationalised addresses). Pure function, no state.
local find, sub, byte = string.find, string.sub, string.byte

local M = {}

-- The full check, rule by rule, which names the reason (M.full_check: the reference the fast
-- path is tested against).
local function full_check(s)
  if type(s) ~= "string" then return false, "not a string" end
  if s == "" then return false, "empty" end
  if #s > 254 then return false, "longer than 254 characters" end
  if find(s, "%s") then return false, "contains white space" end
  local at = find(s, "@", 1, true)
  if not at then return false, "has no @" end
  if find(s, "@", at + 1, true) then return false, "has more than one @" end
  local loc, dom = sub(s, 1, at - 1), sub(s, at + 1)
  if loc == "" then return false, "nothing before the @" end
  if #loc > 64 then return false, "the part before the @ is longer than 64 characters" end
  if find(loc, "[^%w!#$%%&'*+/=?^_`{|}~.%-\128-\255]") then return false, "invalid character before the @" end
  if find(loc, "^%.") or find(loc, "%.$") or find(loc, "..", 1, true) then
    return false, "misplaced dot before the @"
  end
  if dom == "" then return false, "nothing after the @" end
  if not find(dom, ".", 1, true) then return false, "the domain has no dot" end
  local labels = 0
  for label in (dom .. "."):gmatch("(.-)%.") do
    labels = labels + 1
    if label == "" then return false, "empty label in the domain" end
    if #label > 63 then return false, "a domain label is longer than 63 characters" end
    if find(label, "[^%w%-\128-\255]") then return false, "invalid character in the domain" end
    if find(label, "^%-") or find(label, "%-$") then return false, "a domain label starts or ends with -" end
  end
  local tld = dom:match("([^.]*)$")
  if labels < 2 or #tld < 2 or not find(tld, "%D") then return false, "the domain has no valid top-level part" end
  return true
end

-- The common address (ASCII, one @, no white space) checked in one pattern match and a walk over
-- its dots; true only where every rule below holds. Anything else, a failure included, goes
-- through the full check, which names the reason. Every row's email passes here twice (the
-- preflight, then its item): the full check alone was half of mapping.apply's time.
local SIMPLE = "^[%w!#$%%&'*+/=?^_`{|}~.%-]+@[%w.%-]+$"

local function simple_ok(s)
  if #s > 254 or not find(s, SIMPLE) or find(s, "..", 1, true) then return false end
  local at = find(s, "@", 1, true)
  if at > 65 or byte(s, 1) == 46 or byte(s, at - 1) == 46 then return false end -- 46: "."
  local from, labels = at + 1, 0
  local last
  if byte(s, from) == 46 or byte(s, #s) == 46 then return false end
  while true do
    local dot = find(s, ".", from, true)
    local to = dot and dot - 1 or #s
    if to - from + 1 > 63 or byte(s, from) == 45 or byte(s, to) == 45 then return false end -- 45: "-"
    labels, last = labels + 1, sub(s, from, to)
    if not dot then break end
    from = dot + 1
  end
  return labels >= 2 and #last >= 2 and find(last, "%D") ~= nil
end

function M.valid_email(s)
  if type(s) == "string" and simple_ok(s) then return true end
  return full_check(s)
end

M.full_check = full_check

return M
