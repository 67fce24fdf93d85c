-- `scimrun sandbox` as a user runs it: prints URL and token, serves, stops cleanly on a signal.
local proc = require "helpers.proc"
local http = require "scimrun.http"
local cjson = require "cjson"

-- Starts `scimrun sandbox ARGS` in the background; returns { pid, out, err, rc } file paths.
local function launch(dir, args, env)
  local p = { out = dir .. "/out.txt", err = dir .. "/err.txt", rc = dir .. "/rc.txt", pidfile = dir .. "/pid.txt" }
  local inner = ("%s%s sandbox %s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s")
    :format(env and (env .. " ") or "", proc.bin, args, p.out, p.err, p.pidfile, p.rc)
  os.execute(("sh -c '%s' >/dev/null 2>&1 &"):format(inner:gsub("'", "'\\''")))
  local deadline = scimrun.now() + 10
  while scimrun.now() < deadline do
    p.pid = proc.read_all(p.pidfile):match("%d+")
    p.url = proc.read_all(p.out):match("url:%s+(%S+)")
    if p.pid and p.url then break end
    scimrun.sleep(0.05)
  end
  p.token = proc.read_all(p.out):match("token:%s+(%S+)")
  return p
end

local function exit_code(p, timeout)
  local deadline = scimrun.now() + (timeout or 10)
  while scimrun.now() < deadline do
    local rc = proc.read_all(p.rc):match("%d+")
    if rc then return tonumber(rc) end
    scimrun.sleep(0.05)
  end
end

describe("scimrun sandbox", function()
  local dir
  before_each(function() dir = proc.tmpdir("sandbox-cli") end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("prints its URL and a generated token, serves SCIM, and exits 0 on SIGINT", function()
    local p = launch(dir, "--port 0 --seed 3")
    assert.is_truthy(p.url, proc.read_all(p.out) .. proc.read_all(p.err))
    assert.matches("^http://127%.0%.0%.1:%d+/scim/v2$", p.url)
    assert.matches("^%x+$", p.token)
    local res = http.request({ method = "POST", url = p.url .. "/Users",
      headers = { Authorization = "Bearer " .. p.token },
      body = cjson.encode({ schemas = { "urn:ietf:params:scim:schemas:core:2.0:User" }, userName = "cli-user" }) })
    assert.are.equal(201, res.status, res.body)
    local unauth = http.request({ url = p.url .. "/Users" })
    assert.are.equal(401, unauth.status)
    os.execute("kill -INT " .. p.pid)
    assert.are.equal(0, exit_code(p))
    local err = proc.read_all(p.err)
    assert.matches("POST /scim/v2/Users %-> 201", err)
    assert.matches("stopped after 2 requests", err)
  end)

  it("takes the token from SCIM_TOKEN without echoing it, and stops on SIGTERM", function()
    local p = launch(dir, "--port 0 --faults 503:1@writes --quiet", "SCIM_TOKEN=env-secret-123")
    assert.is_truthy(p.url, proc.read_all(p.err))
    assert.not_matches("env%-secret%-123", proc.read_all(p.out))
    local res = http.request({ url = p.url .. "/Users", headers = { Authorization = "Bearer env-secret-123" } })
    assert.are.equal(200, res.status)
    local w = http.request({ method = "DELETE", url = p.url .. "/Users/x",
      headers = { Authorization = "Bearer env-secret-123" } })
    assert.are.equal(503, w.status)
    os.execute("kill -TERM " .. p.pid)
    assert.are.equal(0, exit_code(p))
    assert.not_matches("GET /scim", proc.read_all(p.err))
  end)

  it("refuses a bad fault spec with exit code 2, naming the token", function()
    local code, _, err = proc.run("sandbox --port 0 --faults '503:0.1,explode:0.2'")
    assert.are.equal(2, code)
    assert.matches("bad fault 'explode:0.2'", err)
    code, _, err = proc.run("sandbox --port 99999")
    assert.are.equal(2, code)
    assert.matches("%-%-port must be an integer from 0 to 65535", err)
  end)
end)
