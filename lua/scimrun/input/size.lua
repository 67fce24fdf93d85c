-- How many records an input iterator will yield, counted cheaply before the first one is read,
-- so progress can show done/total and an ETA. csv.rows and jsonl.rows register their iterators;
-- anything else (a table, a generator) has no known size.
--
--   input_size.register(iter, path, header_lines, reopen)   input_size.of(iter) -> n | nil
--   input_size.reopen(iter) -> a fresh iterator over the same input (reopen()), or nil
--   input_size.set(iter, n): the exact count, once something has read the input whole
--
-- The count is of non-blank lines minus the header: a CSV field holding line breaks makes it
-- an over-estimate, never a wrong done count (that comes from the items themselves).
local M = {}

local known = setmetatable({}, { __mode = "k" })

function M.register(iter, path, header_lines, reopen)
  known[iter] = { path = path, header = header_lines or 0, reopen = reopen }
  return iter
end

function M.reopen(iter)
  local k = known[iter]
  return k and k.reopen and k.reopen() or nil
end

function M.set(iter, n)
  local k = known[iter]
  if k then k.total = n end
end

local function count_lines(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n, last = 0, "\n"
  while true do
    local chunk = f:read(1048576)
    if not chunk then break end
    -- a line with something on it: a line break preceded by a byte other than \r or \n
    local _, k = chunk:gsub("[^\r\n]\r?\n", "")
    n = n + k
    -- a line split across chunks: the break that ends it is at the start of the next chunk
    if last:match("[^\r\n]\r?$") and chunk:match("^\r?\n") then n = n + 1 end
    last = chunk:sub(-2)
  end
  f:close()
  if last:match("[^\r\n]$") then n = n + 1 end -- a last line without a line break
  return n
end
M._count_lines = count_lines

function M.of(iter)
  local k = known[iter]
  if not k then return nil end
  if k.total == nil then
    local n = count_lines(k.path)
    k.total = n and math.max(0, n - k.header) or false
  end
  return k.total or nil
end

return M
