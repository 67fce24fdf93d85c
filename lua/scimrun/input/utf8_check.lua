-- UTF-8 validation for input records and for JSON that scimrun writes.
--
--   utf8_check.invalid_at(s) -> nil when s is valid UTF-8, else the byte offset (1-based) of the
--                               first byte that does not start or continue a valid sequence
--   utf8_check.sanitize(s)   -> s with every invalid byte replaced by U+FFFD
--
-- Valid means RFC 3629: no overlong forms, no surrogates (U+D800..DFFF), nothing above U+10FFFF.
-- Why: SCIM bodies are JSON, and JSON text is UTF-8 (RFC 8259 section 8.1). A Latin-1 CSV would
-- otherwise reach the wire as bytes no server can decode and make `--report` invalid JSON.
local byte, find, sub, concat = string.byte, string.find, string.sub, table.concat

local M = {}

-- Length of the valid sequence starting at s[i] (a byte >= 0x80), or nil.
local function seq_len(s, i)
  local c = byte(s, i)
  local n
  local lo, hi = 0x80, 0xBF -- lo/hi bound the second byte
  if c >= 0xC2 and c <= 0xDF then
    n = 2
  elseif c >= 0xE0 and c <= 0xEF then
    n = 3
    if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
  elseif c >= 0xF0 and c <= 0xF4 then
    n = 4
    if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
  else
    return nil
  end
  local c2 = byte(s, i + 1)
  if not c2 or c2 < lo or c2 > hi then return nil end
  for k = 2, n - 1 do
    local ck = byte(s, i + k)
    if not ck or ck < 0x80 or ck > 0xBF then return nil end
  end
  return n
end

-- In C (runtime/utf8_check.c, the same rules as seq_len): every response body passes here.
M.invalid_at = require("scimrun.utf8").invalid_at

function M.sanitize(s)
  local i = M.invalid_at(s)
  if not i then return s end
  local out, n, from = {}, 0, 1
  while i do
    local len = seq_len(s, i)
    if len then
      i = find(s, "[\128-\255]", i + len)
    else
      n = n + 1
      out[n] = sub(s, from, i - 1) .. "\239\191\189"
      from = i + 1
      i = find(s, "[\128-\255]", from)
    end
  end
  out[n + 1] = sub(s, from)
  return concat(out)
end

-- A message for a bad record: which field, which byte, and what to do.
function M.describe(where, s, at)
  return ("%s is not valid UTF-8 (byte %d, 0x%02X): save the file as UTF-8, e.g. "
    .. "`iconv -f latin1 -t utf-8 in.csv > out.csv`"):format(where, at, byte(s, at))
end

return M
