-- A server that echoes the bearer token back: in the SCIM error's scimType and detail, and in a
-- redirect to ...?access_token=<token>. Whatever the token's length, it must reach none of the
-- state file, the log, the report, `dlq list --json` or `dlq show`. The server is a small
-- loopback fixture in this process; the binary runs in the background meanwhile.
local cjson = require "cjson"
local hs = require "scimrun.httpserver"
local proc = require "helpers.proc"

local dir = proc.tmpdir("token-echo")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

-- Answers every request as an echoing, unhelpful provider would.
local function echo_server()
  return assert(hs.listen { host = "127.0.0.1", port = 0, handler = function(req)
    local auth = (req.headers or {})["authorization"] or (req.headers or {})["Authorization"] or ""
    local token = auth:match("^Bearer (.+)$") or "?"
    if (req.path or ""):find("/redirected", 1, true) then
      return { status = 400, headers = { ["Content-Type"] = "application/scim+json" }, body = cjson.encode {
        schemas = { "urn:ietf:params:scim:api:messages:2.0:Error" }, status = "400", scimType = token,
        detail = "token " .. token .. " is not allowed here (Authorization: " .. auth .. ")" } }
    end
    if req.method == "POST" then -- a create: sent elsewhere with the token in the query
      return { status = 307, headers = { Location = "/scim/v2/redirected/Users?access_token=" .. token }, body = "" }
    end
    -- lookups find nothing, so every row goes on to a create
    return { status = 200, headers = { ["Content-Type"] = "application/scim+json" }, body = cjson.encode {
      schemas = { "urn:ietf:params:scim:api:messages:2.0:ListResponse" }, totalResults = 0, Resources = {} } }
  end })
end

local function run_bg(args, env) return proc.run_bg(dir, args, env) end

local function every_file_under(path)
  local out, p = {}, io.popen("find " .. path .. " -type f")
  for f in p:lines() do out[#out + 1] = f end
  p:close()
  return out
end

for _, token in ipairs({ "tok-" .. string.rep("9xQ", 8), "k9Zq" }) do
  describe(("a server echoing a %d-character token"):format(#token), function()
    it("never gets it into the state file, log, report or dead-letter queue", function()
      local srv = echo_server()
      local run_dir = ("%s/t%d"):format(dir, #token)
      os.execute("mkdir -p " .. run_dir)
      local state = run_dir .. "/s.db"
      local env = ("SCIM_BASE_URL=http://127.0.0.1:%d/scim/v2 SCIM_TOKEN=%s"):format(srv:port(), token)
      local code, out, err = run_bg(("spec/fixtures/workflows/down.lua --param n=3 --policy fast-test "
        .. "--state %s --report %s/report.json --continue-on-error --log-format json"):format(state, run_dir), env)
      srv:close()
      assert.are.equal(3, code, out .. err) -- every item dead-lettered
      local _, list = proc.run("dlq list --json --state " .. state)
      local entries = cjson.decode(list)
      assert.are.equal(3, #entries)
      local _, show = proc.run(("dlq show %s --state %s"):format(entries[1].id, state))
      assert.matches("REDACTED", list) -- the echo did reach the queue, redacted
      local texts = { out, err, list, show }
      for _, f in ipairs(every_file_under(run_dir)) do texts[#texts + 1] = proc.read_all(f) end
      for i, text in ipairs(texts) do
        assert.is_nil(text:find(token, 1, true), ("the token leaked into output %d: %s"):format(i, text:sub(1, 400)))
      end
    end)
  end)
end
