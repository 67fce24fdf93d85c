-- A throwaway PostgreSQL cluster for specs: initdb into a fresh directory, a server listening
-- only on a Unix socket in a short directory under /tmp, fsync off; stop() removes it all.
--
--   local pg_cluster = require "helpers.pg_cluster"
--   assert(pg_cluster.available())          -- true | false, reason (the suite requires it)
--   local c = pg_cluster.start()            -- raises with the server log when it cannot start
--   c.url                                   -- postgres://postgres@/postgres?host=SOCKDIR&port=PORT
--   local url = c.createdb("store_a")       -- a fresh database, its URL
--   c.stop()                                -- immediate shutdown, directories removed (idempotent)
--   c.stop_server()                         -- the database goes away (pg_ctl -m fast), data kept
--   c.start_server()                        -- back on the same socket and port (c.url stays valid)
--
-- Also c.dir, c.socket_dir, c.port, c.bin. initdb refuses to run as root: as root the cluster
-- runs as the `postgres` OS user (runuser), which owns both directories. A cluster a spec forgot
-- to stop is stopped when c is collected or the Lua state closes (busted_runner exits with
-- os.exit(code, true)): keep c, not only c.url, for as long as the server is needed.
local proc = require "helpers.proc"

local M = {}

local q = proc.sh_quote

local function ok(status) return status == 0 or status == true end

local function is_root() return proc.sh("id -u"):match("%d+") == "0" end

-- The newest installed server's bin directory (/usr/lib/postgresql/N/bin), or nil.
local function bin_dir()
  local dir = proc.sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1"):match("[^\n]+")
  if dir and ok(os.execute("test -x " .. q(dir .. "/initdb") .. " -a -x " .. q(dir .. "/pg_ctl"))) then
    return dir
  end
  return nil
end

-- true, or false and why a cluster cannot be started here.
function M.available()
  if not bin_dir() then
    return false, "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (package postgresql)"
  end
  if is_root() then
    if not ok(os.execute("id postgres >/dev/null 2>&1")) then
      return false, "running as root and there is no postgres OS user to run the server as"
    end
    if not ok(os.execute("command -v runuser >/dev/null 2>&1")) then
      return false, "running as root and runuser (util-linux) is missing"
    end
  end
  return true
end

-- Runs a shell command (as postgres when root), from `cwd` (the server's user may not be able to
-- enter the caller's directory); returns true when it exits 0.
local function run(root, cwd, cmd)
  local full = root and ("runuser -u postgres -- sh -c " .. q(cmd)) or cmd
  return ok(os.execute(("cd %s && %s"):format(q(cwd), full)))
end

-- As root, lets the postgres user reach `dir`: every ancestor it cannot traverse gets o+x.
local function make_reachable(dir)
  local path = dir:match("^(.*)/[^/]+$")
  while path and path ~= "" do
    if not ok(os.execute("runuser -u postgres -- test -x " .. q(path) .. " 2>/dev/null")) then
      os.execute("chmod o+x " .. q(path))
    end
    path = path:match("^(.*)/[^/]+$")
  end
end

local function tail(path, n)
  return proc.sh(("tail -n %d %s 2>/dev/null"):format(n or 20, q(path)))
end

function M.start()
  local usable, why = M.available()
  if not usable then error("cannot start PostgreSQL: " .. why, 2) end
  local bin = bin_dir()
  local root = is_root()
  local dir = proc.tmpdir("pg")
  if dir:sub(1, 1) ~= "/" then dir = proc.sh("pwd"):match("[^\n]+") .. "/" .. dir end -- commands run from dir
  -- Unix socket paths are limited to 107 bytes: the socket lives in a short directory.
  local sockdir = proc.sh("mktemp -d /tmp/pgXXXXXX"):match("[^\n]+")
  assert(sockdir, "mktemp -d /tmp/pgXXXXXX failed")
  os.execute(("chmod 755 %s %s"):format(q(dir), q(sockdir)))
  if root then
    os.execute(("chown postgres: %s %s"):format(q(dir), q(sockdir)))
    make_reachable(dir)
  end
  local data, log = dir .. "/data", dir .. "/log"
  local function remove_dirs() os.execute(("rm -rf %s %s"):format(q(dir), q(sockdir))) end

  local initdb = ("%s/initdb -D %s -A trust -U postgres -E UTF8 --locale=C --no-sync >%s 2>&1")
    :format(q(bin), q(data), q(dir .. "/initdb.log"))
  if not run(root, dir, initdb) then
    local out = tail(dir .. "/initdb.log")
    remove_dirs()
    error("initdb failed:\n" .. out, 2)
  end

  local function start_cmd(try)
    local opts = ("-k %s -c listen_addresses='' -p %d -c fsync=off -c synchronous_commit=off "
      .. "-c full_page_writes=off"):format(sockdir, try)
    return ("%s/pg_ctl -D %s -l %s -o %s -w -t 30 start >/dev/null 2>&1"):format(q(bin), q(data), q(log), q(opts))
  end
  local port
  for _ = 1, 5 do
    local try = math.random(20000, 60000)
    if run(root, dir, start_cmd(try)) then
      port = try
      break
    end
  end
  if not port then
    local out = tail(log)
    remove_dirs()
    error("pg_ctl start failed (5 ports tried):\n" .. out, 2)
  end

  local c = { dir = dir, socket_dir = sockdir, port = port, bin = bin }
  local function url_for(db) return ("postgres://postgres@/%s?host=%s&port=%d"):format(db, sockdir, port) end
  c.url = url_for("postgres")

  local stopped = false
  function c.stop()
    if stopped then return end
    stopped = true
    run(root, dir, ("%s/pg_ctl -D %s -m immediate stop >/dev/null 2>&1"):format(q(bin), q(data)))
    remove_dirs()
  end

  -- The server stops as a DBA's `pg_ctl -m fast stop` stops it (sessions are closed, the
  -- socket goes away); the data stays for start_server(), on the same socket and port.
  function c.stop_server()
    assert(not stopped, "stop_server: the cluster was removed")
    if not run(root, dir, ("%s/pg_ctl -D %s -m fast -w -t 60 stop >/dev/null 2>&1"):format(q(bin), q(data))) then
      error("pg_ctl stop failed:\n" .. tail(log), 2)
    end
  end

  function c.start_server()
    assert(not stopped, "start_server: the cluster was removed")
    if not run(root, dir, start_cmd(port)) then error("pg_ctl start failed:\n" .. tail(log), 2) end
  end

  -- A fresh database named `name` (letters, digits, _); returns its URL.
  function c.createdb(name)
    assert(type(name) == "string" and name:match("^[%a_][%w_]*$"), "createdb: a plain identifier")
    local cmd = ("%s/createdb -h %s -p %d -U postgres %s 2>&1"):format(q(bin), q(sockdir), port, name)
    local p = io.popen(cmd .. "; echo \"exit=$?\"")
    local out = p:read("*a")
    p:close()
    assert(out:match("exit=0%s*$"), "createdb " .. name .. " failed: " .. out)
    return url_for(name)
  end

  -- The safety net: stop when the Lua state closes, should the spec not have.
  local guard = newproxy(true)
  getmetatable(guard).__gc = function() c.stop() end
  c._guard = guard
  return c
end

return M
