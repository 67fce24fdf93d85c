-- The SCIM client against scripted answers from the loopback test server
-- (spec/fixtures/test_server.py). Each connection's base URL is /seq/NAME?route=, so every
-- request of a scenario pops the next scripted answer of NAME in order and /stats/NAME shows
-- exactly what was sent (bodies, headers). A recording executor shows op names and URLs.
local ts = require "helpers.test_server"
local http = require "scimrun.http"
local cjson = require "cjson"
local scim = require "scimrun.scim"
local request = require "scimrun.scim.request"

local TOKEN = "functional-secret-7f3a91"
local USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"

describe("SCIM client", function()
  local srv
  local counter = 0

  setup(function() srv = ts.start() end)
  teardown(function() if srv then srv.stop() end end)

  local function script(name, responses)
    local res = assert(http.request { method = "POST", url = srv.url .. "/script/" .. name,
                                      body = cjson.encode { responses = responses } })
    assert.equal(204, res.status)
  end

  local function stats(name)
    local res = assert(http.request { method = "GET", url = srv.url .. "/stats/" .. name })
    return cjson.decode(res.body)
  end

  local function recorder()
    local calls = {}
    return { calls = calls, run = function(_, op, target, fn, opts)
      calls[#calls + 1] = { op = op, target = target, url = opts.url, method = opts.method }
      return fn(1)
    end }
  end

  -- A fresh scenario: scripted answers, a connection whose requests all reach them.
  local function scenario(responses, opts)
    counter = counter + 1
    local name = "scim" .. counter
    script(name, responses)
    local ex = recorder()
    local o = { base_url = srv.url .. "/seq/" .. name .. "?route=", token = TOKEN, discover = false, executor = ex }
    for k, v in pairs(opts or {}) do o[k] = v end
    return scim.connect(o), name, ex
  end

  local function list(resources, extra)
    local body = { schemas = { "urn:ietf:params:scim:api:messages:2.0:ListResponse" },
                   totalResults = #resources, Resources = resources }
    for k, v in pairs(extra or {}) do body[k] = v end
    return { status = 200, body = body }
  end

  local function user(id, name, extra)
    local u = { schemas = { USER_SCHEMA }, id = id, userName = name, active = true }
    for k, v in pairs(extra or {}) do u[k] = v end
    return u
  end

  it("sends SCIM headers, looks up before creating, and names each operation", function()
    local sp, name, ex = scenario { list {}, { status = 201, body = user("u1", 'al"ice') } }
    local u, _, outcome = sp.users:create { userName = 'al"ice', active = true }
    assert.equal("u1", u.id)
    assert.equal("created", outcome)
    local st = stats(name)
    assert.equal(2, st.count)
    local h = st.headers[2]
    assert.equal("application/scim+json", h["content-type"])
    assert.equal("application/scim+json", h["accept"])
    assert.equal("scimrun/" .. scimrun.version, h["user-agent"])
    assert.equal("Bearer " .. TOKEN, h["authorization"])
    local sent = cjson.decode(st.bodies[2])
    assert.same({ USER_SCHEMA }, sent.schemas)
    assert.equal('al"ice', sent.userName)
    assert.equal("users.search", ex.calls[1].op)
    assert.equal("users.create", ex.calls[2].op)
    assert.equal("POST", ex.calls[2].method)
    assert.truthy(ex.calls[1].url:find("filter=userName%20eq%20%22al%5C%22ice%22", 1, true))
    assert.equal(srv.url:match("//(.*)"), ex.calls[1].target)
  end)

  it("lists every extension the body holds in schemas (RFC 7643 section 3), once each", function()
    local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    local mapping = require "scimrun.mapping"
    local attrs = assert(mapping.apply(mapping.load(nil),
      { userName = "dana", email = "dana@example.com", department = "Research" }))
    local sp, name = scenario { list {}, { status = 201, body = user("u1", "dana") } }
    assert(sp.users:create(attrs))
    local sent = cjson.decode(stats(name).bodies[2])
    assert.same({ USER_SCHEMA, ENTERPRISE }, sent.schemas)
    assert.equal("Research", sent[ENTERPRISE].department)
    assert.is_nil(attrs.schemas) -- the caller's table is not changed

    -- a list the caller gives is kept and completed, without duplicates (URNs ignore case); a
    -- null extension is no extension; groups too; and a PUT (replace) as well as a POST
    local GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
    local EXT = "urn:example:params:scim:schemas:extension:acme:2.0:Group"
    local sp2, name2 = scenario {
      { status = 200, body = user("u2", "eve") },
      list {}, { status = 201, body = { schemas = { GROUP_SCHEMA }, id = "g1", displayName = "Ops" } },
      { status = 200, body = user("u3", "fay") },
    }
    assert(sp2.users:replace("u2", { schemas = { USER_SCHEMA, ENTERPRISE:lower() }, userName = "eve",
      [ENTERPRISE] = { department = "Ops" }, ["urn:example:unused"] = cjson.null }))
    assert(sp2.groups:create { displayName = "Ops", [EXT] = { costCode = "7" } })
    assert(sp2.users:replace("u3", { userName = "fay" }))
    local st = stats(name2)
    assert.same({ USER_SCHEMA, ENTERPRISE:lower() }, cjson.decode(st.bodies[1]).schemas)
    assert.same({ GROUP_SCHEMA, EXT }, cjson.decode(st.bodies[3]).schemas)
    assert.same({ USER_SCHEMA }, cjson.decode(st.bodies[4]).schemas)

    -- read-modify-PUT (no PATCH): an operation that adds an extension attribute lists its schema
    local sp3, name3 = scenario {
      { status = 501, body = { status = "501", detail = "no PATCH" } },
      { status = 200, body = user("u4", "gil") }, { status = 200, body = user("u4", "gil") },
    }
    assert(sp3.users:patch("u4", { op = "add", path = ENTERPRISE .. ":department", value = "Lab" }))
    local put = cjson.decode(stats(name3).bodies[3])
    assert.same({ USER_SCHEMA, ENTERPRISE }, put.schemas)
    assert.equal("Lab", put[ENTERPRISE].department)
  end)

  it("treats a search answer with entries that are not resources as an error, never as no match", function()
    for _, bad in ipairs({ { "x", 7 }, { cjson.null }, { user("u9", "bob"), "x" } }) do
      local sp, name = scenario { list(bad), { status = 201, body = user("u1", "bob") } }
      local u, err = sp.users:ensure { userName = "bob" }
      assert.is_nil(u)
      assert.are.same({ "permanent", "bad_response" }, { err.class, err.reason })
      assert.matches("is not a resource", err.detail)
      assert.equal(1, stats(name).count) -- no create was sent
    end
  end)

  it("adopts the existing user when create answers 409 and it matches", function()
    local sp, name = scenario {
      list {}, list {}, -- by userName, then by externalId: nobody
      { status = 409, body = { status = "409", scimType = "uniqueness", detail = "taken" } },
      list { user("u7", "Bob", { externalId = "e-7" }) }, -- by userName, agreeing on externalId
    }
    local u, _, outcome = sp.users:create { userName = "bob", externalId = "e-7" }
    assert.equal("u7", u.id)
    assert.equal("adopted", outcome)
    assert.equal(4, stats(name).count)
  end)

  it("reports a conflict carrying both states when the existing user differs", function()
    local sp = scenario {
      list {}, list {}, { status = 409, body = { status = 409, detail = "taken" } },  -- numeric status, no scimType
      list { user("u8", "bob", { externalId = "other-person" }) }, -- by userName: another externalId
      list {}, -- by externalId: nobody holds e-7
    }
    local u, err = sp.users:create { userName = "bob", externalId = "e-7", password = "s3cret" }
    assert.is_nil(u)
    assert.equal("conflict", err.class)
    assert.equal("users.create", err.op)
    assert.equal("other-person", err.existing.externalId)
    assert.equal("e-7", err.wanted.externalId)
    assert.is_nil(err.wanted.password)
  end)

  it("adopts through before_retry after an outcome-unknown failure", function()
    counter = counter + 1
    local name = "scim" .. counter
    script(name, { list {}, { status = 503, body = { detail = "busy" } },
                   list { user("u9", "carol") } })
    local adopted_by_hook
    local ex = { run = function(_, _, _, fn, opts)
      local r, err = fn(1)
      if r then return r end
      adopted_by_hook = opts.before_retry(err, 2)
      if adopted_by_hook then return adopted_by_hook end
      return fn(2)
    end }
    local sp = scim.connect { base_url = srv.url .. "/seq/" .. name .. "?route=", token = TOKEN,
                              discover = false, executor = ex }
    local u, _, outcome = sp.users:create { userName = "carol" }
    assert.equal("u9", u.id)
    assert.equal("adopted", outcome)
    assert.truthy(adopted_by_hook)
    assert.equal(3, stats(name).count)  -- no second POST
  end)

  it("adopts through the real retry executor without a second POST", function()
    local retry = require "scimrun.resilience.retry"
    local policy = require "scimrun.resilience.policy"
    local ex = retry.executor { policy = policy.load("policies/fast-test.lua") }
    counter = counter + 1
    local name = "scim" .. counter
    script(name, { list {}, { status = 503, body = { detail = "busy" } }, list { user("u10", "dave") } })
    local sp = scim.connect { base_url = srv.url .. "/seq/" .. name .. "?route=", token = TOKEN,
                              discover = false, executor = ex }
    local u, _, outcome = sp.users:create { userName = "dave" }
    assert.equal("u10", u.id)
    assert.equal("adopted", outcome)
    local st = stats(name)
    assert.equal(3, st.count)
    local posts = 0
    for _, b in ipairs(st.bodies) do if b ~= "" then posts = posts + 1 end end
    assert.equal(1, posts)
  end)

  it("refuses an ambiguous lookup", function()
    local sp = scenario { list { user("a", "dup"), user("b", "DUP") } }
    local u, err = sp.users:find("dup")
    assert.is_nil(u)
    assert.equal("permanent", err.class)
    assert.equal("users.search", err.op)
    assert.truthy(err.detail:find("2 users match"))
  end)

  it("compares userName case-insensitively and ignores resources the filter should not return", function()
    local sp = scenario { list { user("x", "someone-else"), user("y", "ALICE") } }
    local u = sp.users:find("alice")
    assert.equal("y", u.id)
  end)

  it("chunks 250 member additions into 100, 100 and 50", function()
    local sp, name, ex = scenario { { status = 204 } }
    local ids = {}
    for i = 1, 250 do ids[i] = "user-" .. i end
    local summary = assert(sp.groups:add_members("g1", ids))
    assert.equal(3, summary.requests)
    local st = stats(name)
    local sizes = {}
    for i, b in ipairs(st.bodies) do
      local body = cjson.decode(b)
      assert.same({ "urn:ietf:params:scim:api:messages:2.0:PatchOp" }, body.schemas)
      assert.equal("add", body.Operations[1].op)
      assert.equal("members", body.Operations[1].path)
      sizes[i] = #body.Operations[1].value
    end
    assert.same({ 100, 100, 50 }, sizes)
    assert.equal("groups.add_member", ex.calls[1].op)
    assert.equal("PATCH", ex.calls[1].method)
  end)

  it("removes members with a value filter path, and splits a chunk on 413", function()
    local sp, name = scenario({ { status = 413, body = { status = "413", detail = "too big" } }, { status = 204 } },
                              { max_members_per_patch = 4 })
    assert(sp.groups:remove_members("g1", { "a", "b", 'c"q', "d" }))
    local st = stats(name)
    assert.equal(3, st.count)
    local first = cjson.decode(st.bodies[1]).Operations
    assert.equal(4, #first)
    assert.equal("remove", first[1].op)
    assert.equal('members[value eq "a"]', first[1].path)
    assert.equal('members[value eq "c\\"q"]', first[3].path)
    assert.equal(2, #cjson.decode(st.bodies[2]).Operations)
    assert.equal(2, #cjson.decode(st.bodies[3]).Operations)
  end)

  it("pages defensively: lying itemsPerPage, duplicates, then an empty page", function()
    local sp, _, ex = scenario {
      list({ user("1", "a"), user("2", "b") }, { totalResults = 500, itemsPerPage = 100 }),
      list({ user("2", "b"), user("3", "c") }, { totalResults = 500, itemsPerPage = 100 }),
      list({}, { totalResults = 500 }),
    }
    local ids = {}
    for u in sp.users:list { page_size = 2 } do ids[#ids + 1] = u.id end
    assert.same({ "1", "2", "3" }, ids)
    assert.equal(3, #ex.calls)
    assert.truthy(ex.calls[1].url:find("startIndex=1&count=2", 1, true))
    assert.truthy(ex.calls[2].url:find("startIndex=3&count=2", 1, true))
    assert.truthy(ex.calls[3].url:find("startIndex=5&count=2", 1, true))
  end)

  it("stops when startIndex passes totalResults, and caps count at maxResults", function()
    local sp, _, ex = scenario {
      { status = 200, body = { patch = { supported = true }, filter = { supported = true, maxResults = 2 } } },
      list({ user("1", "a"), user("2", "b") }, { totalResults = 3 }),
      list({ user("3", "c") }, { totalResults = 3 }),
    }
    sp.discover_enabled = true
    local n = 0
    for _ in sp.users:list { page_size = 50 } do n = n + 1 end
    assert.equal(3, n)
    assert.equal(2, #ex.calls)  -- discovery is a single attempt outside the executor
    assert.truthy(ex.calls[1].url:find("count=2", 1, true))
  end)

  it("stops when a provider ignores startIndex and repeats a page", function()
    local sp = scenario { list({ user("1", "a"), user("2", "b") }, { totalResults = 0 }) }
    local n = 0
    for _ in sp.users:list { page_size = 2 } do n = n + 1 end
    assert.equal(2, n)
  end)

  it("deactivates with a JSON boolean and verifies by reading back", function()
    local sp, name = scenario { { status = 204 }, { status = 200, body = user("u1", "a", { active = false }) } }
    local u, _, outcome = sp.users:deactivate("u1")
    assert.equal("deactivated", outcome)
    assert.is_false(u.active)
    local st = stats(name)
    assert.truthy(st.bodies[1]:find('"value":false', 1, true))
    local sp2 = scenario { { status = 200, body = user("u2", "b") }, { status = 200, body = user("u2", "b") } }
    local r, err = sp2.users:deactivate("u2")
    assert.is_nil(r)
    assert.equal("users.deactivate", err.op)
    assert.truthy(err.detail:find("still reads active=true"))
  end)

  it("switches to read-modify-PUT with If-Match after PATCH answers 501, and retries a 412", function()
    local v1 = user("u1", "a", { title = "old", meta = { version = 'W/"1"' } })
    local v2 = user("u1", "a", { title = "old", meta = { version = 'W/"2"' } })
    -- discovery finds no configuration (404 twice): that must not fail the run
    local sp, name = scenario({
      { status = 404, body = { detail = "no config" } }, { status = 404, body = { detail = "no config" } },
      { status = 501, body = { status = "501", detail = "no PATCH" } },
      { status = 200, body = v1 },
      { status = 412, body = { status = "412", detail = "changed" } },
      { status = 200, body = v2 },
      { status = 200, body = user("u1", "a", { title = "new" }) },
    }, { discover = true })
    local u = assert(sp.users:patch("u1", { { op = "replace", path = "title", value = "new" } }))
    assert.equal("new", u.title)
    local st = stats(name)
    assert.equal(7, st.count)
    assert.is_nil(st.headers[5]["if-match"])  -- discovery failed: ETag support unknown, no If-Match
    local put = cjson.decode(st.bodies[7])
    assert.equal("new", put.title)
    assert.is_nil(put.meta)
  end)

  it("sends If-Match on read-modify-PUT when discovery says ETags are supported", function()
    local sp, name = scenario({
      { status = 200, body = { patch = { supported = false }, etag = { supported = true } } },
      { status = 200, body = user("u1", "a", { meta = { version = 'W/"9"' } }) },
      { status = 200, body = user("u1", "a", { title = "t" }) },
    }, { discover = true })
    assert(sp.users:patch("u1", { op = "replace", path = "title", value = "t" }))
    local st = stats(name)
    assert.equal('W/"9"', st.headers[3]["if-match"])
  end)

  it("follows a 307 keeping method and body", function()
    counter = counter + 1
    local name = "scim" .. counter
    script(name, { { status = 307, headers = { Location = "/echo/moved" }, body = "" } })
    local conn = { base_url = srv.url, token = TOKEN, timeout = 5, user_agent = "t" }
    local res = assert(request.send(conn, { op = "users.create", method = "POST", path = "/seq/" .. name,
                                            body = { userName = "z" } }))
    assert.equal(200, res.status)
    assert.equal("POST", res.json.method)
    assert.equal("/echo/moved", res.json.path)
    assert.equal("z", cjson.decode(res.json.body).userName)
  end)

  it("refuses a redirect to another host (the token would follow)", function()
    local sp = scenario { { status = 308, headers = { Location = "http://203.0.113.9/Users/u1" } } }
    local u, err = sp.users:get("u1")
    assert.is_nil(u)
    assert.equal("permanent", err.class)
    assert.truthy(err.detail:find("another host"))
  end)

  it("returns clear errors for bad bodies, naming the operation and URL", function()
    local sp = scenario {
      { status = 200, content_type = "text/html", body = "<html><title>Sign in</title></html>" },
      { status = 200, body = '{"id": "u1", "userName": "tr' },
      list {}, { status = 201, body = { userName = "no-id" } },
    }
    local _, e1 = sp.users:get("u1")
    assert.equal("users.get", e1.op)
    assert.equal("permanent", e1.class)
    assert.truthy(e1.url:find("/Users/u1", 1, true))
    assert.truthy(e1.detail:find("users.get", 1, true))
    assert.truthy(e1.detail:find("HTML page (Sign in)", 1, true))
    local _, e2 = sp.users:get("u1")
    assert.truthy(e2.detail:find("truncated", 1, true))
    local _, e3 = sp.users:create { userName = "no-id" }
    assert.equal("users.create", e3.op)
    assert.truthy(e3.detail:find("without an id", 1, true))
  end)

  it("parses SCIM error bodies and never leaks the token into an error", function()
    local sp = scenario {
      { status = 400, body = { schemas = { "urn:ietf:params:scim:api:messages:2.0:Error" }, status = "400",
                               scimType = "invalidValue", detail = "bad header Bearer " .. TOKEN },
        headers = { ["Retry-After"] = "7" } },
      { status = 502, content_type = "text/plain", body = "gateway down" },
    }
    local _, err = sp.users:replace("u1", { userName = "x" })
    assert.equal(400, err.status)
    assert.equal("invalidValue", err.scim_type)
    assert.equal("users.replace", err.op)
    assert.equal("PUT", err.method)
    assert.equal(7, err.retry_after)
    local text = cjson.encode(err)
    assert.is_nil(text:find(TOKEN, 1, true))
    assert.is_nil(text:lower():find("authorization", 1, true))
    local _, e2 = sp.users:delete("u1")
    assert.equal(502, e2.status)
    assert.equal("transient", e2.class)
    assert.truthy(e2.detail:find("answered 502", 1, true))
  end)

  it("records writes instead of sending them in a dry run", function()
    local sp, name = scenario({ list {} }, { dry_run = true })
    local u, _, outcome = sp.users:ensure { userName = "dry" }
    assert.equal("dry-run:1", u.id)
    assert.equal("created", outcome)
    assert(sp.groups:add_members("g", { u.id }))
    assert.equal(1, stats(name).count)  -- only the lookup reached the server
    local planned = sp:planned()
    assert.equal(2, #planned)
    assert.equal("users.create", planned[1].op)
    assert.equal("POST", planned[1].method)
    assert.equal("groups.add_member", planned[2].op)
  end)

  it("guards de-provisioning with count and percent thresholds", function()
    local sp = scenario { list({ user("1", "a") }, { totalResults = 100 }) }
    local few = {}
    for i = 1, 5 do few[i] = "id" .. i end
    local plan = assert(sp.users:plan_deprovision(few))
    assert.equal(5, plan.count)
    assert.equal(100, plan.total)
    local many = {}
    for i = 1, 15 do many[i] = "id" .. i end
    local p2, err = sp.users:plan_deprovision(many)
    assert.is_nil(p2)
    assert.equal("users.deprovision", err.op)
    assert.truthy(err.detail:find("15 of 100", 1, true))
    assert.truthy(err.suggest:find("--allow-deletes 15", 1, true))
    assert.equal(15, err.would.count)
    assert.truthy(sp.users:plan_deprovision(many, { allow = 15 }))
    assert.is_nil((sp.users:plan_deprovision(few, { total = 20 })))  -- 25% > 10%
  end)

  -- Renames and identity (issue 17 item 2), updates and the change diff (item 4).
  local ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

  local function patch_ops(st, i)
    local body = cjson.decode(st.bodies[i])
    assert.same({ "urn:ietf:params:scim:api:messages:2.0:PatchOp" }, body.schemas)
    return body.Operations
  end

  it("renames the user whose externalId matches: PATCH userName only, no create", function()
    local old = user("u1", "ada.old", { externalId = "E1", title = "Engineer" })
    local renamed = user("u1", "ada.new", { externalId = "E1", title = "Engineer" })
    local sp, name, ex = scenario { list {}, list { old }, { status = 200, body = renamed } }
    local events = require("scimrun.engine.events").new()
    sp.events = events
    local seen = {}
    events:subscribe(function(ev) if ev.type == "write" then seen[#seen + 1] = ev end end)
    local u, _, outcome = sp.users:ensure { userName = "ada.new", externalId = "E1", title = "Engineer",
                                         password = "hunter2-secret" }
    assert.equal("updated", outcome)
    assert.equal("u1", u.id)
    local st = stats(name)
    assert.equal(3, st.count)
    assert.equal("users.search", ex.calls[1].op)
    assert.truthy(ex.calls[1].url:find("userName", 1, true))
    assert.truthy(ex.calls[2].url:find("externalId%20eq%20%22E1%22", 1, true))
    assert.equal("PATCH", ex.calls[3].method)
    local ops = patch_ops(st, 3)
    assert.same({ { op = "replace", path = "userName", value = "ada.new" } }, ops)
    -- the write as an event: before -> after, and the password never in it
    assert.equal(1, #seen)
    assert.equal("users.patch", seen[1].op)
    assert.equal("updated", seen[1].result)
    assert.equal("ada.new", seen[1].name)
    assert.same({ { attribute = "userName", before = "ada.old", after = "ada.new" } }, seen[1].changes)
    assert.falsy(cjson.encode(seen[1]):find("hunter2", 1, true))
  end)

  it("leaves an unchanged user alone: one lookup, no write", function()
    local have = user("u2", "Bob", { externalId = "E2", title = "Engineer", name = { givenName = "Bob" } })
    local sp, name = scenario { list { have } }
    local u, _, outcome = sp.users:ensure { userName = "bob", externalId = "E2", title = "Engineer",
                                         name = { givenName = "Bob" } }
    assert.equal("skipped", outcome)
    assert.equal("u2", u.id)
    assert.equal(1, stats(name).count)
  end)

  it("sends only the changed attributes, sub-attributes by their path", function()
    local have = user("u3", "carol", { title = "Engineer", name = { givenName = "Carol", familyName = "King" },
                                       [ENTERPRISE] = { department = "R&D", costCenter = "42" } })
    local sp, name = scenario { list { have }, { status = 204 } }
    local u, _, outcome = sp.users:ensure { userName = "carol", title = "Lead",
      name = { givenName = "Caroline", familyName = "King" }, [ENTERPRISE] = { department = "Research" } }
    assert.equal("updated", outcome)
    assert.equal("Caroline", u.name.givenName) -- 204: the answer is computed from the read
    assert.equal("Research", u[ENTERPRISE].department)
    assert.equal("42", u[ENTERPRISE].costCenter)
    assert.same({
      { op = "replace", path = "name.givenName", value = "Caroline" },
      { op = "replace", path = "title", value = "Lead" },
      { op = "replace", path = ENTERPRISE .. ":department", value = "Research" },
    }, patch_ops(stats(name), 2))
  end)

  it("matches by a configurable order; a different externalId under the same userName is a conflict", function()
    -- match = { "userName" }: one lookup, externalId is not looked up, but must agree
    local sp, name = scenario({ list { user("u4", "dan", { externalId = "OTHER" }) } }, { match = { "userName" } })
    local u, err = sp.users:ensure { userName = "dan", externalId = "E4" }
    assert.is_nil(u)
    assert.equal("conflict", err.class)
    assert.equal("OTHER", err.existing.externalId)
    assert.equal(1, stats(name).count)
    -- the same per call: userName first, so externalId is updated
    local sp2, name2 = scenario({ list { user("u5", "erin", { externalId = "OLD" }) }, { status = 204 } })
    local u2, _, outcome = sp2.users:ensure({ userName = "erin", externalId = "E5" },
                                         { match = { "userName", "externalId" } })
    assert.equal("updated", outcome)
    assert.equal("E5", u2.externalId)
    assert.same({ { op = "replace", path = "externalId", value = "E5" } }, patch_ops(stats(name2), 2))
    assert.has_error(function() scenario({}, { match = { "email" } }) end)
    assert.has_error(function() scenario({}, { match = { "userName" }, match_attribute = "userName" }) end)
  end)

  it("after prefetch, finds a renamed user by externalId from memory", function()
    local all = { user("u6", "fay.old", { externalId = "E6" }), user("u7", "gus", { externalId = "E7" }) }
    local sp, name = scenario { list(all, { totalResults = 2 }), list(all), { status = 204 },
                                { status = 200, body = user("u6", "fay.new", { externalId = "E6" }) } }
    assert.equal(2, sp.users:prefetch())
    local u, _, outcome = sp.users:ensure { userName = "fay.new", externalId = "E6" }
    assert.equal("updated", outcome)
    assert.equal("fay.new", u.userName)
    assert.equal(3, stats(name).count) -- count, one page, the PATCH: no lookup
    -- the copy follows the rename, keeping the written user as its id: found again by the new
    -- name with one GET of it, not by the old name
    assert.equal("u6", (sp.users:find_by("userName", "FAY.NEW")).id)
    assert.equal(4, stats(name).count)
    assert.is_nil((sp.users:find_by("userName", "fay.old")))
    assert.equal(4, stats(name).count)
    -- the unchanged prefetched user is still answered from memory
    assert.equal("u7", (sp.users:find_by("externalId", "E7")).id)
    assert.equal(4, stats(name).count)
  end)

  it("reads a response's rate-limit headers whatever their case, and nothing the response lacks", function()
    local retry = require "scimrun.resilience.retry"
    local classify = require "scimrun.resilience.classify"
    script("quota", { { status = 200, body = "{}", headers = { ["X-RateLimit-Remaining"] = "42",
                                                                ["X-RateLimit-Reset"] = "30" } } })
    local res = assert(http.request { url = srv.url .. "/seq/quota" })
    assert.are.same({ 42, 30 }, { retry.server_quota(res.headers, 1700000000) })
    assert.are.equal("42", classify.header_value(res.headers, "x-ratelimit-REMAINING"))
    assert.is_nil(classify.header_value(res.headers, "RateLimit"))
  end)

  it("goes on by userName when the provider refuses filters on externalId", function()
    local sp, name = scenario {
      list {}, { status = 400, body = { status = "400", scimType = "invalidFilter", detail = "no such attribute" } },
      { status = 201, body = user("u8", "hal", { externalId = "E8" }) },
    }
    local u, _, outcome = sp.users:ensure { userName = "hal", externalId = "E8" }
    assert.equal("created", outcome)
    assert.equal("u8", u.id)
    assert.equal(3, stats(name).count)
    assert.is_true(sp.match_unsupported.externalId)
  end)

  it("makes a write event of a request the workflow sends itself through sp:call", function()
    local sp = scenario { { status = 200, body = user("u10", "jo", { title = "X" }) } }
    local events = require("scimrun.engine.events").new()
    sp.events = events
    local seen = {}
    events:subscribe(function(ev) seen[#seen + 1] = ev end)
    assert(sp:call { op = "users.custom", method = "PATCH", path = "/Users/u10",
                     body = { schemas = { "urn:ietf:params:scim:api:messages:2.0:PatchOp" },
                              Operations = { { op = "replace", path = "title", value = "X" } } } })
    assert.equal(1, #seen)
    assert.same({ "write", "users.custom", "users", "u10", "ok" },
                { seen[1].type, seen[1].op, seen[1].resource, seen[1].id, seen[1].result })
    assert.same({ { attribute = "title", after = "X" } }, seen[1].changes)
  end)

  it("plans a dry run's changes with what each attribute holds now", function()
    local have = user("u9", "ivy", { title = "Engineer" })
    local sp, name = scenario({ list { have } }, { dry_run = true })
    local _, _, outcome = sp.users:ensure { userName = "ivy", title = "Lead" }
    assert.equal("updated", outcome)
    assert.equal(1, stats(name).count) -- the lookup only
    local planned = scim.planned_all()
    local found
    for _, p in ipairs(planned) do
      if p.summary:find("/Users/u9", 1, true) then found = p end
    end
    assert.truthy(found)
    assert.truthy(found.summary:find('title: "Engineer" -> "Lead"', 1, true), found.summary)
  end)

  it("accepts a 0600 token file and refuses one others can read", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("file-token-abc\n")
    f:close()
    os.execute("chmod 644 '" .. path .. "'")
    local ok, msg = pcall(scim.connect, { base_url = srv.url, token_file = path })
    assert.is_false(ok)
    assert.truthy(tostring(msg):find("chmod 600", 1, true))
    os.execute("chmod 600 '" .. path .. "'")
    local sp = scim.connect { base_url = srv.url, token_file = path }
    assert.equal("file-token-abc", sp.conn.token)
    os.remove(path)
    assert.has_error(function() scim.connect { base_url = srv.url, token = "x", bogus = 1 } end)
    assert.has_error(function() scim.connect { base_url = "ftp://x", token = "x" } end)
  end)
end)
