-- Bad input files: missing, empty, without a header, with a duplicated column or without a
-- required one. Each is a mistake of the operator, not a bug: exit code 2, one line naming the
-- file and what is wrong, and nothing written to the provider.
local proc = require "helpers.proc"
local sandbox_store = require "scimrun.sandbox.store"

local dir = proc.tmpdir("bad-input")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function write(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

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
      local st = assert(sandbox_store.new { persist = state .. ".sandbox.json" })
      assert.are.same({ 0, 0 }, { #st:list("Users"), #st:list("Groups") })
      st:close()
    end)
  end
end)
