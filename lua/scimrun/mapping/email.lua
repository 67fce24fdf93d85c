-- Email address check used by mapping.apply for every emails[...].value (scimrun.mapping.valid_email).
-- Contract: valid_email(s) -> true, or false and a short reason ("has no @", ...). It checks an
-- address the way a provisioning target will: one @, a plausible local part (at most 64 bytes)
-- and a dotted domain of valid labels with a non-numeric top-level part; non-ASCII bytes are
-- allowed (internationalised addresses). Pure function, no state.
local find, sub = string.find, string.sub

local M = {}

function M.valid_email(s)
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

return M
