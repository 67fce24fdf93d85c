-- One SCIM HTTP attempt: headers, JSON body, 307/308 redirects, response parsing and the error
-- table (DESIGN.md error contract). No retries here: the executor (scimrun.resilience.retry) owns them.
--   request.send(conn, req) -> res {status, headers, json, body, etag} | nil, err
--   conn: {base_url, token, headers, timeout, connect_timeout, insecure, ca_file, user_agent}
--   req.timeout (optional) shortens this attempt's timeout (the running step's deadline)
--   req:  {op, method, path (relative to base_url) | url, query, body (Lua table), if_match}
-- err.headers never holds Authorization (request headers are never copied into an error) and
-- err.detail is passed through the log redactor, so a server echoing the token cannot leak it.
local http = require "scimrun.http"
local utf8_check = require "scimrun.input.utf8_check"
local httpdate = require "scimrun.httpdate"
local cjson = require "cjson"

local M = {}

M.CONTENT_TYPE = "application/scim+json"
local MAX_REDIRECTS = 5
local DETAIL_MAX = 300

local function redact(s)
  if s == nil then return nil end
  s = tostring(s)
  if #s > DETAIL_MAX then s = s:sub(1, DETAIL_MAX) .. "..." end
  local log = rawget(_G, "scimrun") and scimrun.log
  if log and log.redact then return log.redact(s) end
  return s
end
M.redact = redact

-- Response headers safe to keep in an error (and so in the dead-letter queue).
local DROP_HEADERS = { authorization = true, ["proxy-authorization"] = true, ["set-cookie"] = true,
                       cookie = true }
local function safe_headers(h)
  local out = {}
  for k, v in pairs(h or {}) do
    if type(k) == "string" and not DROP_HEADERS[k:lower()] then out[k:lower()] = v end
  end
  return out
end

-- Retry-After: delta-seconds or an HTTP-date (scimrun.httpdate, libcurl's parser); returns
-- seconds from now (>= 0) or nil.
function M.retry_after(v)
  if v == nil then return nil end
  v = tostring(v)
  local n = tonumber(v)
  if n then return math.max(0, n) end
  local at = httpdate.parse(v)
  if not at then return nil end
  return math.max(0, at - os.time())
end

-- Builds an error table; `f` supplies status/detail/kind/...; ctx supplies op/url/method.
function M.error(ctx, f)
  local err = {
    -- no class here: scimrun.resilience.classify with the policy's rules is the one classifier (the
    -- executor, or SP:call without one); only what this layer knows for sure comes preset
    class = f.class,
    status = f.status, scim_type = f.scim_type, detail = redact(f.detail), kind = f.kind,
    suggest = f.suggest, op = ctx.op, url = ctx.url, method = ctx.method,
    headers = f.headers and safe_headers(f.headers) or nil, retry_after = f.retry_after,
    reason = f.reason,
  }
  return err
end

local function html_title(body)
  local title = body:match("<[Tt][Ii][Tt][Ll][Ee]>%s*(.-)%s*</[Tt][Ii][Tt][Ll][Ee]>")
  return title
end

-- Decodes a JSON body; returns value or nil, reason. An empty body is (nil, nil).
function M.decode(body)
  if body == nil or body:match("^%s*$") then return nil, nil end
  local ok, v = pcall(cjson.decode, body)
  if not ok then
    local title = body:find("^%s*<") and html_title(body)
    if title then return nil, "an HTML page (" .. title .. ") instead of JSON" end
    if body:find("^%s*[%[{]") then return nil, "truncated or malformed JSON" end
    return nil, "a non-JSON body"
  end
  return v
end

local function str(v)
  if v == nil or v == cjson.null then return nil end
  if type(v) == "table" then return nil end
  return tostring(v)
end

-- Extracts status/scimType/detail from a SCIM 2.0 (or 1.1 "Errors") error body.
local function scim_error_fields(json)
  if type(json) ~= "table" then return nil, nil end
  local scim_type, detail = str(json.scimType), str(json.detail)
  if not detail and type(json.Errors) == "table" and type(json.Errors[1]) == "table" then
    detail = str(json.Errors[1].description)
  end
  detail = detail or str(json.message) or str(json.error_description) or str(json.error)
  return scim_type, detail
end

local function origin(url)
  local scheme, host = url:match("^(https?)://([^/?#]+)")
  if not scheme then return nil end
  return scheme:lower(), host:lower()
end

local function resolve(base, loc)
  if loc:find("^https?://") then return loc end
  local scheme, host = base:match("^(https?)://([^/?#]+)")
  if loc:sub(1, 1) == "/" then return scheme .. "://" .. host .. loc end
  local dir = base:match("^(.*/)") or (base .. "/")
  return dir .. loc
end

-- A redirect may change the path or upgrade http to https on the same host; a redirect to
-- another host is refused because the bearer token would follow it.
local function same_host(from, to)
  local s1, h1 = origin(from)
  local s2, h2 = origin(to)
  if not s2 or h1 ~= h2 then return false end
  return s1 == s2 or (s1 == "http" and s2 == "https")
end

function M.url_for(conn, req)
  return req.url or (conn.base_url .. (req.path or "") .. (req.query or ""))
