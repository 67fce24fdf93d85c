-- Live progress of a run, read from the event stream (scimrun.engine.events) like the log and the
-- report. Two forms:
--   "tty":   a status area at the bottom of the terminal (stderr), redrawn at most 10 times a
--            second, with log lines printed above it (scimrun.log.status);
--   "lines": no redraw; one `progress` log record every `interval` seconds (text or JSON, as
--            the log is), for CI, cron and `| tee`.
--
--   local p = progress.new { stream = s, mode = "tty"|"lines", interval = 10, name = "onboard" }
--   p:start()   -- a task that draws until p:stop()
--   p:stop()    -- clears the status area (before the summary, or on Ctrl-C)
--   p:lines()   -- the status text as a list of lines (what the area shows), for specs
local M = {}

local P = {}
P.__index = P

local floor, max, min = math.floor, math.max, math.min
local concat, sort = table.concat, table.sort

local RATE_WINDOW = 10 -- seconds of history behind the items/s figure and the ETA
-- ... for a worker of a shared run: the run's count comes with each heartbeat (a third of the
-- lease, 10 s by default), so the window holds three of them (a 10-second one would hold one
-- jump or none)
local SHARED_RATE_WINDOW = 30

function M.new(o)
  local self = setmetatable({
    mode = o.mode, interval = o.interval or 10, name = o.name, log = o.log or scimrun.log,
    now = o.now or scimrun.now, started = (o.now or scimrun.now)(),
    total = nil, started_items = 0, done = 0, failed = 0, dead_letters = 0, interrupted = 0,
    retries = 0, retries_by_class = {}, targets = {}, samples = {}, dirty = true, stopped = false,
  }, P)
  o.stream:subscribe(function(ev) self:on_event(ev) end,
    { "item", "item_start", "input", "run_items", "failure", "breaker", "rate", "wait" })
  return self
end

local function target(self, name)
  name = name or "?"
  local t = self.targets[name]
  if not t then
    t = { breaker = "closed", rps = 0, waits = {}, waited = 0 }
    self.targets[name] = t
  end
  return t
end

