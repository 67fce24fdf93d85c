-- Streaming RFC 4180 CSV reader (plus a row encoder and a file hash).
--
--   local csv = require "scimrun.csv"
--   for row, info in csv.rows("users.csv", { required = { "userName", "email" } }) do
--     if not row then fail_item(info.file .. ":" .. info.line .. ": " .. info.error) else ... end
--   end
--
-- row: table keyed by column name (values are strings, "" for an empty field), or `false` for a
-- bad record (false, not nil: a nil first value would end the generic `for`).
-- info: { file, line = first physical line of the record, index = data record number (1-based),
--         error = nil | message, fields = raw field strings of a bad record when it parsed }.
--
-- The file is read in chunks (64 KiB) and never held whole: memory stays flat however many rows.
-- The iterator is a plain closure, not a coroutine, so a scimrun task may yield inside the loop.
-- Accepted: quoted fields with doubled quotes, delimiters and line breaks; CRLF or LF; a UTF-8
-- BOM; a final record without a line break. Blank lines are skipped. A quote inside an unquoted
-- field is kept literally (O"Brien). A field that is not valid UTF-8 fails its record (the message
-- names the column and byte and says how to convert the file): SCIM bodies are UTF-8 JSON.
-- A malformed quoted field (unterminated, text after the closing quote, longer than
-- max_record_bytes) fails that record only: reading resumes on the physical line after the one
-- the record started on.
-- Whole-file problems (missing file, no header, duplicate or missing required column) raise.
local sha256 = require "scimrun.sha256"
local utf8_check = require "scimrun.input.utf8_check"

local byte, find, sub, gsub = string.byte, string.find, string.sub, string.gsub
local concat = table.concat

local M = {}

M.CHUNK_SIZE = 65536
M.MAX_RECORD_BYTES = 1048576

local QUOTE, CR, LF = 34, 13, 10

-- A file that cannot be read as input is bad input (exit code 2), not a bug in the workflow.
local function bad_input(msg)
  error(require("scimrun.errors").new { class = "input", detail = msg,
    suggest = "fix the input file (or the --param naming it), then run the workflow again" }, 0)
end
M._bad_input = bad_input

local function open_input(path, who)
  if type(path) ~= "string" or path == "" then
    error(("%s: path must be a non-empty string, got %s"):format(who, type(path)), 3)
  end
  local fh, err = io.open(path, "rb")
  if not fh then
    -- io.open's message starts with the path; keep only the reason.
    local reason = err and err:match(": ([^:]+)$") or tostring(err)
    bad_input(("%s: cannot open input file '%s': %s"):format(who, path, reason))
  end
  return fh
end
M._open_input = open_input

local function count_lf(s)
  if not find(s, "\n", 1, true) then return 0 end
  local _, n = gsub(s, "\n", "")
  return n
end

