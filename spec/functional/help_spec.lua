-- Help worth reading (issue 13, item 2): `scimrun help [COMMAND]`, `COMMAND --help`, and the
-- man pages scimrun(1) and scimrun-policy(5). One table declares every flag
-- (lua/scimrun/cli/flags.lua); these specs fail when the help, a parser or the man page
-- disagrees with it, or the policy page with the policy schema and policies/default.lua.
local flags = require "scimrun.cli.flags"
local proc = require "helpers.proc"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function plain(s) return (s:gsub("%p", "%%%0")) end

-- the help block of one flag: from its signature line to the next flag's (or a blank line)
local function block(help, f)
  local start = help:find("\n  " .. flags.signature(f) .. "\n", 1, true)
  if not start then return nil end
  local stop = help:find("\n  [%-%a]", start + 3) or #help
  return help:sub(start, stop)
end

describe("scimrun help", function()
  it("lists the commands and how to get each one's flags; exit 0", function()
    for _, args in ipairs { "help", "--help", "-h" } do
      local code, out, err = proc.run(args)
      assert.are.equal(0, code, err)
      for _, cmd in ipairs(flags.ORDER) do assert.matches("\n  " .. cmd .. " +%S", out) end
      assert.matches("scimrun help COMMAND", out, 1, true)
    end
    local code, out, err = proc.run("")
    assert.are.equal(2, code) -- no arguments: the overview, as a usage error
    assert.are.equal("", out)
    assert.matches("scimrun help COMMAND", err, 1, true)
  end)

  for _, cmd in ipairs(flags.ORDER) do
    it(cmd .. ": every flag with its default and an example, the same by `help " .. cmd .. "` and --help",
      function()
        local code, help, err = proc.run("help " .. cmd)
        assert.are.equal(0, code, err)
        local direct = cmd == "run" and "examples/onboard.lua --help" or (cmd .. " --help")
        local code2, help2 = proc.run(direct)
        assert.are.equal(0, code2)
        assert.are.equal(help, help2)
        for _, f in ipairs(flags.commands[cmd].flags) do
          local b = block(help, f)
          assert.is_string(b, cmd .. ": no help for " .. flags.signature(f) .. " in:\n" .. help)
          assert.matches("default: " .. plain(f.default), b)
          assert.matches("example: " .. plain(f.example), b)
          assert.is_true(#f.help > 10, f.name)
        end
      end)
  end

  it("help for the run works wherever --help stands, and names the policy flags", function()
    local code, out = proc.run("examples/onboard.lua --param csv=x.csv -h")
    assert.are.equal(0, code)
    for _, name in ipairs { "--retry-attempts N", "--backoff-min S", "--backoff-max S", "--backoff-multiplier X",
                            "--jitter none|full|equal|decorrelated", "--set KEY=VALUE", "-q, --quiet", "-vv",
                            "--check", "--progress auto|always|never", "--log-level" } do
      assert.truthy(out:find("\n  " .. name, 1, true), name)
    end
    local code2, out2 = proc.run("runs show --help")
    assert.are.equal(0, code2)
    assert.matches("usage: scimrun runs", out2)
  end)

  it("refuses help on an unknown command: exit 2, one line", function()
    local code, out, err = proc.run("help frobnicate")
    assert.are.equal(2, code, out)
    assert.matches("no help on 'frobnicate': the commands are run, runs, dlq, audit, ui, policy, sandbox", err)
  end)
end)

describe("one declaration of the flags", function()
  local cli = { fail = function(fmt, ...) error(fmt:format(...), 0) end }

  it("the parsers accept every declared flag as its example shows it, and nothing else", function()
    local runner = require "scimrun.cli.runner"
    for _, cmd in ipairs(flags.ORDER) do
      for _, f in ipairs(flags.commands[cmd].flags) do
        local words = { cmd == "run" and "wf.lua" or nil }
        for w in f.example:gmatch("%S+") do words[#words + 1] = w end
        local ok, err = pcall(cmd == "run" and runner.parse or function(a) return flags.parse(cmd, a, cli) end,
          words, cli)
        assert.is_true(ok, cmd .. " " .. f.example .. ": " .. tostring(err))
      end
      local ok, err = pcall(flags.parse, cmd, { "--no-such-flag" }, cli)
      assert.is_false(ok)
      assert.matches("unknown option %-%-no%-such%-flag %(see: scimrun help " .. cmd .. "%)", err)
    end
    local o = runner.parse({ "wf.lua", "-p", "a=1", "--resume", "r-1-2-x", "-vv", "--retry-attempts", "2", "--set",
      "rate_limit.rps=5", "--check", "--sandbox=503:0.1" }, cli)
    assert.are.same({ a = "1" }, o.params)
    assert.are.same({ true, "r-1-2-x", 2, true, "503:0.1", "auto" },
      { o.resume, o.resume_id, o.verbosity, o.check, o.sandbox, o.progress })
    assert.are.same({ "--retry-attempts", "profiles.*.attempts", "2" },
      { o.overrides[1].flag, o.overrides[1].key, o.overrides[1].value })
    assert.are.same({ "--set", "rate_limit.rps", "5" },
      { o.overrides[2].flag, o.overrides[2].key, o.overrides[2].value })
    assert.are.equal(-1, runner.parse({ "wf.lua", "-q" }, cli).verbosity)
    assert.are.equal(1, runner.parse({ "wf.lua", "-v" }, cli).verbosity)
    assert.are.equal("never", runner.parse({ "wf.lua", "--progress", "never" }, cli).progress)
    assert.has_error(function() runner.parse({ "wf.lua", "-q", "-v" }, cli) end,
      "--quiet and -v/-vv contradict each other: give one of them")
    assert.has_error(function() runner.parse({ "wf.lua", "--progress", "sometimes" }, cli) end,
      "--progress must be auto, always or never, got sometimes")
  end)

  it("the commands read no option that the table does not declare", function()
    -- fields the modules set themselves, not from a flag
    local derived = { file = true, params = true, overrides = true, resume_id = true, server_spec = true,
                      outcomes = true }
    local modules = { run = "lua/scimrun/cli/runner.lua", runs = "lua/scimrun/cli/runs.lua",
                      dlq = "lua/scimrun/cli/dlq.lua", policy = "lua/scimrun/cli/policy.lua",
                      sandbox = "lua/scimrun/cli/sandbox.lua", audit = "lua/scimrun/cli/audit.lua",
                      ui = "lua/scimrun/cli/ui.lua" }
    for cmd, path in pairs(modules) do
      local keys = {}
      for _, f in ipairs(flags.commands[cmd].flags) do keys[flags.key_of(f)] = true end
      for field in read(path):gmatch("%f[%w_]o%.([%a_][%w_]*)") do
        assert.is_true(keys[field] or derived[field] or false, path .. " reads o." .. field
          .. ", which no flag of '" .. cmd .. "' in lua/scimrun/cli/flags.lua sets")
      end
    end
  end)

  it("man/scimrun.1's OPTIONS are generated from the table, and it names no other flag", function()
    local page = read("man/scimrun.1")
    local regenerated, found = flags.update_man(page)
    assert.are.same(flags.ORDER, found)
    assert.are.equal(regenerated, page, "man/scimrun.1 is out of date: run ./build/scimrun -l scripts/gen-man.lua")
    local declared = {}
    for _, t in ipairs(flags.TOP) do declared[t.name] = true end
    for _, cmd in ipairs(flags.ORDER) do
      local region = page:match("BEGIN GENERATED OPTIONS: " .. cmd .. "\n(.-)\n%.\\\" END")
      for _, f in ipairs(flags.commands[cmd].flags) do
        declared[f.name] = true
        assert.truthy(region:find("\n%.It [^\n]*Fl " .. plain(f.name:sub(2)) .. "[ \n]"), cmd .. " " .. f.name)
        assert.truthy(region:find(f.help:sub(1, 20), 1, true) or region:find(f.help:sub(1, 20):gsub("\\", "\\e"),
          1, true), cmd .. " " .. f.name .. " help")
        for _, s in ipairs(f.short or {}) do declared[s] = true end
      end
    end
    for name in page:gmatch("Fl (%-?[%w][%w%-]*)") do
      assert.is_true(declared["-" .. name] or false, "man/scimrun.1 names -" .. name .. ", which no command declares")
    end
  end)
end)

describe("man pages", function()
  local schema = require "scimrun.resilience.policy_schema"
  local policy = require "scimrun.resilience.policy"

  -- the page's `.It Cm KEY` items of the subsection `.Ss SECTION`, with their Default: lines
  local function documented(page, section)
    local body = page:match("\n%.Ss " .. section .. "\n(.-)\n%.S[sh] ")
    assert.is_string(body, "no subsection " .. section)
    local items, cur = {}, nil
    for line in (body .. "\n"):gmatch("([^\n]*)\n") do
      local key = line:match("^%.It Cm ([%w_]+)")
      if key then
        cur = key
        items[key] = ""
      elseif line:match("^%.It") or line:match("^%.El") then
        cur = nil
      elseif cur then
        items[cur] = items[cur] .. line .. "\n"
      end
    end
    return items, body
  end

  local function default_of(text)
    local line = text:match("Default: ([^\n]*)")
    if not line then return nil end
    local value, builtin = line:match("^(%S-)%.?%s+%(a file that extends nothing: (.-)%)%.$")
    return value or line:match("^(.-)%.?$"), builtin
  end

  local function same(doc, v)
    if v == nil then return doc == "none" end
    if type(v) == "number" then return tonumber(doc) == v end
    return doc == tostring(v)
  end

  it("scimrun-policy(5) documents every key, its default and the built-in value where it differs", function()
    local page = read("man/scimrun-policy.5")
    local default = policy.load("policies/default.lua")
    for _, top in ipairs(schema.TOP_KEYS) do
      assert.truthy(page:find("\n.Ss " .. top .. "\n", 1, true), "no subsection for " .. top)
    end
    for section, fields in pairs(schema.SECTIONS) do
      local items = documented(page, section == "profile" and "profiles" or section)
      for key in pairs(fields) do
        local text = items[key]
        assert.is_string(text, ("%s.%s is not documented"):format(section, key))
        local doc, builtin = default_of(text)
        assert.is_string(doc, ("%s.%s has no Default: line"):format(section, key))
        if section == "profile" then
          assert.is_true(same(doc, schema.PROFILE_DEFAULTS[key]), ("profiles: %s documented as %s, is %s")
            :format(key, doc, tostring(schema.PROFILE_DEFAULTS[key])))
        else
          local v = default[section][key]
          assert.is_true(same(doc, v), ("%s.%s documented as %s, policies/default.lua gives %s")
            :format(section, key, doc, tostring(v)))
          local b = schema.BUILTIN[section][key]
          if builtin then
            assert.is_true(same(builtin, b), ("%s.%s: built-in documented as %s, is %s"):format(section, key, builtin,
              tostring(b)))
          elseif type(v) ~= "function" then
            assert.is_true(same(doc, b), ("%s.%s: the built-in value %s differs and is not documented")
              :format(section, key, tostring(b)))
          end
        end
      end
      for key in pairs(items) do
        assert.is_truthy(fields[key], ("the page documents %s.%s, which the schema does not know"):format(section, key))
      end
    end
    local rules = documented(page, "classify")
    for _, key in ipairs { "name", "description", "status", "scim_type", "kind", "header", "op", "detail", "when",
                           "class", "suggest" } do
      assert.is_string(rules[key], "classify rule key " .. key)
    end
    -- the table of the shipped profiles
    for name, p in pairs(default.profiles) do
      local row = page:match("\n%.It " .. name .. " Ta ([^\n]+)")
      assert.is_string(row, "profile " .. name)
      local cells = {}
      for c in (row .. " Ta "):gmatch("(.-) Ta ") do cells[#cells + 1] = c end
      local want = { p.attempts, p.base, p.multiplier, p.min_delay, p.max_delay, p.jitter, p.max_elapsed }
      for i, v in ipairs(want) do
        assert.is_true(same(cells[i], v), ("profile %s column %d: page %s, policy %s"):format(name, i,
          tostring(cells[i]), tostring(v)))
      end
    end
  end)

  it("are installed by cmake --install, and mandoc -T lint reports nothing", function()
    local build = proc.bin:match("^(.*)/[^/]+$")
    local prefix = proc.tmpdir("man-install")
    local code = os.execute(("cmake --install '%s' --prefix '%s' >/dev/null 2>&1"):format(build, prefix))
    assert.is_true(code == 0 or code == true, "cmake --install failed")
    local man = prefix .. "/share/man"
    local pages = man .. "/man1/scimrun.1 " .. man .. "/man5/scimrun-policy.5"
    assert.are.equal(read("man/scimrun.1"), read(man .. "/man1/scimrun.1"))
    assert.are.equal(read("man/scimrun-policy.5"), read(man .. "/man5/scimrun-policy.5"))
    -- the index lets mandoc resolve the pages' references to each other (.Xr)
    os.execute(("PATH=\"$PATH:/usr/sbin\" makewhatis '%s' 2>&1"):format(man))
    local p = io.popen(("mandoc -T lint -W style -M '%s' %s 2>&1; echo \"rc=$?\""):format(man, pages))
    local out = p:read("*a")
    p:close()
    assert.are.equal("rc=0\n", out)
    os.execute("rm -rf '" .. prefix .. "'")
  end)
end)
