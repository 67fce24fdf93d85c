-- Starts spec/fixtures/test_server.py (an independent loopback HTTP server) for a spec.
-- local ts = require "helpers.test_server"; local srv = ts.start(); srv.url .. "/echo"; srv:stop()
local M = {}

local proc = require "helpers.proc"

function M.start()
  local port, pid = proc.start_listening("ts", function(port_file)
    return "python3 spec/fixtures/test_server.py --port 0 --port-file " .. proc.sh_quote(port_file)
  end, "test server did not start (is python3 installed? run scripts/install-deps.sh)", 10)
  local srv = { url = "http://127.0.0.1:" .. port, port = tonumber(port), pid = pid }
  function srv.stop()
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  end
  return srv
end

return M
