-- ListResponse parsing and defensive paging (RFC 7644 §3.4.2.4).
-- Providers get paging wrong in many ways, so the iterator:
--   * advances startIndex by the number of resources received (itemsPerPage is never trusted),
--   * stops on an empty page, when startIndex passes a believable totalResults, when a page
--     brings nothing new (a provider ignoring startIndex), or at the page guard,
--   * yields each id once, and caps count at ServiceProviderConfig filter.maxResults.
local cjson = require "cjson"
local request = require "scimrun.scim.request"

local M = {}

local function bad(req, res, what)
  return nil, request.error({ op = req.op, url = res.url, method = req.method },
    { status = res.status, class = "permanent", reason = "bad_response", headers = res.headers,
      detail = ("%s: %s %s answered %d with %s"):format(req.op, req.method, res.url, res.status, what) })
end

-- Resources of a ListResponse: array, totalResults (number or nil) | nil, err.
function M.resources(req, res)
  if res.bad_body then return bad(req, res, res.bad_body) end
  local json = res.json
  if type(json) ~= "table" then return bad(req, res, "no ListResponse body") end
  local total = tonumber(json.totalResults)
  local items = json.Resources
  if items == nil or items == cjson.null then
    if total == nil or total == 0 or res.status == 204 then return {}, total end
    return bad(req, res, ("totalResults %s but no Resources"):format(tostring(json.totalResults)))
  end
  if type(items) ~= "table" then return bad(req, res, "Resources that is not an array") end
  -- An entry that is not a resource (a string, a number, null) is a broken answer, never "no
  -- match": taken as no match, a lookup before a create would make a duplicate.
  local out, n = {}, 0
  for k in pairs(items) do
    if type(k) ~= "number" then return bad(req, res, "Resources that is not an array") end
    if k > n then n = k end
  end
  for i = 1, n do
    local r = items[i]
    if type(r) ~= "table" or r == cjson.null then
      return bad(req, res, ("Resources[%d] that is not a resource (%s)"):format(i, r == cjson.null and "null"
        or type(r)))
    end
    out[i] = r
  end
  return out, total
end

-- Iterator over all pages. opts: filter, page_size, attributes, excluded_attributes, max_pages.
-- A failed page raises its error table (for r in sp.users:list{} do ... end inside pcall/steps).
function M.iterate(res_api, feats, opts)
  local sp = res_api.sp
  local op = res_api.name .. ".search"
  local size = opts.page_size or sp.page_size
  if feats.max_results and size > feats.max_results then size = feats.max_results end
  local excluded = opts.excluded_attributes
  if excluded == nil and opts.attributes == nil then excluded = res_api.kind.search_excludes end
  local max_pages = opts.max_pages or sp.max_pages
  local start, pages, received = 1, 0, 0
  local seen, buffer, pos, done = {}, {}, 1, false

  local function fetch()
    pages = pages + 1
    if pages > max_pages then
      local l = rawget(_G, "scimrun") and scimrun.log
      if l then l.emit("warn", "list stopped at the page guard", { op = op, pages = max_pages }) end
      done = true
      return
    end
    local q = { { "filter", opts.filter }, { "attributes", opts.attributes },
                { "excludedAttributes", excluded }, { "startIndex", start }, { "count", size } }
    local res, err, req = res_api:_call(op, "GET", res_api.endpoint, q)
    if not res then
      if err.status == 404 and opts.filter then done = true return end
      error(err, 0)
    end
    local items, total = M.resources(req, res)
    if not items then error(total, 0) end
    buffer, pos = {}, 1
    if #items == 0 then done = true return end
    local fresh = 0
    for _, r in ipairs(items) do
      local id = r.id
      if id == nil or id == cjson.null then
        buffer[#buffer + 1] = r  -- cannot de-duplicate without an id; still the caller's data
        fresh = fresh + 1
      elseif not seen[tostring(id)] then
        seen[tostring(id)] = true
        buffer[#buffer + 1] = r
        fresh = fresh + 1
      end
    end
    received = received + #items
    start = start + #items
    if fresh == 0 then done = true return end
    -- totalResults is believed only when it is consistent with what already arrived.
    if total and total >= received and start > total then done = true end
  end

  return function()
    while true do
      if pos <= #buffer then
        local r = buffer[pos]
        pos = pos + 1
        return r
      end
      if done then return nil end
      fetch()
    end
  end
end

return M
