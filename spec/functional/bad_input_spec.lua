-- Bad input files: missing, empty, without a header, with a duplicated column or without a
-- required one. Each is a mistake of the operator, not a bug: exit code 2, one line naming the
-- file and what is wrong, and nothing written to the provider.
local proc = require "helpers.proc"
local sbrun = require "helpers.sbrun"

local dir = proc.tmpdir("bad-input")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function write(name, text) return proc.write(dir .. "/" .. name, text) end

local CASES = {
  { "missing", dir .. "/no-such.csv", ("cannot open input file '" .. dir .. "/no-such.csv': No such file")
      :gsub("%p", "%%%0") },
  { "empty", write("empty.csv", ""), "the file is empty: a header row naming the columns is required" },
  { "blank lines only", write("blank.csv", "\n\n"), "the file is empty" },
  { "duplicated column", write("dup.csv", "userName,email,userName\na,a@x,a\n"),
    "header: column 'userName' appears twice %(columns 1 and 3%)" },
  { "required column missing", write("noemail.csv", "userName,title\nalice,dev\n"),
    "required column 'email' is not in the header %(columns: userName, title%)" },
}

describe("a bad input file", function()
  for _, case in ipairs(CASES) do
    it(case[1] .. ": exit 2, one line naming the file, no write", function()
      local state = ("%s/%s.db"):format(dir, case[1]:gsub(" ", "-"))
      local code, out, err = proc.run(("examples/onboard.lua --sandbox --state %s --param csv=%s")
        :format(state, case[2]))
      assert.are.equal(2, code, out .. err)
      assert.matches(case[3], err)
      assert.matches("fix the input file", err)
      assert.is_nil(err:find("traceback", 1, true))
      local users, groups = sbrun.journal(state)
      assert.are.same({ 0, 0 }, { #users, #groups })
    end)
  end
end)

-- Bytes that are not UTF-8 (a CSV saved as Latin-1): that record is refused with its line and
-- column, nothing of it reaches the provider, the other rows are onboarded, and --report stays
-- valid JSON. A header that is not UTF-8 refuses the whole file.
describe("input that is not UTF-8", function()
  local cjson = require "cjson"

  it("fails the record with its line and column; the others are onboarded; the report parses", function()
    local csv = write("latin1.csv", "userName,email,first_name,last_name\n"
      .. "ana,ana@x.test,Ana,Lima\n"
      .. "jose,jose@x.test,Jos\233,Garc\237a\n"
      .. "bo,bo@x.test,Bo,Ek\n")
    local state, rep = dir .. "/latin1.db", dir .. "/latin1.json"
    local code, out, err = proc.run(("examples/onboard.lua --sandbox --state %s --param csv=%s "
      .. "--continue-on-error --report %s"):format(state, csv, rep))
    assert.are.equal(3, code, out .. err)
    local r = cjson.decode(proc.read_all(rep))
    local by = {}
    for _, it in ipairs(r.items) do by[it.line] = it end
    assert.are.equal("created", by[2].outcome)
    assert.are.equal("created", by[4].outcome)
    assert.are.equal("failed", by[3].status)
    assert.matches("column 'first_name' is not valid UTF%-8 %(byte 4, 0xE9%)", by[3].error.detail)
    assert.matches("iconv", by[3].error.detail)
    local names = {}
    for _, u in ipairs((sbrun.journal(state))) do names[#names + 1] = u.userName end
    table.sort(names)
    assert.are.same({ "ana", "bo" }, names)
  end)

  it("a JSONL line that is not UTF-8 is a bad line", function()
    local jsonl = require "scimrun.jsonl"
    local path = write("latin1.jsonl", '{"userName":"ana"}\n{"userName":"Jos\233"}\n')
    local got = {}
    for row, info in jsonl.rows(path) do got[#got + 1] = { row = row, err = info.error, line = info.line } end
    assert.are.equal("ana", got[1].row.userName)
    assert.is_false(got[2].row)
    assert.are.equal(2, got[2].line)
    assert.matches("the line is not valid UTF%-8 %(byte 17, 0xE9%)", got[2].err)
  end)

  it("a header that is not UTF-8: exit 2, one line, no write", function()
    local csv = write("latin1-header.csv", "userName,email,pr\233nom\nana,ana@x.test,Ana\n")
    local state = dir .. "/latin1-header.db"
    local code, out, err = proc.run(("examples/onboard.lua --sandbox --state %s --param csv=%s")
      :format(state, csv))
    assert.are.equal(2, code, out .. err)
    assert.matches("line 1: header row: column 3's name is not valid UTF%-8", err)
    assert.are.equal(0, #(sbrun.journal(state)))
  end)
end)

describe("utf8_check", function()
  local u = require "scimrun.input.utf8_check"
  it("accepts RFC 3629 UTF-8 and finds the first bad byte of anything else", function()
    for _, s in ipairs { "", "ascii", "Jos\195\169", "\226\130\172", "\240\159\152\128", "\244\143\191\191" } do
      assert.is_nil(u.invalid_at(s), s)
    end
    local bad = {
      { "Jos\233", 4 }, { "\192\175", 1 }, { "\224\128\175", 1 }, { "\237\160\128", 1 },
      { "\244\144\128\128", 1 }, { "ab\195", 3 }, { "\128", 1 }, { "\255", 1 },
    }
    for _, c in ipairs(bad) do assert.are.equal(c[2], u.invalid_at(c[1]), c[1]) end
    assert.are.equal("Jos\239\191\189 ok \195\169", u.sanitize("Jos\233 ok \195\169"))
  end)
end)
