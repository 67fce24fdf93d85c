-- HTTP for tasks: a thin layer over the C transport (runtime/http_client.c).
-- http.request{method, url, headers, body, timeout, connect_timeout, max_size, insecure, ca_file}
--   -> res {status, headers, body, total_time} | nil, err {kind, code, message, url, method}
-- res.headers is looked up case-insensitively.
local transport = require "scimrun._http"

local M = {}

local headers_mt = {
  __index = function(t, k)
    if type(k) == "string" then return rawget(t, k:lower()) end
  end,
}

function M.request(opts)
  if type(opts) ~= "table" then error("http.request expects a table of options", 2) end
  local res, err = transport.request(opts)
  if res then setmetatable(res.headers, headers_mt) end
  return res, err
end

function M.inflight() return transport.inflight() end

return M
