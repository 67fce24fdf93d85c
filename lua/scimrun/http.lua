-- HTTP for tasks: a thin layer over the C transport (runtime/http_client.c).
-- http.request{method, url, headers, body, timeout, connect_timeout, max_size, insecure, ca_file}
--   -> res {status, headers, body, total_time} | nil, message, kind (the runtime's error contract:
--      nil, message, code; kind is timeout, connect, reset, dns, tls, too_large or other)
-- res.headers is looked up case-insensitively.
local transport = require "scimrun._http"

local M = {}

-- A response's header names are lower-cased by the transport: any case finds them, and a
-- reader that knows this table (__lowercase_keys) need not scan it for another spelling.
local headers_mt = {
  __index = function(t, k)
    if type(k) == "string" then return rawget(t, k:lower()) end
  end,
  __lowercase_keys = true,
}

function M.request(opts)
  if type(opts) ~= "table" then error("http.request expects a table of options", 2) end
  local res, msg, kind = transport.request(opts)
  if not res then return nil, msg, kind end
  setmetatable(res.headers, headers_mt)
  return res
end

function M.inflight() return transport.inflight() end

return M