end

-- --check sends nothing: a collection or search reads as empty, anything else as not found.
local function offline_answer(ctx, req, url)
  local path = (req.path or url):gsub("[?#].*$", "")
  if req.method == "GET" and not path:find("^/?[^/]+/[^/]+$") then
    return { status = 200, headers = {}, url = url, body = "",
             json = { schemas = { "urn:ietf:params:scim:api:messages:2.0:ListResponse" }, totalResults = 0,
                      itemsPerPage = 0, startIndex = 1, Resources = {} } }
  end
  return nil, M.error(ctx, { status = 404, class = "permanent", reason = "offline",
                             detail = ("%s %s not sent: --check sends nothing"):format(req.method, url) })
end

function M.send(conn, req)
  local url = M.url_for(conn, req)
  local ctx = { op = req.op, url = url, method = req.method }
  if conn.offline then return offline_answer(ctx, req, url) end
  local headers = {
    ["Accept"] = M.CONTENT_TYPE,
    ["User-Agent"] = conn.user_agent,
  }
  for k, v in pairs(conn.headers or {}) do headers[k] = v end
  if conn.token then headers["Authorization"] = "Bearer " .. conn.token end
  local body
  if req.body ~= nil then
    body = cjson.encode(req.body)
    -- JSON on the wire is UTF-8 (RFC 8259 8.1); bytes in another encoding would be stored
    -- garbled or refused by the server, so they are refused here, before anything is sent.
    local at = utf8_check.invalid_at(body)
    if at then
      return nil, M.error(ctx, { class = "permanent", reason = "bad_request_body",
                                 detail = ("the %s body is not valid UTF-8 (byte %d of the JSON)")
                                   :format(req.op or req.method, at),
                                 suggest = "convert the input to UTF-8 (e.g. iconv -f latin1 -t utf-8)" })
    end
    headers["Content-Type"] = M.CONTENT_TYPE
  end
  if req.if_match then headers["If-Match"] = req.if_match end
  local res
  for _ = 0, MAX_REDIRECTS do
    local tmsg, tkind
    res, tmsg, tkind = http.request { method = req.method, url = url, headers = headers, body = body,
                               timeout = math.min(conn.timeout, req.timeout or math.huge),
                               connect_timeout = conn.connect_timeout, insecure = conn.insecure,
                               ca_file = conn.ca_file }
    if not res then
      return nil, M.error(ctx, { kind = tkind or "other", detail = tmsg or "transport failure",
                                 reason = "transport" })
    end
    if res.status ~= 307 and res.status ~= 308 then break end
    local loc = res.headers["location"]
    if not loc then
      return nil, M.error(ctx, { status = res.status, headers = res.headers, class = "permanent",
                                 reason = "bad_response",
                                 detail = ("%s %s answered %d without a Location header")
                                   :format(req.method, url, res.status) })
    end
    local nxt = resolve(url, loc)
    if not same_host(url, nxt) then
      return nil, M.error(ctx, { status = res.status, headers = res.headers, class = "permanent",
                                 reason = "redirect_refused",
                                 detail = "redirect to another host refused: " .. nxt,
                                 suggest = "set base_url to the new location if it is trusted" })
    end
    url = nxt
    ctx.url = url
    res = nil
  end
  if not res then
    return nil, M.error(ctx, { class = "permanent", reason = "redirect_loop",
                               detail = "more than " .. MAX_REDIRECTS .. " redirects" })
  end
  local json, why = M.decode(res.body)
  local out = { status = res.status, headers = res.headers, json = json, body = res.body,
                bad_body = why, url = url, etag = res.headers["etag"] }
  if res.status >= 200 and res.status < 300 then return out end
  local scim_type, detail = scim_error_fields(json)
  if not detail then
    if why then
      detail = ("%s %s answered %d with %s"):format(req.method, url, res.status, why)
    else
      detail = ("%s %s answered %d"):format(req.method, url, res.status)
    end
  end
  local f = { status = res.status, scim_type = scim_type, detail = detail, headers = res.headers,
              retry_after = M.retry_after(res.headers["retry-after"]) }
  if res.status >= 300 and res.status < 400 then
    f.class = "permanent"
    f.reason = "redirect_refused"
    f.suggest = "the server moved (" .. tostring(res.headers["location"]) .. "): update base_url"
  end
  return nil, M.error(ctx, f)
end

-- For a 2xx answer that must carry a resource: returns json or nil, err naming op and URL.
function M.need_resource(req, res)
  local ctx = { op = req.op, url = res.url, method = req.method }
  local what
  if res.bad_body then
    what = res.bad_body
  elseif type(res.json) ~= "table" then
    what = "no body"
  elseif str(res.json.id) == nil then
    what = "a resource without an id"
  end
  if what then
    return nil, M.error(ctx, { status = res.status, class = "permanent", reason = "bad_response",
                               headers = res.headers,
                               detail = ("%s: %s %s answered %d with %s"):format(req.op, req.method,
                                 res.url, res.status, what),
                               suggest = "the service provider's answer is not SCIM; report it to its vendor" })
  end
  return res.json
end

return M
