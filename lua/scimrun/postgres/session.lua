-- The PostgreSQL store's connection: opening it, the settings each session needs, and
-- surviving its loss. A query that fails because the connection broke resets it (backoff
-- from 0.25 s, doubling, about 30 s in all, one warn line per attempt) and runs once more;
-- a transaction is run again whole, unless the break came during COMMIT (then whether it was
-- recorded is unknown, and the caller is told so). The session's advisory locks die with the
-- connection, so they are taken again after a reset, or the reset fails with "LOCKED".
local core = require "scimrun.core"
local ffi = require "ffi"
local pg = require "scimrun.pg"
local schema = require "scimrun.postgres.schema"
local url = require "scimrun.postgres.url"

pcall(ffi.cdef, "int usleep(unsigned int usec);")
pcall(ffi.cdef, "int getpid(void);")

local M = {}
local S = {}
S.__index = S

M.RECONNECT_FIRST = 0.25 -- seconds before the second attempt; doubles after each
M.RECONNECT_TOTAL = 30   -- seconds of waiting before giving up

-- Blocks the whole process outside a task (the group commit runs at the end of a loop turn);
-- inside one, only the task waits.
local function sleep(seconds)
  if core.is_task() then
    scimrun.sleep(seconds)
    return
  end
  local left = seconds
  while left > 0 do
    local step = math.min(left, 0.5) -- usleep may refuse a second or more (POSIX)
    ffi.C.usleep(math.floor(step * 1e6))
    left = left - step
  end
end

local function log(level, msg, fields)
  if scimrun and scimrun.log then scimrun.log.emit(level, msg, fields) end
end

-- Hints for the failures an operator can fix, by SQLSTATE class or code.
local HINTS = {
  ["53100"] = "; free disk space on the database server, then resume the run",
  ["42501"] = "; grant the database user the rights it needs on schema scimrun",
  ["25006"] = "; the database is read-only (a standby, or the store was opened readonly)",
  ["57P01"] = "; the server is shutting down",
}

local clean = schema.clean_error