-- The record parser: a closure over one open file. next_record() fills `fields` and returns
-- (nfields, first_line, quoted_flag) for a record, (nil, first_line, nil, err, raw) for a bad one,
-- and nil at the end of the file. It reads chunks as it needs them and never yields.
local function new_parser(fh, delim_s, chunk_size, max_record)
  local DELIM = byte(delim_s)
  local buf, pos, eof = "", 1, false
  local buf_off = 0                -- file offset (0-based) of buf[1]
  local line = 1                   -- physical line number of the byte at pos
  local nd, nn, nq = 0, 0, 0       -- cached next delimiter, LF, quote positions (stale when < pos)
  local fields = {}

  -- Appends the next chunk to the unconsumed part of the buffer; false at end of file.
  local function refill()
    if eof then return false end
    local chunk = fh:read(chunk_size)
    if not chunk then
      eof = true
      return false
    end
    buf_off = buf_off + pos - 1
    if pos > #buf then buf = chunk else buf = sub(buf, pos) .. chunk end
    pos, nd, nn, nq = 1, 0, 0, 0
    return true
  end

  -- Strips a UTF-8 byte order mark at the very start of the file.
  while #buf < 3 and refill() do end
  if sub(buf, 1, 3) == "\239\187\191" then pos = 4 end

  -- After a malformed quoted field: restart at the physical line following the record's first.
  local function resync(rec_off, rec_line)
    if not fh:seek("set", rec_off) then
      eof, buf, pos = true, "", 1
      return
    end
    buf, pos, eof, buf_off, nd, nn, nq = "", 1, false, rec_off, 0, 0, 0
    while true do
      local e = find(buf, "\n", pos, true)
      if e then
        pos = e + 1
        break
      end
      pos = #buf + 1
      if not refill() then break end
    end
    line = rec_line + 1
  end

  local nf, rec_line, rec_off = 0, 1, 0 -- the record being parsed
  local function bad(msg)
    local raw = { unpack(fields, 1, nf) }
    resync(rec_off, rec_line)
    return nil, rec_line, nil, msg, raw
  end
  local function too_long()
    return (buf_off + pos - 1 - rec_off) > max_record
  end

  local function next_record()
    local any_quoted = false
    nf, rec_line, rec_off = 0, line, buf_off + pos - 1
    local mode = 0                 -- 0 field start, 1 unquoted, 2 quoted, 3 after a quote in a quoted field
    local part                     -- unquoted: text before a chunk edge
    local parts, np = nil, 0       -- quoted: pieces of the field so far
    while true do
      if mode == 0 then
        if pos > #buf and not refill() then
          if nf == 0 then return nil end
          nf = nf + 1
          fields[nf] = ""
          return nf, rec_line, any_quoted
        end
        if byte(buf, pos) == QUOTE then
          pos, mode, parts, np, any_quoted = pos + 1, 2, {}, 0, true
        else
          mode, part = 1, nil
        end
      elseif mode == 1 then
        if nd < pos then nd = find(buf, delim_s, pos, true) or #buf + 1 end
        if nn < pos then nn = find(buf, "\n", pos, true) or #buf + 1 end
        local e = nd < nn and nd or nn
        if e > #buf then
          local s = sub(buf, pos)
          part = part and part .. s or s
          pos = #buf + 1
          if too_long() then return bad(("record is longer than %d bytes"):format(max_record)) end
          if not refill() then
            if byte(part, -1) == CR then part = sub(part, 1, -2) end
            nf = nf + 1
            fields[nf] = part
            return nf, rec_line, any_quoted
          end
        else
          local s = sub(buf, pos, e - 1)
          if part then s = part .. s end
          nf = nf + 1
          pos = e + 1
          if e == nd then
            fields[nf], mode = s, 0
          else
            if byte(s, -1) == CR then s = sub(s, 1, -2) end
            fields[nf] = s
            line = line + 1
            return nf, rec_line, any_quoted
          end
        end
      elseif mode == 2 then
        if nq < pos then nq = find(buf, '"', pos, true) or #buf + 1 end
        local q = nq
        if q > pos then
          local piece = sub(buf, pos, q - 1)
          line = line + count_lf(piece)
          np = np + 1
          parts[np] = piece
        end
        if q > #buf then
          pos = q
          if too_long() then
            return bad(("quoted field in column %d is longer than %d bytes: a quote is probably "
              .. "not closed; a quote inside a quoted field must be doubled (\"\")"):format(nf + 1, max_record))
          end
          if not refill() then
            return bad(("quoted field in column %d is not closed before the end of the file; "
              .. "a quote inside a quoted field must be doubled (\"\")"):format(nf + 1))
          end
        else
          pos, mode = q + 1, 3
        end
      else -- mode 3: just past a quote inside a quoted field: doubled quote, or the closing one
        if pos > #buf and not refill() then
          nf = nf + 1
          fields[nf] = concat(parts, "", 1, np)
          return nf, rec_line, any_quoted
        end
        local c = byte(buf, pos)
        if c == QUOTE then
          np = np + 1
          parts[np] = '"'
          pos, mode = pos + 1, 2
        elseif c == DELIM then
          nf = nf + 1
          fields[nf] = concat(parts, "", 1, np)
          pos, mode = pos + 1, 0
        elseif c == LF or c == CR then
          if c == CR and pos == #buf then refill() end -- LF may be in the next chunk
          local c2 = byte(buf, pos + 1)
          if c == CR and c2 ~= LF and c2 ~= nil then
            return bad(("unexpected carriage return after the closing quote of column %d"):format(nf + 1))
          end
          nf = nf + 1
          fields[nf] = concat(parts, "", 1, np)
          pos = pos + (c == CR and c2 == LF and 2 or 1)
          line = line + 1
          return nf, rec_line, any_quoted
        else
          return bad(("unexpected text after the closing quote of column %d; a quote inside a "
            .. "quoted field must be doubled (\"\")"):format(nf + 1))
        end
      end
    end
  end

  return next_record, fields
end

