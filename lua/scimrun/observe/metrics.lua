-- A small metrics registry and the Prometheus text exposition format (version 0.0.4), written
-- by hand: the format is a few lines of text, and no C client library is packaged in Debian.
-- It knows nothing about scimrun's events: lua/scimrun/observe/run_metrics.lua fills it from the stream.
--
--   local reg = metrics.registry()
--   local c = reg:counter("x_requests_total", "Requests sent.", { "target", "op" })
--   c:inc(1, "api.example.com", "users.create")    -- label values in the declared order
--   local g = reg:gauge("x_up", "1 when up.", {});  g:set(1)
--   local h = reg:histogram("x_seconds", "Durations.", { "op" }, { 0.1, 1, 10 });  h:observe(0.3, "users.create")
--   reg:on_collect(fn)          -- fn(reg) runs before each exposition (refreshes gauges read elsewhere)
--   reg:expose() -> text        -- families in declaration order, series sorted by their labels
--   metrics.write_atomic(path, text) -> true | nil, err   (temporary file beside it, then rename)
--
-- Series with no sample yet are not written (a counter appears with its first increment); a
-- gauge can be removed with g:remove(...). Label values are escaped as the format says.
local M = {}

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

local NAME = "^[%a_:][%w_:]*$"
local LABEL = "^[%a_][%w_]*$"

local floor, abs, huge = math.floor, math.abs, math.huge
local concat, sort = table.concat, table.sort

-- A sample value as the format wants it: integers without a decimal point, the shortest
-- decimal that reads back as the same double otherwise.
local function number(v)
  if v ~= v then return "NaN" end
  if v == huge then return "+Inf" end
  if v == -huge then return "-Inf" end
  if v == floor(v) and abs(v) < 2 ^ 53 then return ("%d"):format(v) end
  for _, f in ipairs { "%.15g", "%.16g" } do
    local s = f:format(v)
    if tonumber(s) == v then return s end
  end
  return ("%.17g"):format(v)
end
M.number = number

