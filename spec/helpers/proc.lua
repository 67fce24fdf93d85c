-- Running the scimrun binary from specs: foreground with captured output and exit code, or
-- in the background to be killed at a random instant; and the small file and shell helpers
-- specs share (write, read_all, sh, tmpdir, count).
local M = {}

M.bin = os.getenv("SCIMRUN_BIN") or "./build/scimrun"

-- A fresh directory. Its name comes from mkstemp (os.tmpname): math.random is not seeded, so
-- suites running at once (ctest -j2) drew the same numbers and shared, then removed, each
-- other's directories.
function M.tmpdir(tag)
  local base = os.getenv("SCIMRUN_TEST_TMP") or "/tmp"
  local unique = os.tmpname()
  os.remove(unique)
  local dir = ("%s/%s-%s"):format(base, tag or "spec", unique:match("[^/]+$"))
  os.execute("mkdir -p '" .. dir .. "'")
  return dir
end

local function read_all(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end
M.read_all = read_all

-- Writes text to path (replacing it); returns path.
function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- The number of keys of a table.
function M.count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- The standard output of a shell command.
function M.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

-- Runs `scimrun ARGS` (a shell-quoted string) with optional env assignments; returns exit code,
-- stdout, stderr. Blocks the calling task (fine in specs: the binary is a separate process).
function M.run(args, env)
  local out = os.tmpname()
  local err = os.tmpname()
  local prefix = env and (env .. " ") or ""
  local cmd = ("%s%s %s >%s 2>%s; echo $?"):format(prefix, M.bin, args, out, err)
  local p = io.popen(cmd)
  local code = tonumber(p:read("*l"))
  p:close()
  local so, se = read_all(out), read_all(err)
  os.remove(out)
  os.remove(err)
  return code, so, se
end

-- Runs `scimrun ARGS` without blocking the calling task (an in-process server must keep
-- answering meanwhile): outputs go to files under dir; returns exit code, stdout, stderr.
function M.run_bg(dir, args, env, timeout)
  local base = ("%s/run-%d"):format(dir, math.random(1, 1e9))
  os.execute(("(%s %s %s >%s.out 2>%s.err; echo $? >%s.tmp; mv %s.tmp %s.code) &"):format(env or "", M.bin, args,
    base, base, base, base, base))
  local deadline = scimrun.now() + (timeout or 60)
  while scimrun.now() < deadline do
    local f = io.open(base .. ".code")
    if f then
      local code = tonumber(f:read("*l"))
      f:close()
      return code, read_all(base .. ".out"), read_all(base .. ".err")
    end
    scimrun.sleep(0.02)
  end
  error("scimrun " .. args .. " did not finish in " .. (timeout or 60) .. " s")
end

-- The dead letters of a state file (`scimrun dlq list --json`), decoded; raises unless it exits 0.
function M.dlq(state)
  local code, out, err = M.run("dlq list --json --state " .. state)
  assert(code == 0, ("dlq list exited %s: %s%s"):format(tostring(code), out, err))
  return require("cjson").decode(out)
end

-- Starts `scimrun ARGS` in the background; returns its pid.
function M.spawn(args, env, log)
  local pidfile = os.tmpname()
  local prefix = env and (env .. " ") or ""
  os.execute(("%s%s %s >>%s 2>&1 & echo $! >%s"):format(prefix, M.bin, args, log or "/dev/null", pidfile))
  local pid = read_all(pidfile):match("%d+")
  os.remove(pidfile)
  return pid
end

-- A killed orphan may linger as a zombie until init reaps it: that counts as gone.
function M.alive(pid)
  local p = io.popen("ps -o stat= -p " .. pid .. " 2>/dev/null")
  local stat = p:read("*l")
  p:close()
  return stat ~= nil and not stat:match("^%s*Z")
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.sh_quote = sh_quote

-- Starts a loopback server in the background. `command(port_file)` returns its shell command;
-- the server writes its port to port_file once it listens. Returns port, pid; raises `hint`
-- when no port appears in time.
function M.start_listening(tag, command, hint, timeout)
  local dir = os.getenv("SCIMRUN_TEST_TMP") or "/tmp"
  os.execute("mkdir -p " .. sh_quote(dir))
  local port_file = ("%s/%s-%d-%d.port"):format(dir, tag, os.time(), math.random(1, 1e9))
  local pid_file = port_file .. ".pid"
  os.execute(command(port_file) .. " >/dev/null 2>&1 & echo $! > " .. sh_quote(pid_file))
  local deadline = scimrun.now() + (timeout or 15)
  local port
  while scimrun.now() < deadline do
    port = read_all(port_file):match("%d+")
    if port then break end
    scimrun.sleep(0.05)
  end
  local pid = read_all(pid_file):match("%d+")
  os.remove(pid_file)
  os.remove(port_file)
  assert(port, hint)
  return tonumber(port), pid
end

-- Waits (yielding) until the process is gone or the timeout passes; returns true if gone.
function M.wait_gone(pid, timeout)
  local deadline = scimrun.now() + (timeout or 30)
  while scimrun.now() < deadline do
    if not M.alive(pid) then return true end
    scimrun.sleep(0.02)
  end
  return false
end

return M
