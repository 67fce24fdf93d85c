-- The embedded SCIM sandbox through its real HTTP server, as a provisioning client meets it.
local sandbox = require "scimrun.sandbox"
local http = require "scimrun.http"
local cjson = require "cjson"

local USER = "urn:ietf:params:scim:schemas:core:2.0:User"
local GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
local PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
local ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

local function http_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

describe("sandbox over HTTP", function()
  local srv, root

  local function call(method, path, body, headers, opts)
    headers = headers or {}
    if headers.Authorization == nil then headers.Authorization = "Bearer " .. srv.token end
    if headers.Authorization == false then headers.Authorization = nil end
    if body ~= nil and type(body) ~= "string" then
      body = cjson.encode(body)
      headers["Content-Type"] = "application/scim+json"
    end
    local url = (path:sub(1, 7) == "/_admin" and root or srv.url) .. path
    local res, msg, kind = http.request({ method = method, url = url, headers = headers, body = body,
      timeout = (opts and opts.timeout) or 10 })
    if not res then return nil, { kind = kind, message = msg } end
    local doc = res.body ~= "" and cjson.decode(res.body) or nil
    return res, doc
  end

  local function create_user(name, extra)
    local body = { schemas = { USER }, userName = name, name = { givenName = "G", familyName = name }, active = true,
      emails = { { value = name .. "@example.com", type = "work", primary = true } } }
    for k, v in pairs(extra or {}) do body[k] = v end
    local res, doc = call("POST", "/Users", body)
    assert.are.equal(201, res.status, res.body)
    return doc, res
  end

  before_each(function()
    srv = assert(sandbox.start({ port = 0, token = "spec-token" }))
    root = srv.url:gsub("/scim/v2$", "")
  end)
  after_each(function() srv.close() end)

  it("creates, finds, patches and deletes a user with the SCIM status codes", function()
    local user, res = create_user("bjensen")
    assert.matches("^application/scim%+json", res.headers["content-type"])
    assert.are.equal(srv.url .. "/Users/" .. user.id, res.headers.location)
    assert.are.equal('W/"1"', res.headers.etag)
    assert.are.same({ USER }, user.schemas)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", user.id)
    assert.are.equal("User", user.meta.resourceType)
    assert.are.equal(res.headers.location, user.meta.location)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", user.meta.created)

    local _, list = call("GET", "/Users?filter=" .. http_escape('userName eq "bjensen"'))
    assert.are.equal(1, list.totalResults)
    assert.are.equal(user.id, list.Resources[1].id)

    local pres, patched = call("PATCH", "/Users/" .. user.id,
      { schemas = { PATCH }, Operations = { { op = "replace", path = "active", value = false } } })
    assert.are.equal(200, pres.status)
    assert.is_false(patched.active)
    assert.are.equal('W/"2"', pres.headers.etag)
    assert.are.equal(user.meta.created, patched.meta.created)

    local _, got = call("GET", "/Users/" .. user.id)
    assert.is_false(got.active)

    local dres = call("DELETE", "/Users/" .. user.id)
    assert.are.equal(204, dres.status)
    assert.are.equal("", dres.body)
    local gres, gone = call("GET", "/Users/" .. user.id)
    assert.are.equal(404, gres.status)
    assert.are.same({ ERROR }, gone.schemas)
    assert.are.equal("404", gone.status)
  end)

  it("answers 409 uniqueness for a userName that differs only in case", function()
    create_user("Alice@Example.com")
    local res, err = call("POST", "/Users", { schemas = { USER }, userName = "alice@example.COM" })
    assert.are.equal(409, res.status)
    assert.are.equal("uniqueness", err.scimType)
    local _, found = call("GET", "/Users?filter=" .. http_escape('userName eq "ALICE@EXAMPLE.COM"'))
    assert.are.equal(1, found.totalResults)
    call("POST", "/Groups", { schemas = { GROUP }, displayName = "Admins" })
    local gres, gerr = call("POST", "/Groups", { schemas = { GROUP }, displayName = "admins" })
    assert.are.equal(409, gres.status)
    assert.are.equal("uniqueness", gerr.scimType)
  end)

  it("refuses a string where active must be a boolean, on create and on patch", function()
    local res, err = call("POST", "/Users", { schemas = { USER }, userName = "x", active = "False" })
    assert.are.equal(400, res.status)
    assert.are.equal("invalidValue", err.scimType)
    assert.matches("active", err.detail)
    local user = create_user("y")
    res, err = call("PATCH", "/Users/" .. user.id,
      { schemas = { PATCH }, Operations = { { op = "Replace", path = "active", value = "False" } } })
    assert.are.equal(400, res.status)
    assert.are.equal("invalidValue", err.scimType)
    local _, still = call("GET", "/Users/" .. user.id)
    assert.is_true(still.active)
  end)

  it("answers 400 with the right scimType for bad requests and 404 for unknown routes", function()
    local cases = {
      { "POST", "/Users", { schemas = { USER }, name = { givenName = "x" } }, 400, "invalidValue" },
      { "POST", "/Users", "{not json", 400, "invalidSyntax" },
      { "GET", "/Users?filter=" .. http_escape("userName eq"), nil, 400, "invalidFilter" },
      { "GET", "/Users?startIndex=abc", nil, 400, "invalidValue" },
      { "GET", "/Widgets", nil, 404, nil },
      { "DELETE", "/Users", nil, 405, nil },
    }
    for _, c in ipairs(cases) do
      local res, doc = call(c[1], c[2], c[3])
      assert.are.equal(c[4], res.status, c[1] .. " " .. c[2] .. ": " .. res.body)
      assert.are.equal(c[5], doc.scimType, c[2])
      assert.are.same({ ERROR }, doc.schemas)
    end
  end)

  it("requires the bearer token", function()
    local res, doc = call("GET", "/Users", nil, { Authorization = false })
    assert.are.equal(401, res.status)
    assert.are.same({ ERROR }, doc.schemas)
    assert.matches("Bearer", res.headers["www-authenticate"])
    res = call("GET", "/Users", nil, { Authorization = "Bearer wrong-token" })
    assert.are.equal(401, res.status)
    res = call("GET", "/_admin/stats", nil, { Authorization = false })
    assert.are.equal(401, res.status)
  end)

  it("pages through a filtered list with startIndex and count", function()
    for i = 1, 5 do create_user("page" .. i) end
    create_user("other")
    local seen = {}
    for _, page in ipairs({ { 1, 2 }, { 3, 2 }, { 5, 2 } }) do
      local _, doc = call("GET", ("/Users?filter=%s&startIndex=%d&count=%d")
        :format(http_escape('userName sw "page"'), page[1], page[2]))
      assert.are.equal(5, doc.totalResults)
      assert.are.equal(page[1], doc.startIndex)
      assert.are.equal(#doc.Resources, doc.itemsPerPage)
      for _, r in ipairs(doc.Resources) do
        assert.is_nil(seen[r.userName])
        seen[r.userName] = true
      end
    end
    for i = 1, 5 do assert.is_true(seen["page" .. i]) end
    local _, none = call("GET", "/Users?count=0")
    assert.are.equal(6, none.totalResults)
    assert.are.equal(0, none.itemsPerPage)
  end)

  it("honours If-Match and answers 412 for a stale version", function()
    local user = create_user("etag")
    local res = call("PATCH", "/Users/" .. user.id,
      { schemas = { PATCH }, Operations = { { op = "replace", path = "title", value = "a" } } },
      { ["If-Match"] = 'W/"1"' })
    assert.are.equal(200, res.status)
    local stale, err = call("PUT", "/Users/" .. user.id, { schemas = { USER }, userName = "etag" },
      { ["If-Match"] = 'W/"1"' })
    assert.are.equal(412, stale.status)
    assert.are.equal('W/"2"', stale.headers.etag, err.detail)
    local del = call("DELETE", "/Users/" .. user.id, nil, { ["If-Match"] = 'W/"2"' })
    assert.are.equal(204, del.status)
  end)

  it("keeps group membership consistent with users", function()
    local a, b = create_user("a"), create_user("b")
    local bad, err = call("POST", "/Groups",
      { schemas = { GROUP }, displayName = "G", members = { { value = "nope" } } })
    assert.are.equal(400, bad.status)
    assert.are.equal("invalidValue", err.scimType)
    local res, g = call("POST", "/Groups", { schemas = { GROUP }, displayName = "G", members = { { value = a.id } } })
    assert.are.equal(201, res.status)
    res = call("PATCH", "/Groups/" .. g.id,
      { schemas = { PATCH }, Operations = { { op = "add", path = "members", value = { { value = b.id } } } } })
    assert.are.equal(204, res.status) -- membership PATCHes answer 204, as Okta/Entra-style providers do
    assert.truthy(res.headers.ETag)
    local _, ua = call("GET", "/Users/" .. a.id)
    assert.are.equal(g.id, ua.groups[1].value)
    call("DELETE", "/Users/" .. a.id)
    local _, after = call("GET", "/Groups/" .. g.id)
    assert.are.equal(1, #after.members)
    assert.are.equal(b.id, after.members[1].value)
    local _, slim = call("GET", "/Groups?excludedAttributes=members")
    assert.is_nil(slim.Resources[1].members)
    assert.are.equal("G", slim.Resources[1].displayName)
  end)

  it("commits a request whose response a lost fault drops", function()
    local fres = call("POST", "/_admin/faults", { spec = "lost:1", seed = 5 })
    assert.are.equal(200, fres.status)
    local res, err = call("POST", "/Users", { schemas = { USER }, userName = "ghost" })
    assert.is_nil(res)
    assert.is_truthy(err.kind)
    call("POST", "/_admin/faults", { spec = "" })
    local _, dump = call("GET", "/_admin/dump")
    assert.are.equal(1, #dump.users)
    assert.are.equal("ghost", dump.users[1].userName)
    local _, stats = call("GET", "/_admin/stats")
    assert.are.equal(1, stats.faults.lost)
    assert.are.equal(1, stats.by_status["POST 201 lost"])
  end)

  it("commits nothing for a reset fault and times out on a hang", function()
    call("POST", "/_admin/faults", { spec = "reset:1" })
    local res = call("POST", "/Users", { schemas = { USER }, userName = "never" })
    assert.is_nil(res)
    call("POST", "/_admin/faults", { spec = "hang:1@for=2s" })
    local hres, herr = call("GET", "/Users", nil, nil, { timeout = 0.3 })
    assert.is_nil(hres)
    assert.are.equal("timeout", herr.kind)
    call("POST", "/_admin/faults", { spec = "" })
    local _, dump = call("GET", "/_admin/dump")
    assert.are.equal(0, #dump.users)
  end)

  it("answers injected statuses as SCIM errors with Retry-After", function()
    local bad = call("POST", "/_admin/faults", { spec = "429:2" })
    assert.are.equal(400, bad.status)
    call("POST", "/_admin/faults", { spec = "429:1@retry-after=3" })
    local res, doc = call("GET", "/Users")
    assert.are.equal(429, res.status)
    assert.are.equal("3", res.headers["retry-after"])
    assert.are.same({ ERROR }, doc.schemas)
    local _, stats = call("GET", "/_admin/stats")
    assert.are.equal(1, stats.faults["429"])
    assert.are.equal(1, stats.by_status["GET 429"])
  end)

  it("serves the discovery endpoints", function()
    local _, spc = call("GET", "/ServiceProviderConfig")
    assert.is_true(spc.patch.supported)
    assert.is_true(spc.filter.supported)
    assert.are.equal(200, spc.filter.maxResults)
    assert.is_false(spc.bulk.supported)
    assert.is_true(spc.etag.supported)
    local _, rts = call("GET", "/ResourceTypes")
    assert.are.equal(2, rts.totalResults)
    local _, schemas = call("GET", "/Schemas")
    assert.are.equal(USER, schemas.Resources[1].id)
  end)
end)

describe("sandbox persistence", function()
  it("reloads users and groups from its snapshot file", function()
    local file = os.tmpname()
    os.remove(file)
    local srv = assert(sandbox.start({ port = 0, token = "t", persist = file }))
    local res = http.request({ method = "POST", url = srv.url .. "/Users", headers = { Authorization = "Bearer t" },
      body = cjson.encode({ schemas = { USER }, userName = "kept" }) })
    assert.are.equal(201, res.status)
    local id = cjson.decode(res.body).id
    srv.close()
    local again = assert(sandbox.start({ port = 0, token = "t", persist = file }))
    local got = http.request({ url = again.url .. "/Users/" .. id, headers = { Authorization = "Bearer t" } })
    again.close()
    os.remove(file)
    assert.are.equal(200, got.status)
    assert.are.equal("kept", cjson.decode(got.body).userName)
  end)

  it("refuses a corrupt snapshot with a clear message", function()
    local file = os.tmpname()
    local f = io.open(file, "w")
    f:write("{broken")
    f:close()
    local srv, err = sandbox.start({ port = 0, persist = file })
    os.remove(file)
    assert.is_nil(srv)
    assert.matches("cannot read the sandbox snapshot", err)
  end)
end)