local function escape_label(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function escape_help(s)
  return (s:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local Family = {}
Family.__index = Family

-- The series of label values ..., created on first use.
local function series(self, ...)
  local n = select("#", ...)
  if n ~= #self.labels then
    error(("%s: %d label value(s) given, %d declared (%s)"):format(self.name, n, #self.labels,
      concat(self.labels, ", ")), 3)
  end
  local values = { ... }
  for i = 1, n do values[i] = values[i] == nil and "" or tostring(values[i]) end
  local key = concat(values, "\0")
  local s = self.series[key]
  if not s then
    s = { values = values, value = 0 }
    if self.kind == "histogram" then
      s.counts = {}
      for i = 1, #self.buckets do s.counts[i] = 0 end
      s.sum, s.count = 0, 0
    end
    self.series[key] = s
  end
  return s
end

function Family:inc(n, ...)
  n = n or 1
  if self.kind == "counter" and n < 0 then error(self.name .. ": a counter only goes up", 2) end
  local s = series(self, ...)
  s.value = s.value + n
  s.seen = true
end

function Family:set(v, ...)
  assert(self.kind == "gauge", "set on a " .. self.kind)
  local s = series(self, ...)
  s.value = v
  s.seen = true
end

-- Makes the series exist (a counter at 0), so a rate over it starts from the first scrape.
function Family:touch(...)
  series(self, ...).seen = true
end

function Family:remove(...)
  local values = { ... }
  for i = 1, #values do values[i] = tostring(values[i]) end
  self.series[concat(values, "\0")] = nil
end

function Family:get(...)
  local s = series(self, ...)
  return s.value
end

function Family:observe(x, ...)
  assert(self.kind == "histogram", "observe on a " .. self.kind)
  local s = series(self, ...)
  local b = self.buckets
  for i = 1, #b do -- counts per bucket, not cumulative (exposition adds them up); above the last: +Inf only
    if x <= b[i] then
      s.counts[i] = s.counts[i] + 1
      break
    end
  end
  s.sum = s.sum + x
  s.count = s.count + 1
  s.seen = true
end

-- The sum and count of a histogram series (specs and checks).
function Family:totals(...)
  local s = series(self, ...)
  return s.count, s.sum
end

local Registry = {}
Registry.__index = Registry

function M.registry()
  return setmetatable({ families = {}, by_name = {}, collectors = {} }, Registry)
end

local function declare(self, kind, name, help, labels, buckets)
  if not name:match(NAME) then error("metric name " .. name .. " is not valid", 3) end
  if self.by_name[name] then error("metric " .. name .. " declared twice", 3) end
  labels = labels or {}
  for _, l in ipairs(labels) do
    if not l:match(LABEL) or l:sub(1, 2) == "__" or (kind == "histogram" and l == "le") then
      error(("metric %s: label name %s is not valid"):format(name, l), 3)
    end
  end
  local f = setmetatable({ kind = kind, name = name, help = help, labels = labels, series = {} }, Family)
  if buckets then
    for i = 2, #buckets do assert(buckets[i] > buckets[i - 1], "buckets must increase") end
    f.buckets = buckets
  end
  self.families[#self.families + 1] = f
  self.by_name[name] = f
  return f
end

function Registry:counter(name, help, labels) return declare(self, "counter", name, help, labels) end
function Registry:gauge(name, help, labels) return declare(self, "gauge", name, help, labels) end
function Registry:histogram(name, help, labels, buckets)
  return declare(self, "histogram", name, help, labels, buckets or M.DEFAULT_BUCKETS)
end
function Registry:get(name) return self.by_name[name] end
function Registry:on_collect(fn) self.collectors[#self.collectors + 1] = fn end

M.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

local function label_text(names, values, extra_name, extra_value)
  local parts = {}
  for i, n in ipairs(names) do parts[#parts + 1] = n .. '="' .. escape_label(values[i]) .. '"' end
  if extra_name then parts[#parts + 1] = extra_name .. '="' .. extra_value .. '"' end
  if #parts == 0 then return "" end
  return "{" .. concat(parts, ",") .. "}"
end

function Registry:expose()
  for _, fn in ipairs(self.collectors) do fn(self) end
  local out = {}
  local function add(s) out[#out + 1] = s end
  for _, f in ipairs(self.families) do
    local keys = {}
    for k, s in pairs(f.series) do
      if s.seen then keys[#keys + 1] = k end
    end
    if #keys > 0 then
      sort(keys)
      add("# HELP " .. f.name .. " " .. escape_help(f.help) .. "\n")
      add("# TYPE " .. f.name .. " " .. f.kind .. "\n")
      for _, k in ipairs(keys) do
        local s = f.series[k]
        if f.kind == "histogram" then
          local cum = 0
          for i, le in ipairs(f.buckets) do
            cum = cum + s.counts[i]
            add(f.name .. "_bucket" .. label_text(f.labels, s.values, "le", number(le)) .. " " .. number(cum) .. "\n")
          end
          add(f.name .. "_bucket" .. label_text(f.labels, s.values, "le", "+Inf") .. " " .. number(s.count) .. "\n")
          add(f.name .. "_sum" .. label_text(f.labels, s.values) .. " " .. number(s.sum) .. "\n")
          add(f.name .. "_count" .. label_text(f.labels, s.values) .. " " .. number(s.count) .. "\n")
        else
          add(f.name .. label_text(f.labels, s.values) .. " " .. number(s.value) .. "\n")
        end
      end
    end
  end
  return concat(out)
end

local ffi = require "ffi"
pcall(ffi.cdef, "int getpid(void);")

-- Writes text to path atomically: a reader (node_exporter's textfile collector) sees the old
-- file or the new one, never half of one. The temporary name does not end in .prom, so the
-- collector ignores it.
function M.write_atomic(path, text)
  local tmp = ("%s.%d.tmp"):format(path, ffi.C.getpid())
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

return M