function P:on_event(ev)
  local ty = ev.type
  if ty == "item" then
    self.done = self.done + 1
    if ev.status == "failed" then self.failed = self.failed + 1 end
    if ev.outcome == "dead_lettered" then self.dead_letters = self.dead_letters + 1 end
    if ev.status == "interrupted" then self.interrupted = self.interrupted + 1 end
  elseif ty == "item_start" then
    self.started_items = self.started_items + 1
  elseif ty == "input" then
    self.total = (self.total or 0) + ev.total
  elseif ty == "run_items" then
    -- a worker of a shared run (scimrun.worker): the run's items done by every worker, as its
    -- heartbeat counted them; this worker's own since then are added as they end
    -- (the first resets the rate's history: it was this worker's count alone, and the run's
    -- items done before it joined are no rate of its own)
    if not self.shared then self.samples = {} end
    self.shared = { done = ev.done, mine = self.done, window = max(SHARED_RATE_WINDOW, 3 * (ev.every or 0)) }
  elseif ty == "failure" then
    if ev.retry then
      self.retries = self.retries + 1
      local c = ev.class or "?"
      self.retries_by_class[c] = (self.retries_by_class[c] or 0) + 1
    end
  elseif ty == "breaker" then
    local t = target(self, ev.target)
    t.breaker = ev.state
    t.open_until = ev.state == "open" and ev.cooldown and (ev.t or self.now()) + ev.cooldown or nil
  elseif ty == "rate" then
    target(self, ev.target).rps = ev.rps or 0
  elseif ty == "wait" and (ev.reason == "rate_limit" or ev.reason == "rate_limit_reset") then
    local t = target(self, ev.target)
    local s = math.abs(ev.seconds or 0)
    t.waited = t.waited + s
    t.waits[#t.waits + 1] = (ev.t or self.now()) + s
  else
    return
  end
  self.dirty = true
end

local function clock(s)
  s = floor(s + 0.5)
  if s >= 3600 then return ("%d:%02d:%02d"):format(floor(s / 3600), floor(s / 60) % 60, s % 60) end
  return ("%d:%02d"):format(floor(s / 60), s % 60)
end

local function short(x)
  if x >= 100 or x == floor(x) then return ("%d"):format(floor(x + 0.5)) end
  return ("%.1f"):format(x)
end

-- Items done: this process's (mine), or for a worker of a shared run the run's: every worker's
-- at the last heartbeat (shared.done, when this one had done shared.mine) and this worker's own
-- since; at most `total` when given (other workers may be further on: a batch this worker has
-- not loaded yet counts there). Also the console's row (scimrun.ui.record).
function M.run_done(shared, mine, total)
  local done = shared and max(mine, shared.done + mine - shared.mine) or mine
  if total and done > total then done = total end
  return done
end

function P:run_done() return M.run_done(self.shared, self.done) end

-- Items per second over the last RATE_WINDOW seconds (since the start before that).
function P:rate(now)
  local s = self.samples
  local first = s[1]
  if not first or now - first.t < 0.5 then
    local el = now - self.started
    return el >= 0.5 and self.done / el or nil
  end
  return (self:run_done() - first.done) / (now - first.t)
end

function P:sample(now)
  local s = self.samples
  local last = s[#s]
  if not last or now - last.t >= 0.5 then
    s[#s + 1] = { t = now, done = self:run_done() }
    local window = self.shared and self.shared.window or RATE_WINDOW
    while #s > 2 and now - s[2].t >= window do table.remove(s, 1) end
  end
end

-- The figures of the moment, as the `progress` log record carries them.
function P:figures(now)
  now = now or self.now()
  local rate = self:rate(now)
  local done = M.run_done(self.shared, self.done, self.total)
  local f = { done = done, total = self.total, in_flight = max(0, self.started_items - self.done),
              failed = self.failed, dead_letters = self.dead_letters, retries = self.retries,
              elapsed_s = floor(now - self.started + 0.5) }
  -- a worker: done, rate and ETA are the run's; `mine` is what this worker did
  if self.shared then f.mine = self.done end
  if rate then f.rate = floor(rate * 10 + 0.5) / 10 end
  if self.total and self.total > 0 then
    f.percent = floor(min(done, self.total) * 100 / self.total)
    if rate and rate > 0 and self.total > done then f.eta_s = floor((self.total - done) / rate + 0.5) end
  end
  return f
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  sort(ks)
  return ks
end

-- Per target: the rate limit in force, tasks waiting on it, the breaker unless closed.
function P:target_parts(now)
  local parts = {}
  for _, name in ipairs(sorted_keys(self.targets)) do
    local t = self.targets[name]
    local waiting = 0
    local keep = {}
    for _, until_t in ipairs(t.waits) do
      if until_t > now then waiting = waiting + 1; keep[#keep + 1] = until_t end
    end
    t.waits = keep
    local bits = {}
    if t.rps > 0 then
      bits[#bits + 1] = ("limit %s/s"):format(short(t.rps))
    end
    if waiting > 0 or t.waited >= 1 then
      bits[#bits + 1] = ("%d waiting, %s waited"):format(waiting, clock(t.waited))
    end
    if t.breaker == "open" then
      local left = t.open_until and max(0, t.open_until - now)
      bits[#bits + 1] = left and ("breaker OPEN %ds left"):format(floor(left + 0.5)) or "breaker OPEN"
    elseif t.breaker == "half_open" then
      bits[#bits + 1] = "breaker half-open"
    end
    if #bits > 0 then parts[#parts + 1] = name .. ": " .. concat(bits, ", ") end
  end
  return parts
end

function P:lines(now)
  now = now or self.now()
  local f = self:figures(now)
  local first = {}
  if self.name then first[#first + 1] = self.name end
  if f.total then
    first[#first + 1] = ("%d/%d (%d%%)"):format(f.done, f.total, f.percent or 100)
  else
    first[#first + 1] = ("%d done"):format(f.done)
  end
  if f.mine then first[#first + 1] = ("%d by this worker"):format(f.mine) end
  first[#first + 1] = f.rate and ("%s/s"):format(short(f.rate)) or "-/s"
  if f.total then
    first[#first + 1] = "ETA " .. (f.eta_s and clock(f.eta_s) or (f.done >= f.total and "0:00" or "-"))
  end
  first[#first + 1] = ("in flight %d"):format(f.in_flight)
  first[#first + 1] = "elapsed " .. clock(f.elapsed_s)
  local second = { ("retries %d"):format(self.retries) }
  if self.retries > 0 then
    local by = {}
    for _, c in ipairs(sorted_keys(self.retries_by_class)) do
      by[#by + 1] = ("%s %d"):format(c, self.retries_by_class[c])
    end
    second[1] = second[1] .. " (" .. concat(by, ", ") .. ")"
  end
  second[#second + 1] = ("dead letters %d"):format(self.dead_letters)
  if self.failed > self.dead_letters then second[#second + 1] = ("failed %d"):format(self.failed) end
  local out = { concat(first, "  "), concat(second, "  ") }
  for _, p in ipairs(self:target_parts(now)) do out[#out + 1] = p end
  return out
end

function P:draw(now)
  local _, cols = self.log.terminal()
  local lines = self:lines(now)
  for i, l in ipairs(lines) do
    if #l >= cols then lines[i] = l:sub(1, max(1, cols - 2)) .. "~" end
  end
  self.log.status(concat(lines, "\n"))
end

function P:record(now)
  local f = self:figures(now)
  local parts = self:target_parts(now)
  if #parts > 0 then f.targets = concat(parts, "; ") end
  self.log.emit("info", "progress", f)
end

function P:tick()
  local now = self.now()
  self:sample(now)
  if self.mode == "tty" then
    -- redrawn when something changed, and each second for the clocks
    if self.dirty or now - (self.drawn or 0) >= 1 then
      self.dirty = false
      self.drawn = now
      self:draw(now)
    end
  elseif self.mode == "lines" then
    if now - (self.recorded or self.started) >= self.interval then
      self.recorded = now
      self:record(now)
    end
  end
end

function P:start()
  if self.mode ~= "tty" and self.mode ~= "lines" then return self end
  scimrun.spawn(function()
    while not self.stopped do
      self:tick()
      scimrun.sleep(0.1) -- at most 10 redraws a second; a stop ends the task within 0.1 s
    end
  end)
  return self
end

function P:stop()
  if self.stopped then return end
  self.stopped = true
  if self.mode == "tty" then self.log.status(nil) end
end

return M
