-- UTF-8 validation for input records and for JSON that scimrun writes.
--
--   utf8_check.invalid_at(s [, init]) -> nil when s (from byte init) is valid UTF-8, else the
--                               byte offset (1-based) of the first byte that does not start or
--                               continue a valid sequence
--   utf8_check.sanitize(s)   -> s with every invalid byte replaced by U+FFFD
--
-- Valid means RFC 3629: no overlong forms, no surrogates (U+D800..DFFF), nothing above U+10FFFF.
-- Why: SCIM bodies are JSON, and JSON text is UTF-8 (RFC 8259 section 8.1). A Latin-1 CSV would
-- otherwise reach the wire as bytes no server can decode and make `--report` invalid JSON.
local byte, sub, concat = string.byte, string.sub, table.concat

local M = {}

-- In C (runtime/utf8_check.c): every request body passes here. invalid_at(s, init) goes on
-- from byte init.
local invalid_at = require("scimrun.utf8").invalid_at
M.invalid_at = invalid_at

function M.sanitize(s)
  local i = invalid_at(s)
  if not i then return s end
  local out, n, from = {}, 0, 1
  while i do
    n = n + 1
    out[n] = sub(s, from, i - 1) .. "\239\191\189"
    from = i + 1
    i = invalid_at(s, from)
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