local function check_opts(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("csv.rows: opts must be a table", 3) end
  local d = opts.delimiter or ","
  if type(d) ~= "string" or #d ~= 1 or d == '"' or d == "\r" or d == "\n" then
    error(("csv.rows: delimiter must be one byte other than a quote or line break, got %q"):format(tostring(d)), 3)
  end
  return opts, d
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- Opens a reader: { columns = {...}, next = function() -> row|false, info | nil, close = fn }.
function M.open(path, opts)
  local delim
  opts, delim = check_opts(opts)
  local fh = open_input(path, "csv")
  local next_record, fields = new_parser(fh, delim, opts.chunk_size or M.CHUNK_SIZE,
    opts.max_record_bytes or M.MAX_RECORD_BYTES)
  local function fail(msg)
    fh:close()
    bad_input(("csv: %s: %s"):format(path, msg))
  end

  local columns
  if opts.header ~= false or not opts.columns then
    local nf, hline, _, err
    repeat
      nf, hline, _, err = next_record()
    until nf == nil or not (nf == 1 and fields[1] == "")
    if err then fail(("line %d: header row: %s"):format(hline, err)) end
    if not nf then fail("the file is empty: a header row naming the columns is required") end
    columns = {}
    for i = 1, nf do
      columns[i] = trim(fields[i])
      local at = utf8_check.invalid_at(columns[i])
      if at then fail(("line %d: header row: %s"):format(hline,
        utf8_check.describe(("column %d's name"):format(i), columns[i], at))) end
    end
  end
  if opts.columns then
    if opts.header == false or not columns or #opts.columns == #columns then
      columns = {}
      for i, c in ipairs(opts.columns) do columns[i] = c end
    else
      fail(("opts.columns names %d columns but the header row has %d"):format(#opts.columns, #columns))
    end
  end
  local seen = {}
  for i, c in ipairs(columns) do
    if c == "" then fail(("header: column %d has no name"):format(i)) end
    if seen[c] then fail(("header: column '%s' appears twice (columns %d and %d)"):format(c, seen[c], i)) end
    seen[c] = i
  end
  local required = opts.required or {}
  for _, r in ipairs(required) do
    if not seen[r] then
      fail(("required column '%s' is not in the header (columns: %s)"):format(r, concat(columns, ", ")))
    end
  end
  local ncols, nreq = #columns, #required

  local index, closed = 0, false
  local reader = { columns = columns, file = path }
  function reader.close()
    if not closed then
      closed = true
      fh:close()
    end
  end
  function reader.next()
    if closed then return nil end
    while true do
      local nf, rline, quoted, err, raw = next_record()
      if nf == nil and err == nil then
        reader.close()
        return nil
      end
      if not (nf == 1 and not quoted and fields[1] == "") then -- a blank line is no record
        index = index + 1
        local info = { file = path, line = rline, index = index }
        if err then
          info.error, info.fields = err, raw
          return false, info
        end
        if nf ~= ncols then
          info.error = ("expected %d fields (%s), got %d"):format(ncols, concat(columns, ","), nf)
          info.fields = { unpack(fields, 1, nf) }
          return false, info
        end
        for i = 1, ncols do
          local at = utf8_check.invalid_at(fields[i])
          if at then
            info.error = utf8_check.describe(("column '%s'"):format(columns[i]), fields[i], at)
            info.fields = { unpack(fields, 1, nf) }
            return false, info
          end
        end
        local row = {}
        for i = 1, ncols do row[columns[i]] = fields[i] end
        for i = 1, nreq do
          local r = required[i]
          if row[r] == "" then
            info.error = ("required column '%s' is empty"):format(r)
            info.fields = { unpack(fields, 1, nf) }
            return false, info
          end
        end
        return row, info
      end
    end
  end
  return reader
end

-- Iterator over the data records of a CSV file: for row, info in csv.rows(path, opts).
-- opts: delimiter (","), columns (names replacing the header row; with header = false the file
-- has no header row), required (column names that must be non-empty), chunk_size, max_record_bytes.
function M.rows(path, opts)
  local header = (opts and opts.header == false) and 0 or 1
  return require("scimrun.input.size").register(M.open(path, opts).next, path, header,
    function() return M.open(path, opts).next end)
end

local function needs_quotes(s, delim)
  return find(s, '[\r\n"]') or find(s, delim, 1, true) or find(s, "^%s") or find(s, "%s$")
end

-- Encodes one record (array of strings/numbers/booleans; nil -> ""; values.n if it has holes)
-- as one CSV record ending in eol (default CRLF, as RFC 4180 says). Quotes only where needed.
function M.encode_row(values, delimiter, eol)
  local delim = delimiter or ","
  local out = {}
  for i = 1, (values.n or #values) do
    local v = values[i]
    local s = v == nil and "" or tostring(v)
    if needs_quotes(s, delim) then s = '"' .. s:gsub('"', '""') .. '"' end
    out[i] = s
  end
  return concat(out, delim) .. (eol or "\r\n")
end

-- Content hash of a file, streamed: "sha256:<64 hex digits>". Raises when the file cannot be read.
function M.hash(path)
  local fh = open_input(path, "csv.hash")
  local h = sha256.new()
  while true do
    local chunk = fh:read(M.CHUNK_SIZE)
    if not chunk then break end
    h:update(chunk)
  end
  fh:close()
  return "sha256:" .. h:hex()
end

return M
