-- A counting semaphore per target (private to scimrun.resilience.retry): at most `max` calls in flight;
-- further callers park in FIFO order and are handed a slot by release().
-- local b = bulkhead.new(max); b:acquire(ex, op, target); ...; b:release(); b:resize(n)
local M = {}

local Bulkhead = {}
Bulkhead.__index = Bulkhead

function M.new(max)
  return setmetatable({ max = max, inflight = 0, queue = {}, head = 1, tail = 0 }, Bulkhead)
end

-- Waits for a slot. ex (optional) receives a "wait" event when the caller had to queue.
function Bulkhead:acquire(ex, op, target)
  if self.inflight < self.max then
    self.inflight = self.inflight + 1
    return 0
  end
  local now = ex and ex.clock.now() or scimrun.now()
  if ex then
    ex:_emit({ type = "wait", reason = "bulkhead", op = op, target = target, in_flight = self.inflight, t = now })
  end
  self.tail = self.tail + 1
  self.queue[self.tail] = coroutine.running()
  scimrun.park() -- release() hands its slot over, so inflight is already counted for us
  return (ex and ex.clock.now() or scimrun.now()) - now
end

-- Hands the slot to the next parked caller, or frees it.
function Bulkhead:release()
  while self.head <= self.tail and self.inflight <= self.max do
    local co = self.queue[self.head]
    self.queue[self.head] = nil
    self.head = self.head + 1
    if pcall(scimrun.wake, co) then return end -- a caller cancelled meanwhile is skipped
  end
  self.inflight = self.inflight - 1
end

-- A new max_in_flight (hot reload): admits queued callers when it grew.
function Bulkhead:resize(max)
  self.max = max
  while self.inflight < self.max and self.head <= self.tail do
    local co = self.queue[self.head]
    self.queue[self.head] = nil
    self.head = self.head + 1
    if pcall(scimrun.wake, co) then self.inflight = self.inflight + 1 end
  end
end

function M.in_flight(b) return b.inflight end

return M
