-- The policy's event hooks, as one more reader of the run's event stream:
--
--   on_event = {
--     dead_letter  = function(entry, tools) end,  -- each new dead letter (the entry `dlq show` shows,
--                                                 -- without its request body)
--     breaker_open = function(info, tools) end,   -- a target's breaker opened after being closed
--                                                 -- (once per outage, not at every failed probe)
--     run_finished = function(run, tools) end,    -- the run ended: status, exit code, counts
--   }
--
-- Each hook runs under policy.guard, like every function of a policy file (a CPU-time limit;
-- an error is logged as a warning and the run goes on). A policy file has no io and no
-- network, so a hook gets `tools`: tools.post(url, body[, headers]) sends a JSON POST (a chat
-- webhook) from a task of its own, without holding the run up, and logs a failure by host only
-- (a webhook URL is a secret); tools.log(level, message, fields) writes to the run's log.
-- The run waits for posts still in flight when it ends, for at most 10 s.
--
--   hooks.attach(stream, get_policy, { log = scimrun.log })  -> hooks
--   hooks:drain(seconds)       waits for the posts in flight (the runner, before exiting)
-- `dead_letter.on_dead_letter` keeps working: the engine calls it as before.
local cjson = require "cjson"

local M = {}

local H = {}
H.__index = H

local function copy(t)
  local out = {}
  for k, v in pairs(t or {}) do out[k] = type(v) == "table" and copy(v) or v end
  return out
end

local function host_of(url) return tostring(url):match("^%a+://([^/?#]+)") or "?" end

function H:post(url, body, headers)
  if type(url) ~= "string" or not url:match("^https?://[^/?#]+") then
    error("tools.post: the URL must start with http:// or https://", 2)
  end
  local h = { ["Content-Type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[tostring(k)] = tostring(v) end
  local text = type(body) == "string" and body or cjson.encode(body == nil and cjson.null or body)
  local host = host_of(url):gsub("^.*@", "")
  self.inflight = self.inflight + 1
  scimrun.spawn(function()
    local ok, res, err, kind = pcall(require("scimrun.http").request,
      { method = "POST", url = url, headers = h, body = text, timeout = 10, connect_timeout = 5 })
    if not ok then
      self.log.emit("warn", "on_event: a post failed", { host = host, error = self.log.redact(tostring(res)) })
    elseif not res then
      self.log.emit("warn", "on_event: a post failed",
        { host = host, kind = kind, error = self.log.redact(tostring(err)) })
    elseif res.status >= 300 then
      self.log.emit("warn", "on_event: a post was refused", { host = host, status = res.status })
    end
    self.inflight = self.inflight - 1
  end)
  return true
end

function H:call(name, fn, arg)
  local guard = require("scimrun.resilience.policy").guard
  local ok, err = guard(fn, "on_event." .. name, arg, self.tools)
  if not ok then self.log.emit("warn", "on_event." .. name .. " hook failed", { error = tostring(err) }) end
  return ok
end

function M.attach(stream, get_policy, o)
  o = o or {}
  local self = setmetatable({ log = o.log or scimrun.log, inflight = 0, breakers = {} }, H)
  self.tools = {
    post = function(url, body, headers) return self:post(url, body, headers) end,
    log = function(level, msg, fields)
      self.log.emit(level, tostring(msg), type(fields) == "table" and fields or {})
    end,
  }
  stream:subscribe(function(ev)
    local pol = get_policy()
    local on = type(pol) == "table" and pol.on_event or nil
    local ty = ev.type
    if ty == "breaker" then
      local before = self.breakers[ev.target]
      self.breakers[ev.target] = ev.state
      if ev.state == "open" and (before == nil or before == "closed") and on and on.breaker_open then
        self:call("breaker_open", on.breaker_open, { target = ev.target, op = ev.op, cooldown = ev.cooldown,
          at = scimrun.wall() })
      end
    elseif ty == "dead_letter" and on and on.dead_letter then
      self:call("dead_letter", on.dead_letter, copy(ev.entry))
    elseif ty == "run_finished" and on and on.run_finished then
      self:call("run_finished", on.run_finished, copy(ev))
    end
  end, { "breaker", "dead_letter", "run_finished" })
  return self
end

function H:drain(seconds)
  local deadline = scimrun.now() + (seconds or 10)
  while self.inflight > 0 and scimrun.now() < deadline do scimrun.sleep(0.02) end
  return self.inflight == 0
end

return M
