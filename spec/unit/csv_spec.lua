-- scimrun.csv: RFC 4180 parsing, record line numbers, bad records, streaming, hashing.
local csv = require "scimrun.csv"

local TMP
do -- a fresh directory per run: os.tmpname() supplies a unique suffix
  local name = os.tmpname()
  os.remove(name)
  TMP = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/scimrun_csv_spec_" .. name:match("[^/]+$")
end
os.execute("mkdir -p '" .. TMP .. "'")
local created = {}

local function write(name, content)
  local path = TMP .. "/" .. name
  local fh = assert(io.open(path, "wb"))
  fh:write(content)
  fh:close()
  created[#created + 1] = path
  return path
end

-- Reads a file fully: list of { row = row|false, line, index, error, fields }.
local function read_all(path, opts)
  local out = {}
  for row, info in csv.rows(path, opts) do
    out[#out + 1] = { row = row, line = info.line, index = info.index, error = info.error,
      file = info.file, fields = info.fields }
  end
  return out
end

local function rows_only(recs)
  local out = {}
  for i, r in ipairs(recs) do out[i] = r.row end
  return out
end

local function raises(fn, pattern)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
end

teardown(function()
  for _, p in ipairs(created) do os.remove(p) end
  os.remove(TMP)
end)

describe("csv.rows", function()
  it("yields rows keyed by the header with file, line and index", function()
    local p = write("basic.csv", "userName,email\nalice,alice@example.com\nbob,bob@example.com\n")
    local recs = read_all(p)
    assert.same({
      { row = { userName = "alice", email = "alice@example.com" }, line = 2, index = 1, file = p },
      { row = { userName = "bob", email = "bob@example.com" }, line = 3, index = 2, file = p },
    }, recs)
  end)

  it("strips a UTF-8 byte order mark from the first header name", function()
    local p = write("bom.csv", "\239\187\191userName,email\r\nalice,a@example.com\r\n")
    local recs = read_all(p)
    assert.same({ userName = "alice", email = "a@example.com" }, recs[1].row)
  end)

  it("accepts CRLF, LF, a mix of both, and a last record without a line break", function()
    local want = { { a = "1", b = "2" }, { a = "3", b = "4" }, { a = "5", b = "6" } }
    assert.same(want, rows_only(read_all(write("crlf.csv", "a,b\r\n1,2\r\n3,4\r\n5,6\r\n"))))
    assert.same(want, rows_only(read_all(write("lf.csv", "a,b\n1,2\n3,4\n5,6\n"))))
    assert.same(want, rows_only(read_all(write("mixed.csv", "a,b\r\n1,2\n3,4\r\n5,6"))))
  end)

  it("reads quoted fields: delimiters, doubled quotes, line breaks, empty quotes", function()
    local p = write("quoted.csv", 'name,title,note\r\n'
      .. '"Smith, Jr.","He said ""hi""",""\r\n'
      .. '"O""Brien","line one\nline two","crlf\r\ninside"\r\n')
    local rows = rows_only(read_all(p))
    assert.same({ name = "Smith, Jr.", title = 'He said "hi"', note = "" }, rows[1])
    assert.same({ name = 'O"Brien', title = "line one\nline two", note = "crlf\r\ninside" }, rows[2])
  end)

  it("keeps a quote inside an unquoted field literally and keeps spaces in values", function()
    local rows = rows_only(read_all(write("bare.csv", "last,first\nO\"Brien, Pat \n")))
    assert.same({ last = 'O"Brien', first = " Pat " }, rows[1])
  end)

  it("keeps empty fields, including a trailing one at the end of the file", function()
    local rows = rows_only(read_all(write("empty.csv", "a,b,c\n,,\n1,,\n1,2,")))
    assert.same({ { a = "", b = "", c = "" }, { a = "1", b = "", c = "" }, { a = "1", b = "2", c = "" } }, rows)
  end)

  it("reports the first physical line of each record across embedded line breaks", function()
    local p = write("lines.csv", 'id,text\n1,"a\nb\nc"\n2,plain\n3,"x\r\ny"\r\n4,z\n')
    local recs = read_all(p)
    assert.same({ 2, 5, 6, 8 }, { recs[1].line, recs[2].line, recs[3].line, recs[4].line })
    assert.same({ 1, 2, 3, 4 }, { recs[1].index, recs[2].index, recs[3].index, recs[4].index })
  end)

  it("skips blank lines without counting them as records", function()
    local recs = read_all(write("blank.csv", "a,b\n\n1,2\r\n\r\n\n3,4\n\n"))
    assert.same({ { a = "1", b = "2" }, { a = "3", b = "4" } }, rows_only(recs))
    assert.same({ 3, 6 }, { recs[1].line, recs[2].line })
    assert.same({ 1, 2 }, { recs[1].index, recs[2].index })
  end)

  it("trims spaces around header names", function()
    local rows = rows_only(read_all(write("hdr.csv", " userName , email\nalice,a@example.com\n")))
    assert.same({ userName = "alice", email = "a@example.com" }, rows[1])
  end)

  it("supports another delimiter", function()
    local p = write("semi.csv", 'a;b\n"x;y";2,5\n')
    assert.same({ a = "x;y", b = "2,5" }, read_all(p, { delimiter = ";" })[1].row)
    local t = write("tab.csv", "a\tb\n1\t\"2\t3\"\n")
    assert.same({ a = "1", b = "2\t3" }, read_all(t, { delimiter = "\t" })[1].row)
  end)

  it("replaces the header with opts.columns, or reads a headerless file with header = false", function()
    local p = write("cols.csv", "x,y\n1,2\n")
    assert.same({ { first = "1", second = "2" } }, rows_only(read_all(p, { columns = { "first", "second" } })))
    assert.same({ { first = "x", second = "y" }, { first = "1", second = "2" } },
      rows_only(read_all(p, { columns = { "first", "second" }, header = false })))
    raises(function() csv.rows(p, { columns = { "only" } }) end, "names 1 columns but the header row has 2")
  end)

  describe("whole-file problems raise", function()
    it("a missing file, naming it", function()
      raises(function() csv.rows(TMP .. "/nope.csv") end, "cannot open input file '.*nope%.csv': No such file")
    end)
    it("an empty file", function()
      local p = write("empty_file.csv", "")
      raises(function() csv.rows(p) end, "empty_file%.csv: the file is empty: a header row")
      local q = write("blank_file.csv", "\r\n\n")
      raises(function() csv.rows(q) end, "the file is empty")
    end)
    it("a duplicate or unnamed column", function()
      raises(function() csv.rows(write("dup.csv", "a,b,a\n1,2,3\n")) end,
        "column 'a' appears twice %(columns 1 and 3%)")
      raises(function() csv.rows(write("noname.csv", "a,,c\n1,2,3\n")) end, "column 2 has no name")
    end)
    it("a required column missing from the header, listing the columns there are", function()
      raises(function() csv.rows(write("req.csv", "userName,mail\nx,y\n"), { required = { "userName", "email" } }) end,
        "required column 'email' is not in the header %(columns: userName, mail%)")
    end)
    it("a bad delimiter", function()
      raises(function() csv.rows(write("d.csv", "a\n"), { delimiter = '"' }) end, "delimiter must be one byte")
      raises(function() csv.rows(write("d2.csv", "a\n"), { delimiter = ";;" }) end, "delimiter must be one byte")
    end)
  end)

  describe("bad records are yielded as false with info.error, and reading goes on", function()
    it("a record with the wrong number of fields", function()
      local recs = read_all(write("count.csv", "a,b,c\n1,2,3\n1,2\n1,2,3,4\n7,8,9\n"))
      assert.equal(4, #recs)
      assert.is_false(recs[2].row)
      assert.equal(3, recs[2].line)
      assert.equal(2, recs[2].index)
      assert.matches("expected 3 fields %(a,b,c%), got 2", recs[2].error)
      assert.same({ "1", "2" }, recs[2].fields)
      assert.matches("got 4", recs[3].error)
      assert.same({ a = "7", b = "8", c = "9" }, recs[4].row)
    end)

    it("an unterminated quote at the end of the file, with the line it opened on", function()
      local p = write("unterminated.csv", 'a,b\n1,2\n3,"never closed\n4,5\n')
      local recs = read_all(p)
      assert.same({ a = "1", b = "2" }, recs[1].row)
      assert.is_false(recs[2].row)
      assert.equal(3, recs[2].line)
      assert.equal(p, recs[2].file)
      assert.matches("quoted field in column 2 is not closed before the end of the file", recs[2].error)
      -- Reading resumes on the line after the bad record's first line.
      assert.same({ a = "4", b = "5" }, recs[3].row)
      assert.equal(4, recs[3].line)
      assert.equal(3, #recs)
    end)

    it("text after a closing quote fails that record only", function()
      local recs = read_all(write("after.csv", 'a,b\n1,"x"y\n2,"ok"\n"3"\rz,1\n4,4\n'))
      assert.is_false(recs[1].row)
      assert.equal(2, recs[1].line)
      assert.matches("unexpected text after the closing quote of column 2", recs[1].error)
      assert.same({ a = "2", b = "ok" }, recs[2].row)
      assert.equal(3, recs[2].line)
      assert.matches("unexpected carriage return after the closing quote of column 1", recs[3].error)
      assert.same({ a = "4", b = "4" }, recs[4].row)
    end)

    it("a stray quote does not swallow the rest of a large file (max_record_bytes)", function()
      local parts = { "id,name\n", '1,"stray\n' }
      for i = 2, 2000 do parts[#parts + 1] = ("%d,name %d\n"):format(i, i) end
      local p = write("stray.csv", table.concat(parts))
      local recs = read_all(p, { max_record_bytes = 4096 })
      assert.is_false(recs[1].row)
      assert.equal(2, recs[1].line)
      assert.matches("longer than 4096 bytes: a quote is probably not closed", recs[1].error)
      assert.same({ id = "2", name = "name 2" }, recs[2].row)
      assert.equal(3, recs[2].line)
      assert.same({ id = "2000", name = "name 2000" }, recs[#recs].row)
      assert.equal(2000, #recs)
    end)

    it("a required column that is empty, naming the column", function()
      local recs = read_all(write("reqempty.csv", "userName,email\nalice,\n,b@example.com\nc,c@example.com\n"),
        { required = { "userName", "email" } })
      assert.matches("required column 'email' is empty", recs[1].error)
      assert.equal(2, recs[1].line)
      assert.matches("required column 'userName' is empty", recs[2].error)
      assert.same({ userName = "c", email = "c@example.com" }, recs[3].row)
    end)
  end)

  describe("streaming", function()
    local tricky = '\239\187\191id,name,note\r\n'
      .. '1,"Smith, Jr.","he said ""hi"""\r\n'
      .. '\r\n'
      .. '2,"multi\r\nline\nfield",x\n'
      .. '3,O"Brien,""\r\n'
      .. '4,"""","a""""b"\r\n'
      .. '5,bad,"open\r\n'
      .. '6,ok,end'

    it("gives the same records for every chunk size", function()
      local p = write("tricky.csv", tricky)
      local want = read_all(p)
      assert.equal(6, #want)
      assert.same({ id = "2", name = "multi\r\nline\nfield", note = "x" }, want[2].row)
      assert.same({ id = "4", name = '"', note = 'a""b' }, want[4].row)
      assert.matches("not closed", want[5].error)
      assert.same({ id = "6", name = "ok", note = "end" }, want[6].row)
      for size = 1, #tricky + 1 do
        assert.same(want, read_all(p, { chunk_size = size }), "chunk_size " .. size)
      end
    end)

    local EDGE = csv.CHUNK_SIZE -- the last byte of the first chunk

    it("reads a quoted field that spans the 64 KiB chunk edge", function()
      local fill = ("q"):rep(EDGE - 20)
      local p = write("edge_span.csv", 'id,text\n"' .. fill .. ', across\nthe edge",1\n2,next\n')
      local recs = read_all(p)
      assert.same({ { id = fill .. ", across\nthe edge", text = "1" }, { id = "2", text = "next" } }, rows_only(recs))
      assert.same({ 2, 4 }, { recs[1].line, recs[2].line })
    end)

    it("reads a doubled quote whose halves are in different chunks", function()
      local head = "id,text\n"
      local prefix = head .. '1,"'
      local fill = ("y"):rep(EDGE - #prefix - 1)          -- the doubled quote starts at byte EDGE
      local p = write("edge_dq.csv", prefix .. fill .. '""z"\n2,after\n')
      local recs = read_all(p)
      assert.equal(2, #recs)
      assert.same({ id = "1", text = fill .. '"z' }, recs[1].row)
      assert.same({ id = "2", text = "after" }, recs[2].row)
      assert.equal(EDGE, #prefix + #fill + 1)
    end)

    it("reads a closing quote at the chunk edge followed by CRLF in the next chunk", function()
      local prefix = 'id,text\r\n1,"'
      local fill = ("w"):rep(EDGE - #prefix - 1)           -- the closing quote is byte EDGE
      local p = write("edge_close.csv", prefix .. fill .. '"\r\n2,after\r\n')
      local recs = read_all(p)
      assert.same({ { id = "1", text = fill }, { id = "2", text = "after" } }, rows_only(recs))
      assert.same({ 2, 3 }, { recs[1].line, recs[2].line })
    end)

    it("reads an unquoted record whose CR is the last byte of a chunk and LF the first of the next", function()
      local prefix = "id,text\r\n1,"
      local fill = ("v"):rep(EDGE - #prefix - 1)           -- CR is byte EDGE
      local p = write("edge_cr.csv", prefix .. fill .. "\r\n2,after\r\n")
      assert.same({ { id = "1", text = fill }, { id = "2", text = "after" } }, rows_only(read_all(p)))
    end)

    it("keeps memory flat while reading 100,000 rows", function()
      local path = TMP .. "/big.csv"
      created[#created + 1] = path
      local fh = assert(io.open(path, "wb"))
      fh:write("userName,email,first_name,last_name,title\n")
      local batch = {}
      for i = 1, 100000 do
        batch[#batch + 1] = csv.encode_row({ "user" .. i, "user" .. i .. "@example.com", "First" .. i,
          "Last, " .. i, i % 7 == 0 and "two\nlines" or "Engineer" }, ",", "\n")
        if #batch == 1000 then
          assert(fh:write(table.concat(batch))) -- a short write would read as a bad record
          batch = {}
        end
      end
      assert(fh:close())
      local size = io.open(path):seek("end")
      collectgarbage()
      local base, peak, n = collectgarbage("count"), 0, 0
      for row, info in csv.rows(path) do
        n = n + 1
        assert(row, ("record %d read as bad: %s (line %s)"):format(n, tostring(info and info.error),
          tostring(info and info.line)))
        assert(row.userName == "user" .. n)
        if n % 5000 == 0 then
          collectgarbage()
          peak = math.max(peak, collectgarbage("count") - base)
        end
      end
      assert.equal(100000, n)
      -- The file is over 5 MB; a reader that held it would keep at least that much alive.
      assert.is_true(size > 5e6)
      assert.is_true(peak * 1024 < size / 16, ("live heap grew by %.0f KiB for a %d-byte file"):format(peak, size))
    end)

    it("can be resumed from several tasks that yield inside the loop", function()
      local lines = { "n" }
      for i = 1, 50 do lines[#lines + 1] = tostring(i) end
      local next_row = csv.rows(write("tasks.csv", table.concat(lines, "\n")))
      local seen = {}
      local workers = {}
      for w = 1, 4 do
        workers[w] = function()
          while true do
            local row = next_row()
            if row == nil then return end
            scimrun.sleep(0.001 * w)
            seen[#seen + 1] = tonumber(row.n)
          end
        end
      end
      scimrun.all(workers)
      table.sort(seen)
      local want = {}
      for i = 1, 50 do want[i] = i end
      assert.same(want, seen)
    end)

    it("stops after the end and returns nil again", function()
      local next_row = csv.rows(write("end.csv", "a\n1\n"))
      assert.same({ a = "1" }, (next_row()))
      assert.is_nil(next_row())
      assert.is_nil(next_row())
    end)
  end)
end)

describe("csv.encode_row", function()
  it("quotes only what needs it and round-trips through csv.rows", function()
    assert.equal('a,"b,c","d""e","f\ng",," h",1,true\r\n',
      csv.encode_row({ "a", "b,c", 'd"e', "f\ng", nil, " h", 1, true, n = 8 }))
    assert.equal("x;y\n", csv.encode_row({ "x", "y" }, ";", "\n"))
    local values = { 'O"Brien', "Smith, Jr.", "two\r\nlines", "", "张伟", '"', ",", " lead" }
    local header = {}
    for i = 1, #values do header[i] = "c" .. i end
    local p = write("roundtrip.csv", csv.encode_row(header) .. csv.encode_row(values))
    local row = read_all(p)[1].row
    for i = 1, #values do assert.equal(values[i], row["c" .. i]) end
  end)
end)

describe("csv.hash", function()
  it("is SHA-256 of the content, named", function()
    assert.equal("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      csv.hash(write("abc.txt", "abc")))
    assert.equal("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      csv.hash(write("empty.txt", "")))
    -- One million "a" spans many 64 KiB chunks (FIPS 180-2 test vector).
    assert.equal("sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      csv.hash(write("million.txt", ("a"):rep(1000000))))
  end)

  it("is stable for the same content and changes when one byte changes", function()
    local body = ("userName,email\n" .. ("x,y@example.com\n"):rep(10000))
    local h1 = csv.hash(write("h1.csv", body))
    assert.equal(h1, csv.hash(write("h2.csv", body)))
    assert.equal(h1, csv.hash(TMP .. "/h1.csv"))
    local changed = body:sub(1, 70000) .. "X" .. body:sub(70002)
    assert.not_equal(h1, csv.hash(write("h3.csv", changed)))
    assert.not_equal(h1, csv.hash(write("h4.csv", body .. "\n")))
  end)

  it("raises for a missing file, naming it", function()
    raises(function() csv.hash(TMP .. "/missing.csv") end, "csv.hash: cannot open input file '.*missing%.csv'")
  end)
end)

describe("examples/data", function()
  it("users.csv: 300 valid rows, unique userNames, awkward values intact", function()
    local recs = read_all("examples/data/users.csv", { required = { "userName", "email" } })
    assert.equal(300, #recs)
    local seen, by_user = {}, {}
    for _, r in ipairs(recs) do
      assert.is_nil(r.error)
      local key = r.row.userName:lower()
      assert.is_nil(seen[key], "duplicate userName " .. r.row.userName)
      seen[key] = true
      by_user[r.row.userName] = r
    end
    assert.equal('O"Brien', by_user["Patrick.OBrien"].row.last_name)
    assert.equal("Smith, Jr.", by_user["John.SmithJr"].row.last_name)
    assert.equal("张伟", by_user["Wei.Zhang"].row.display_name)
    assert.equal("Ærøskøbing", by_user["Freja.Aeroskobing"].row.last_name)
    assert.equal("Senior Engineer\nPlatform Team", by_user["Kai.Nakamura"].row.title)
    -- The record after the two-line one starts one physical line later than its index suggests.
    local kai = by_user["Kai.Nakamura"]
    assert.equal(kai.line + 2, recs[kai.index + 1].line)
  end)

  it("users_bad.csv: the bad records fail with their line, the good ones read", function()
    local recs = read_all("examples/data/users_bad.csv", { required = { "userName", "email" } })
    local got = {}
    for _, r in ipairs(recs) do got[#got + 1] = { line = r.line, ok = r.row ~= false, error = r.error } end
    assert.equal(6, #got)
    assert.same({ 2, true }, { got[1].line, got[1].ok })
    assert.same({ 3, false }, { got[2].line, got[2].ok })
    assert.matches("required column 'email' is empty", got[2].error)
    assert.same({ 4, true }, { got[3].line, got[3].ok }) -- invalid email: the mapping rejects it
    assert.same({ 5, false }, { got[4].line, got[4].ok })
    assert.matches("expected 9 fields", got[4].error)
    assert.same({ 6, true }, { got[5].line, got[5].ok })
    assert.same({ 8, false }, { got[6].line, got[6].ok })
    assert.matches("not closed before the end of the file", got[6].error)
  end)

  it("groups.csv and offboard.csv name users that exist", function()
    local users = {}
    for row in csv.rows("examples/data/users.csv") do users[row.userName] = row end
    local groups, n = {}, 0
    for row in csv.rows("examples/data/groups.csv", { required = { "group", "userName" } }) do
      assert.is_truthy(row, "bad groups.csv record")
      assert.is_truthy(users[row.userName], row.userName)
      groups[row.group] = true
      n = n + 1
    end
    local ngroups = 0
    for _ in pairs(groups) do ngroups = ngroups + 1 end
    assert.is_true(ngroups >= 5 and n > 100)
    local off = 0
    for row in csv.rows("examples/data/offboard.csv", { required = { "userName" } }) do
      assert.equal("terminated", users[row.userName].status)
      off = off + 1
    end
    assert.equal(20, off)
  end)

  local function run_generator(args)
    local chunk = assert(loadfile("examples/data/generate.lua"))
    local saved = rawget(_G, "arg")
    local a = { [0] = "examples/data/generate.lua" }
    for i, v in ipairs(args) do a[i] = v end
    rawset(_G, "arg", a)
    local ok, err = pcall(chunk)
    rawset(_G, "arg", saved)
    assert(ok, err)
  end

  it("generate.lua reproduces the committed files byte for byte", function()
    local dir = TMP .. "/gen"
    os.execute("mkdir -p '" .. dir .. "'")
    run_generator({ "--dir", dir, "--quiet" })
    for _, name in ipairs({ "users.csv", "groups.csv", "offboard.csv", "users_bad.csv" }) do
      local a = assert(io.open(dir .. "/" .. name, "rb")):read("*a")
      local b = assert(io.open("examples/data/" .. name, "rb")):read("*a")
      assert.equal(b, a, name .. " differs from what generate.lua writes")
      os.remove(dir .. "/" .. name)
    end
    os.remove(dir)
  end)

  it("generate.lua --rows N --out PATH writes N unique users", function()
    local out = TMP .. "/gen_n.csv"
    created[#created + 1] = out
    run_generator({ "--rows", "2500", "--out", out, "--quiet" })
    local seen, n = {}, 0
    for row, info in csv.rows(out, { required = { "userName", "email" } }) do
      assert.is_truthy(row, info.error)
      assert.is_nil(seen[row.userName:lower()])
      seen[row.userName:lower()] = true
      n = n + 1
    end
    assert.equal(2500, n)
  end)
end)
