-- Starts spec/fixtures/test_server.py (an independent loopback HTTP server) for a spec.
-- local ts = require "helpers.test_server"; local srv = ts.start(); srv.url .. "/echo"; srv:stop()
local M = {}

local function tmpdir()
  local dir = os.getenv("SCIMRUN_TEST_TMP") or "/tmp"
  os.execute("mkdir -p '" .. dir .. "'")
  return dir
end

function M.start()
  local dir = tmpdir()
  local port_file = ("%s/ts-%d-%d.port"):format(dir, os.time(), math.random(1, 1e9))
  local pid_file = port_file .. ".pid"
  os.remove(port_file)
  local cmd = ("python3 spec/fixtures/test_server.py --port 0 --port-file '%s' >/dev/null 2>&1 & echo $! > '%s'")
    :format(port_file, pid_file)
  os.execute(cmd)
  local deadline = scimrun.now() + 10
  local port
  while scimrun.now() < deadline do
    local f = io.open(port_file)
    if f then port = f:read("*l"); f:close() end
    if port then break end
    scimrun.sleep(0.05)
  end
  local pf = io.open(pid_file)
  local pid = pf and pf:read("*l")
  if pf then pf:close() end
  os.remove(pid_file)
  os.remove(port_file)
  assert(port, "test server did not start (is python3 installed? run scripts/install-deps.sh)")
  local srv = { url = "http://127.0.0.1:" .. port, port = tonumber(port), pid = pid }
  function srv.stop()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  return srv
end

return M
