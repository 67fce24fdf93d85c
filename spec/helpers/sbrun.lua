-- For specs that run the scimrun binary against a sandbox living in the spec process: the
-- child runs in the background while this task yields, so the in-process sandbox keeps
-- answering. The server's own records are read through its admin endpoints; those of the
-- sandbox a `--sandbox` run starts inside the binary from its journal (M.journal).
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"

local M = {}

local write = proc.write

-- The saga fixture (spec/fixtures/workflows/saga.lua) under the fast-test policy.
function M.saga_args(state, extra)
  return "spec/fixtures/workflows/saga.lua --policy fast-test --state " .. state .. " " .. (extra or "")
end

-- Steps of a run (the newest when no id is given), read back from the state file.
function M.steps(state, run_id)
  local db = assert(require("scimrun.store").open(state, { readonly = true }))
  local run = run_id and db:run_get(run_id) or db:runs_list { limit = 1 }[1]
  local out = db:steps_load(run.id)
  db:close()
  return out, run
end

-- Starts an embedded SCIM provider on a loopback port with a known token.
-- opts: persist (journal file), faults, seed. Returns srv {url, token, sb, close}.
function M.sandbox(opts)
  opts = opts or {}
  local token = opts.token or ("spec-token-" .. require("scimrun.sandbox").random_token())
  local srv = assert(require("scimrun.sandbox").start { port = 0, token = token, persist = opts.persist,
    faults = opts.faults, seed = opts.seed })
  srv.env = ("SCIM_BASE_URL=%s SCIM_TOKEN=%s"):format(srv.url, srv.token)
  return srv
end

local function admin(srv, method, name, body)
  local base = srv.url:gsub("/scim/v2$", "")
  local res = assert(http.request { method = method, url = base .. "/_admin/" .. name,
    headers = { Authorization = "Bearer " .. srv.token, ["Content-Type"] = "application/json" },
    body = body and cjson.encode(body) or nil })
  assert(res.status == 200, "admin " .. name .. " answered " .. res.status .. ": " .. res.body)
  return cjson.decode(res.body)
end

function M.dump(srv) return admin(srv, "GET", "dump") end
function M.stats(srv) return admin(srv, "GET", "stats") end
-- Empties the provider and clears its faults: each spec starts from the same server.
function M.fresh(srv)
  srv.sb:reset()
  M.faults(srv, nil)
end

function M.faults(srv, spec, seed)
  return admin(srv, "POST", "faults", { spec = spec or cjson.null, seed = seed or 1 })
end

-- Rotates the provider's SCIM token (nil: revokes it); the old one is refused from then on,
-- answered `status` (401, or 403 for a token without the scope). The admin endpoints keep
-- srv.token; M.fresh restores it for SCIM too. Returns the env string for the new token.
function M.set_token(srv, token, status)
  admin(srv, "POST", "token", { token = token or cjson.null, status = status })
  return ("SCIM_BASE_URL=%s SCIM_TOKEN=%s"):format(srv.url, token or "revoked")
end

-- Users by userName and the member ids of the group named `group` (or nil).
function M.state(srv, group)
  local d = M.dump(srv)
  local users, members = {}, nil
  for _, u in ipairs(d.users) do users[u.userName] = u end
  for _, g in ipairs(d.groups) do
    if g.displayName == group then
      members = {}
      for _, m in ipairs(type(g.members) == "table" and g.members or {}) do members[m.value] = true end
    end
  end
  return users, members, d
end

-- The records of the sandbox of a `--sandbox` run with --state STATE, from its journal
-- (STATE.sandbox.json): the arrays of its users and of its groups.
function M.journal(state)
  local st = assert(require("scimrun.sandbox.store").new { persist = state .. ".sandbox.json" })
  local users, groups = st:list("Users"), st:list("Groups")
  st:close()
  return users, groups
end

-- Starts `scimrun ARGS` in the background. Returns a handle {pid, log, rc}.
function M.spawn(args, env)
  local dir = proc.tmpdir("bg")
  local h = { log = dir .. "/out.log", rcfile = dir .. "/rc", pidfile = dir .. "/pid" }
  local script = dir .. "/run.sh"
  write(script, ("echo $$ > %s\nexec env %s %s %s > %s 2>&1\n"):format(h.pidfile, env or "", proc.bin, args, h.log))
  os.execute(("(sh %s; echo $? > %s) >/dev/null 2>&1 &"):format(script, h.rcfile))
  local deadline = scimrun.now() + 5
  while scimrun.now() < deadline do
    local pid = proc.read_all(h.pidfile):match("%d+")
    if pid then h.pid = pid; break end
    scimrun.sleep(0.01)
  end
  assert(h.pid, "the child did not start")
  return h
end

-- Waits (yielding) for the child to end; returns exit code (137 after SIGKILL) and output.
function M.wait(h, timeout)
  local deadline = scimrun.now() + (timeout or 60)
  while scimrun.now() < deadline do
    local rc = proc.read_all(h.rcfile):match("%d+")
    if rc then return tonumber(rc), proc.read_all(h.log) end
    scimrun.sleep(0.02)
  end
  os.execute("kill -9 " .. h.pid .. " 2>/dev/null")
  error("scimrun did not finish within " .. tostring(timeout or 60) .. "s; output:\n" .. proc.read_all(h.log))
end

-- Runs `scimrun ARGS` to the end without blocking the loop; returns code, output.
function M.run(args, env, timeout)
  return M.wait(M.spawn(args, env), timeout)
end

-- Waits until the child's output matches `pattern`; returns true, or false on timeout/exit.
function M.wait_output(h, pattern, timeout)
  local deadline = scimrun.now() + (timeout or 20)
  while scimrun.now() < deadline do
    if proc.read_all(h.log):find(pattern) then return true end
    if proc.read_all(h.rcfile):match("%d+") then return proc.read_all(h.log):find(pattern) ~= nil end
    scimrun.sleep(0.01)
  end
  return false
end

function M.signal(h, sig) os.execute(("kill -%s %s"):format(sig, h.pid)) end

-- True when `needle` occurs literally in the file (binary-safe).
function M.file_contains(path, needle)
  local f = io.open(path, "rb")
  if not f then return false end
  local s = f:read("*a")
  f:close()
  return s:find(needle, 1, true) ~= nil
end

return M
