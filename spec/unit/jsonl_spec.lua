-- scimrun.jsonl: one JSON object per line, with the csv reader's contract.
local jsonl = require "scimrun.jsonl"

local TMP
do
  local name = os.tmpname()
  os.remove(name)
  TMP = (os.getenv("SCIMRUN_TEST_TMP") or "/tmp") .. "/scimrun_jsonl_spec_" .. name:match("[^/]+$")
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

local function read_all(path, opts)
  local out = {}
  for row, info in jsonl.rows(path, opts) do
    out[#out + 1] = { row = row, line = info.line, index = info.index, error = info.error, file = info.file }
  end
  return out
end

teardown(function()
  for _, p in ipairs(created) do os.remove(p) end
  os.remove(TMP)
end)

describe("jsonl.rows", function()
  it("yields one object per line with file, line and index", function()
    local p = write("basic.jsonl",
      '{"userName":"alice","name":{"givenName":"Alice"}}\n{"userName":"bob","active":false}\n')
    assert.same({
      { row = { userName = "alice", name = { givenName = "Alice" } }, line = 1, index = 1, file = p },
      { row = { userName = "bob", active = false }, line = 2, index = 2, file = p },
    }, read_all(p))
  end)

  it("skips blank lines, accepts CRLF and a BOM, and reads a last line without a newline", function()
    local recs = read_all(write("blank.jsonl", '\239\187\191{"a":1}\r\n\r\n   \n\t\n{"a":"x\\ny"}'))
    assert.same({ { a = 1 }, { a = "x\ny" } }, { recs[1].row, recs[2].row })
    assert.same({ 1, 5 }, { recs[1].line, recs[2].line })
    assert.same({ 1, 2 }, { recs[1].index, recs[2].index })
  end)

  it("drops top-level nulls so they read as absent", function()
    local row = read_all(write("null.jsonl", '{"userName":"a","title":null}\n'))[1].row
    assert.same({ userName = "a" }, row)
  end)

  it("yields false with the line for invalid JSON and non-objects, then goes on", function()
    local recs = read_all(write("bad.jsonl", '{"a":1}\n{"a": \n[1,2]\n"text"\n{"a":2}\n'))
    assert.equal(5, #recs)
    assert.is_false(recs[2].row)
    assert.equal(2, recs[2].line)
    assert.matches("^invalid JSON: ", recs[2].error)
    assert.same({ false, 3 }, { recs[3].row, recs[3].line })
    assert.matches("expected a JSON object", recs[3].error)
    assert.matches("expected a JSON object", recs[4].error)
    assert.same({ a = 2 }, recs[5].row)
  end)

  it("fails a record whose required key is missing, empty or null", function()
    local recs = read_all(write("req.jsonl", '{"userName":"a"}\n{"x":1}\n{"userName":""}\n{"userName":null}\n'),
      { required = { "userName" } })
    assert.same({ userName = "a" }, recs[1].row)
    for i = 2, 4 do
      assert.is_false(recs[i].row)
      assert.equal(i, recs[i].line)
      assert.matches("required key 'userName' is missing or empty", recs[i].error)
    end
  end)

  it("reads lines longer than 64 KiB", function()
    local long = ("z"):rep(200000)
    local recs = read_all(write("long.jsonl", '{"a":"' .. long .. '"}\n{"a":"b"}\n'))
    assert.equal(long, recs[1].row.a)
    assert.same({ a = "b" }, recs[2].row)
  end)

  it("raises for a missing file, naming it", function()
    local ok, err = pcall(jsonl.rows, TMP .. "/missing.jsonl")
    assert.is_false(ok)
    assert.matches("jsonl: cannot open input file '.*missing%.jsonl': No such file", err)
  end)

  it("is shared by tasks that yield inside the loop", function()
    local lines = {}
    for i = 1, 30 do lines[i] = ('{"n":%d}'):format(i) end
    local next_row = jsonl.rows(write("tasks.jsonl", table.concat(lines, "\n")))
    local seen = {}
    local workers = {}
    for w = 1, 3 do
      workers[w] = function()
        for row in next_row do
          scimrun.sleep(0.001 * w)
          seen[#seen + 1] = row.n
        end
      end
    end
    scimrun.all(workers)
    table.sort(seen)
    local want = {}
    for i = 1, 30 do want[i] = i end
    assert.same(want, seen)
  end)

  it("hashes like csv.hash", function()
    local p = write("h.jsonl", '{"a":1}\n')
    assert.equal(require("scimrun.csv").hash(p), jsonl.hash(p))
    assert.matches("^sha256:%x+$", jsonl.hash(p))
  end)
end)