-- o: url (no password), readonly, durability_normal. Returns a session | nil, err, code.
function M.connect(o)
  local self = setmetatable({ url = o.url, readonly = o.readonly, normal = o.durability_normal,
    locks = {}, lock_order = {} }, S)
  -- A connect with no timeout could hang the whole loop on an unreachable host; the
  -- application name lets an operator (and lock_run's message) tell which process holds what.
  local extra = {}
  if not url.has_param(o.url, "connect_timeout") then extra[#extra + 1] = { "connect_timeout", "10" } end
  extra[#extra + 1] = { "fallback_application_name", ("scimrun%%20pid%%20%d"):format(ffi.C.getpid()) }
  local conn, err = pg.connect(url.with_params(o.url, extra))
  if not conn then
    return nil, ("state database %s: cannot connect: %s"):format(o.url, clean(err)), "CONNECTION"
  end
  self.conn = conn
  local ok, serr, code = self:setup()
  if not ok then
    conn:close()
    return nil, serr, code
  end
  return self
end

-- What every new session needs, after connect and after a reset.
function S:setup()
  local sql = {}
  if self.normal then sql[#sql + 1] = "SET synchronous_commit = off" end
  if self.readonly then sql[#sql + 1] = "SET default_transaction_read_only = on" end
  if #sql > 0 then
    local ok, err, state = self.conn:exec_script(table.concat(sql, ";\n"))
    if not ok then
      return nil, self:message("session setup", err), state == "CONNECTION" and state or "PG_" .. tostring(state)
    end
  end
  for i, run_id in ipairs(self.lock_order) do
    local got, err, state = self:try_lock(run_id)
    if got == nil then return nil, self:message("taking the lock of run " .. run_id .. " again", err), state end
    if not got then
      -- Another process runs it now: every later write of this session is refused.
      self.lock_lost = ("state database %s: the connection was lost and run %s was taken by another process "
        .. "meanwhile; this process stops writing it"):format(self.url, run_id)
      self.locks[run_id] = nil
      table.remove(self.lock_order, i)
      return nil, self.lock_lost, "LOCKED"
    end
  end
  return true
end

-- The session advisory lock of a run ($1 schema.LOCK_CLASS_RUNS, $2 the run id): column ok is
-- true (held, also when held already) or false (another session holds it).
M.TRY_LOCK_SQL = "SELECT pg_try_advisory_lock($1::int, hashtext($2)) AS ok"

-- M.TRY_LOCK_SQL once: true | false | nil, err, sqlstate (no reset: setup runs it after one).
function S:try_lock(run_id)
  local rows, err, state = self.conn:exec(M.TRY_LOCK_SQL, schema.LOCK_CLASS_RUNS, run_id)
  if not rows then return nil, err, state end
  return rows[1].ok
end

function S:message(what, err) return ("state database %s: %s failed: %s"):format(self.url, what, clean(err)) end

-- Maps a failed statement to (nil, message, code): a `scimrun:CODE:text` error raised by the
-- schema's functions keeps its code and text; otherwise the code is PG_<SQLSTATE>.
function S:failure(what, err, state)
  local code, text = tostring(err):match("scimrun:(%u+):([^\n]*)")
  if code then return nil, ("state database %s: %s"):format(self.url, text), code end
  if state == "CONNECTION" then
    return nil, ("state database %s: %s failed: the connection was lost: %s"):format(self.url, what, clean(err)),
      "CONNECTION"
  end
  return nil, self:message(what, err) .. (HINTS[state] or ""), "PG_" .. tostring(state or "ERROR")
end

-- Tasks whose statements failed together wait for the one recovery under way and share its
-- outcome: each used to run a window of its own, logging attempt 1, 2, ... twice over, and a
-- stopping worker waited for the slowest.
-- Outside a task waiting would block the loop and with it the task that recovers, for ever:
-- there it resets the connection itself (a second window), and that task finds it restored
-- when it wakes. The group commit, the usual caller outside a task, does not get here: it
-- waits for a later loop turn while db:recovering() (engine/commit.lua).
function S:recover(err)
  if self.recovering then
    if not core.is_task() then return self:reconnect(err) end
    while self.recovering do sleep(0.01) end
    local r = self.recovered
    return r[1], r[2], r[3]
  end
  self.recovering = true
  local pok, ok, rerr, rcode = pcall(self.reconnect, self, err)
  self.recovering = nil
  if not pok then -- a bug: the waiting tasks fail with it rather than wait forever
    self.recovered = { nil, tostring(ok), "CONNECTION" }
    error(ok, 0)
  end
  self.recovered = { ok, rerr, rcode }
  return ok, rerr, rcode
end

-- Resets the broken connection until it works again or RECONNECT_TOTAL seconds have passed.
-- Another task of this process may have reset it meanwhile (we slept): then it is usable.
-- Once a recovery has given up, the next ones try once and fail at once until a reset works:
-- a process stopping because its database is gone still makes a few statements (the run's
-- status, the dead-letter count, ...), and each waited the whole window again (a worker
-- whose database stayed down took five windows, 150 s, to exit instead of 30 s).
function S:reconnect(err)
  local delay, waited, attempt = M.RECONNECT_FIRST, 0, 0
  local total = self.gave_up and 0 or M.RECONNECT_TOTAL
  local why = clean(err)
  while true do
    attempt = attempt + 1
    if not self.conn then -- closed by another task while this one slept
      return nil, ("state database %s: closed while reconnecting"):format(self.url), "CONNECTION"
    end
    log("warn", "state database connection lost; reconnecting",
      { database = self.url, attempt = attempt, error = why })
    local ok, rerr = true, nil
    if self.conn:status() ~= "ok" then ok, rerr = self.conn:reset() end
    if ok then
      local sok, serr, scode = self:setup()
      if sok then
        self.gave_up = nil
        log("info", "state database connection restored", { database = self.url, attempt = attempt })
        return true
      end
      if scode == "LOCKED" then return nil, serr, scode end
      why = clean(serr)
    else
      why = clean(rerr)
    end
    if waited >= total then
      -- the verdict names the window that gave up, also in the later tries' messages: the first
      -- failure a stopping run reports may be one of theirs
      if self.gave_up then
        return nil, ("state database %s: the connection was lost and could not be restored in %d s (one more "
          .. "attempt since failed): %s"):format(self.url, self.gave_up, why), "CONNECTION"
      end
      self.gave_up = math.floor(waited + 0.5)
      return nil, ("state database %s: the connection was lost and could not be restored in %d s: %s")
        :format(self.url, self.gave_up, why), "CONNECTION"
    end
    local pause = math.min(delay, total - waited)
    sleep(pause)
    waited = waited + pause
    delay = delay * 2
  end
end

-- One statement outside a transaction (a read): run once more after a reset.
-- Returns rows, affected | nil, err, code.
function S:query(what, sql, ...)
  local rows, affected, state = self.conn:exec(sql, ...)
  if rows then return rows, affected end
  if state == "CONNECTION" then
    local ok, rerr, rcode = self:recover(affected)
    if not ok then return nil, rerr, rcode end
    rows, affected, state = self.conn:exec(sql, ...)
    if rows then return rows, affected end
  end
  return self:failure(what, affected, state)
end

local function pack(...) return { n = select("#", ...), ... } end

-- Runs body(conn) -> true, ... | nil, err, sqlstate between BEGIN and COMMIT. A connection
-- lost before COMMIT was sent: reset, and the whole transaction once more (nothing of the
-- first try was committed). Returns true, ... | nil, err, code.
function S:transaction(what, body)
  if self.lock_lost then return nil, self.lock_lost, "LOCKED" end
  for attempt = 1, 2 do
    local ok, err, state = self.conn:exec("BEGIN")
    if ok then
      local res = pack(body(self.conn))
      if res[1] then
        local c, cerr, cstate = self.conn:exec("COMMIT")
        if c then return unpack(res, 1, res.n) end
        if cstate == "CONNECTION" then
          return nil, ("state database %s: %s: the connection was lost during COMMIT, so whether it was "
            .. "recorded is unknown: %s"):format(self.url, what, clean(cerr)), "CONNECTION"
        end
        return self:failure(what, cerr, cstate)
      end
      err, state = res[2], res[3]
      if state ~= "CONNECTION" then self.conn:exec("ROLLBACK") end
    end
    if state ~= "CONNECTION" or attempt == 2 then return self:failure(what, err, state) end
    local rok, rerr, rcode = self:recover(err)
    if not rok then return nil, rerr, rcode end
  end
end

function S:close()
  if self.conn then self.conn:close() end
  self.conn = nil
end

return M
