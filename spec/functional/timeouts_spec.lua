-- Every documented timeout has an effect: timeouts.connect on a listener that never accepts,
-- timeouts.step over a server that sends nothing back, and a request timeout below a
-- millisecond (libcurl reads 0 as "no timeout": it must not become one). The bounds asserted
-- are generous multiples of the knob, far below what the run took when the knob was ignored.
local proc = require "helpers.proc"

local dir = proc.tmpdir("timeouts")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local cwd = io.popen("pwd"):read("*l")
local function policy(name, timeouts, extra)
  local path = ("%s/%s.lua"):format(dir, name)
  local f = assert(io.open(path, "w"))
  f:write(('return { extends = "%s/policies/fast-test.lua", timeouts = %s, %s }\n'):format(cwd, timeouts,
    extra or "profiles = { balanced = { attempts = 1 } }"))
  f:close()
  return path
end

local function timed_run(args, env)
  local t0 = scimrun.now()
  local code, out, err = proc.run(args, env)
  return code, out .. err, scimrun.now() - t0
end

-- A TCP listener whose accept queue is full and that never accepts: a connect hangs.
local function black_hole()
  local port_file = dir .. "/bh.port"
  os.execute(("python3 -c '%s' %s >/dev/null 2>&1 &"):format([[
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
fill = []
for _ in range(8):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(s.getsockname())
    except BlockingIOError: pass
    fill.append(c)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(60)
]], port_file))
  for _ = 1, 100 do
    local f = io.open(port_file)
    local port = f and tonumber(f:read("*a"))
    if f then f:close() end
    if port then return port end
    scimrun.sleep(0.05)
  end
  error("the black-hole listener did not start")
end

describe("timeouts", function()
  it("connect: a listener that never accepts fails the attempt after timeouts.connect", function()
    local port = black_hole()
    local code, out, took = timed_run(("spec/fixtures/workflows/down.lua --param n=1 --state %s/c.db --policy %s")
      :format(dir, policy("connect", "{ connect = 1, request = 30 }")),
      ("SCIM_BASE_URL=http://127.0.0.1:%d/scim/v2 SCIM_TOKEN=t0ken-for-spec"):format(port))
    assert.are.equal(1, code, out)
    assert.matches("timeout", out)
    assert.is_true(took < 6, ("took %.1fs with connect = 1 (the old fixed 10 s?)"):format(took))
  end)

  it("step: bounds a step with every attempt, below the request timeout", function()
    local code, out, took = timed_run(("spec/fixtures/workflows/down.lua --param n=1 --state %s/s.db "
      .. "--sandbox='hang:1@for=60s' --policy %s"):format(dir, policy("step", "{ request = 8, step = 1 }",
      "profiles = { balanced = { attempts = 5 } }")))
    assert.are.equal(1, code, out)
    assert.is_true(took < 5, ("a 1 s step took %.1fs (request = 8, 5 attempts)"):format(took))
  end)

  it("request: below a millisecond is a tiny timeout, not none", function()
    local code, out, took = timed_run(("spec/fixtures/workflows/down.lua --param n=1 --state %s/r.db "
      .. "--sandbox='latency:2s' --policy %s"):format(dir, policy("request", "{ request = 0.0001 }")))
    assert.are.equal(1, code, out)
    assert.matches("timeout", out)
    assert.is_true(took < 1.9, ("took %.1fs: the 2 s answer was awaited"):format(took))
  end)
end)
