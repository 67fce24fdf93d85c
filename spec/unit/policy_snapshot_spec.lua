-- The run's policy snapshot (lua/scimrun/resilience/policy_snapshot.lua) without the binary: values
-- survive JSON exactly, functions come back from the stored source text, equal policies have
-- equal hashes, and a snapshot without functions carries no source.
local cjson = require "cjson"
local policy = require "scimrun.resilience.policy"
local S = require "scimrun.resilience.policy_snapshot"
local proc = require "helpers.proc"

local write = proc.write

local function roundtrip(pol)
  local json = S.encode(S.take(pol, "start"))
  return assert(S.decode(json)), json
end

describe("policy snapshot", function()
  local dir
  setup(function() dir = proc.tmpdir("snapunit") end)

  it("keeps the merged values (after extends) and restores an equal policy", function()
    local path = dir .. "/values.lua"
    write(path, 'return { extends = "fast-test", profiles = { quick = { attempts = 3, base = 0.25 } },\n'
      .. '  operations = { ["users.*"] = "quick" },\n'
      .. '  classify = { { name = "hdr", header = { "X-Busy", "y.s" }, class = "transient" },\n'
      .. '               { name = "range", status = { min = 520, max = 529 }, class = "transient" },\n'
      .. '               { name = "list", status = { 502, 503 }, kind = { "timeout", "reset" },\n'
      .. '                 class = "transient" } } }\n')
    local pol = policy.load(path)
    local snap, json = roundtrip(pol)
    assert.is_nil(snap.sources) -- no function: no source text kept
    assert.are.same({}, snap.functions)
    assert.is_nil(json:find("fast%-test with tiny delays")) -- not the files' text
    os.remove(path)

    local r = S.restore(snap)
    assert.are.equal(3, r.profiles.quick.attempts)
    assert.are.equal(0.25, r.profiles.quick.base)
    assert.are.equal("exponential", r.profiles.quick.backoff) -- filled by the schema before the snapshot
    assert.are.equal(0.5, r.breaker.cooldown) -- from fast-test
    assert.are.same({ "X-Busy", "y.s" }, r.classify[1].header)
    assert.are.same({ min = 520, max = 529 }, r.classify[2].status)
    assert.are.same({ 502, 503 }, r.classify[3].status)
    -- the layered operation map survives: the extending file's users.* first
    assert.are.equal("quick", select(2, policy.profile_for(r, "users.create")))
    assert.are.equal("balanced", select(2, policy.profile_for(r, "groups.patch")))
    assert.are.equal(path, r.file)
    -- a policy restored from a snapshot snapshots to the same values
    assert.are.equal(snap.sha256, S.take(r, "x").sha256)
  end)

  it("marks functions and takes them back from the stored text of each file of the chain", function()
    local path = dir .. "/fns.lua"
    write(path, 'local n = 0\n'
      .. 'return { extends = "fast-test",\n'
      .. '  profiles = { paced = { attempts = 4, delay = function(retry) return retry * 0.5 end } },\n'
      .. '  classify = { { name = "teapot", class = "transient",\n'
      .. '                 when = function(err) return err.status == 418 end } },\n'
      .. '  dead_letter = { on_dead_letter = function(entry) n = n + 1; return entry.step_key end } }\n')
    local pol = policy.load(path)
    local snap, json = roundtrip(pol)
    local names = {}
    for i, p in ipairs(snap.functions) do names[i] = S.path_name(p) end
    table.sort(names)
    assert.are.same({ "classify[1].when", "dead_letter.on_dead_letter", "profiles.paced.delay" }, names)
    assert.is_truthy(json:find('"$function"', 1, true))
    assert.are.equal(3, #snap.sources) -- fns.lua -> fast-test.lua -> default.lua
    assert.are.equal(path, snap.sources[1].file)

    write(path, "error('the file changed')\n") -- the snapshot does not read it again
    local r = S.restore(snap)
    assert.are.equal(1.5, r.profiles.paced.delay(3))
    assert.is_true(r.classify[1].when { status = 418 })
    assert.is_false(r.classify[1].when { status = 503 })
    assert.are.equal("user:x", r.dead_letter.on_dead_letter { step_key = "user:x" })
    assert.are.equal(4, r.profiles.paced.attempts)
    local ex = require("scimrun.resilience.retry").executor { policy = r, log = false }
    assert.is_table(ex)
  end)

  it("refuses, naming the key, when the stored text no longer makes a function there", function()
    local path = dir .. "/gone.lua"
    write(path, 'return { extends = "fast-test", dead_letter = { on_dead_letter = function() end } }\n')
    local snap = roundtrip(policy.load(path))
    snap.sources[1].text = 'return { extends = "fast-test" }\n'
    local ok, err = pcall(S.restore, snap)
    assert.is_false(ok)
    assert.are.equal("config", err.class)
    assert.matches("dead_letter%.on_dead_letter", tostring(err))
    assert.matches("%-%-policy", tostring(err))
  end)

  it("is deterministic: the same policy loaded twice has the same text and hash", function()
    local a, b = S.take(policy.load("fast-test"), "start"), S.take(policy.load("fast-test"), "start")
    a.taken_at, b.taken_at = 0, 0
    assert.are.equal(S.encode(a), S.encode(b))
    assert.are.equal(a.sha256, b.sha256)
    assert.are_not.equal(a.sha256, S.take(policy.load("default"), "start").sha256)
    assert.is_nil(S.decode("not json"))
    assert.is_nil(S.decode(cjson.encode { v = 99, values = {} }))
  end)

  it("describes itself in a few lines for `runs show`", function()
    local lines = S.lines(S.take(policy.load("fast-test"), "start"))
    local text = table.concat(lines, "\n")
    assert.matches("^policy%s+fast%-test, sha256 %x+, snapshot taken at start", text)
    assert.matches("files%s+/.*policies/fast%-test%.lua %-> /.*policies/default%.lua", text)
    assert.matches("balanced: 5 attempts, exponential backoff 0%.01s", text)
    assert.matches("timeouts%s+connect=2 request=5 step=30", text)
    assert.is_true(#lines < 25)
  end)
end)
