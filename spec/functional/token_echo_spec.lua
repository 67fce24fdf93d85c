-- A server that echoes the bearer token back: in the SCIM error's scimType and detail, and in a
-- redirect to ...?access_token=<token>. Whatever the token's length, it must reach none of the
-- state file, the log, the report, `dlq list --json` or `dlq show`. The server is a small
-- loopback fixture in this process (helpers.echo_server); the binary runs in the background
-- meanwhile.
local cjson = require "cjson"
local echo_server = require("helpers.echo_server").start
local proc = require "helpers.proc"

local dir = proc.tmpdir("token-echo")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

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
