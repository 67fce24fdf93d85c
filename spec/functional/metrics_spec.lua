-- Metrics (lua/scimrun/observe/run_metrics.lua, docs/metrics.md): the textfile written by a sandbox run
-- with faults holds the same numbers as the run's own --report summary, promtool accepts it, the
-- shipped alert rules pass their unit tests, and /metrics answers while a run goes on.
-- promtool comes from Debian's `prometheus` package, which scripts/install-deps.sh installs.
local cjson = require "cjson"
local http = require "scimrun.http"
local proc = require "helpers.proc"

local dir = proc.tmpdir("metrics")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)\n?$"))
  return rc, out
end

local PROMTOOL = (function()
  local rc = sh("command -v promtool >/dev/null")
  return rc == 0
end)()
local NO_PROMTOOL = "promtool is not installed (Debian package prometheus: ./scripts/install-deps.sh installs it)"

-- The samples of an exposition: { {name, labels = {k = v}, value}, ... }
local function parse(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local name, labels, value = line:match("^([%w_:]+)(%b{})%s+(%S+)$")
      if not name then
        name, value = line:match("^([%w_:]+)%s+(%S+)$")
        labels = "{}"
      end
      assert(name, "not a sample line: " .. line)
      local l = {}
      for k, v in labels:gmatch('([%w_]+)="(.-)"') do l[k] = v end
      out[#out + 1] = { name = name, labels = l, value = tonumber(value) }
    end
  end
  return out
end

-- The sum of the samples of `name` whose labels match `where`.
local function sum(samples, name, where)
  local n, found = 0, false
  for _, s in ipairs(samples) do
    if s.name == name then
      local ok = true
      for k, v in pairs(where or {}) do ok = ok and s.labels[k] == v end
      if ok then n, found = n + s.value, true end
    end
  end
  return found and n or nil
end

describe("--metrics-textfile", function()
  local samples, report, text, out_all

  setup(function()
    local code, out, err = proc.run(("examples/onboard.lua --sandbox='503:0.05,400:0.01@writes' --seed 3 "
      .. "--continue-on-error --policy fast-test --state %s/s.db --report %s/r.json --metrics-textfile %s "
      .. "--progress never"):format(dir, dir, dir))
    out_all = out .. err
    assert.are.equal(3, code, out_all) -- completed with dead letters
    text = proc.read_all(dir .. "/scimrun_onboard.prom")
    samples = parse(text)
    report = cjson.decode(proc.read_all(dir .. "/r.json"))
  end)

  it("holds the numbers of the run's own report", function()
    local s = report.summary
    -- the faults did something: retries and dead letters to compare
    assert.is_true(s.retries > 0, out_all)
    assert.is_true(s.dead_lettered > 0, out_all)
    -- requests: every attempt, and a duration for each
    assert.are.equal(s.attempts, sum(samples, "scimrun_requests_total"))
    assert.are.equal(s.attempts, sum(samples, "scimrun_request_duration_seconds_count"))
    assert.are.equal(s.attempts - (s.by_class.transient or 0) - (s.by_class.permanent or 0)
      - (s.by_class.rate_limited or 0) - (s.by_class.conflict or 0) - (s.by_class.auth or 0),
      sum(samples, "scimrun_requests_total", { outcome = "success" }))
    -- retries, in all and by class
    assert.are.equal(s.retries, sum(samples, "scimrun_retries_total"))
    for class, n in pairs(s.retries_by_class) do
      assert.are.equal(n, sum(samples, "scimrun_retries_total", { class = class }), class)
    end
    assert.are.equal(s.gave_up, sum(samples, "scimrun_operations_failed_total"))
    assert.are.equal(s.budget_exhausted, sum(samples, "scimrun_retry_budget_exhausted_total") or 0)
    -- items by outcome
    assert.are.equal(s.items, sum(samples, "scimrun_items_total"))
    for _, outcome in ipairs { "created", "updated", "skipped", "adopted" } do
      assert.are.equal(s[outcome], sum(samples, "scimrun_items_total", { outcome = outcome }), outcome)
    end
    local failed = 0
    for _, outcome in ipairs { "failed", "dead_lettered", "rolled_back" } do
      failed = failed + sum(samples, "scimrun_items_total", { outcome = outcome })
    end
    assert.are.equal(s.failed, failed)
    local per_item = 0
    for _, item in ipairs(report.items) do
      if item.outcome == "dead_lettered" then per_item = per_item + 1 end
    end
    assert.are.equal(per_item, sum(samples, "scimrun_items_total", { outcome = "dead_lettered" }))
    -- dead letters: parked by the run, and pending in the state file (a fresh one)
    assert.are.equal(s.dead_lettered, sum(samples, "scimrun_dead_letters_total"))
    assert.are.equal(s.dead_lettered, sum(samples, "scimrun_dead_letters_pending", { workflow = "onboard" }))
    assert.is_number(sum(samples, "scimrun_dead_letters_oldest_timestamp_seconds"))
    -- the run's end
    assert.are.equal(1, sum(samples, "scimrun_run_status", { status = "completed_with_dead_letters" }))
    assert.are.equal(0, sum(samples, "scimrun_run_status", { status = "running" }))
    assert.is_true(math.abs(sum(samples, "scimrun_run_duration_seconds") - s.elapsed) < 0.5)
    assert.is_true(sum(samples, "scimrun_last_success_timestamp_seconds") > os.time() - 600)
    assert.are.equal(1, sum(samples, "scimrun_breaker_state", { state = "closed" }))
  end)

  it("names no person: no label holds a userName", function()
    local labels = {}
    for _, smp in ipairs(samples) do
      for k in pairs(smp.labels) do labels[k] = true end
    end
    for k in pairs(labels) do
      assert.is_truthy(({ workflow = true, target = true, op = true, class = true, rule = true, outcome = true,
                          state = true, status = true, le = true, version = true })[k], "label " .. k)
    end
    for _, item in ipairs(report.items) do
      assert.is_nil(text:find(tostring(item.item), 1, true), "the textfile names " .. tostring(item.item))
    end
  end)

  it("passes promtool check metrics", function()
    if not PROMTOOL then return pending(NO_PROMTOOL) end
    local rc, out = sh("promtool check metrics < " .. proc.sh_quote(dir .. "/scimrun_onboard.prom"))
    assert.are.equal(0, rc, out)
  end)

  it("is replaced by the next run (atomically: no temporary file is left), and keeps the last success", function()
    local before = sum(samples, "scimrun_last_success_timestamp_seconds")
    local code, out, err = proc.run(("examples/onboard.lua --sandbox='outage:30s' --policy fast-test --state %s/s.db "
      .. "--metrics-textfile %s --progress never"):format(dir, dir))
    assert.are_not.equal(0, code, out .. err)
    local again = parse(proc.read_all(dir .. "/scimrun_onboard.prom"))
    assert.are.equal(1, sum(again, "scimrun_run_status", { status = "failed" }), out .. err)
    local after = sum(again, "scimrun_last_success_timestamp_seconds")
    assert.is_true(math.abs(after - before) < 0.001, ("%s then %s"):format(tostring(before), tostring(after)))
    assert.are.equal(1, sum(again, "scimrun_operations_failed_total", { class = "transient" }))
    local ls = io.popen("ls -a " .. proc.sh_quote(dir)):read("*a")
    assert.is_nil(ls:find(".tmp", 1, true), ls)
  end)

  it("is not written by a dry run, and a bad directory or port is refused before a run is recorded", function()
    local sub = dir .. "/dry"
    os.execute("mkdir -p " .. proc.sh_quote(sub))
    local code, out, err = proc.run(("examples/onboard.lua --sandbox --dry-run --state %s/s.db --metrics-textfile %s "
      .. "--progress never"):format(sub, sub))
    assert.are.equal(0, code, out .. err)
    assert.is_nil(io.open(sub .. "/scimrun_onboard.prom"))
    code, out, err = proc.run(("examples/onboard.lua --sandbox --state %s/n.db --metrics-textfile %s/missing")
      :format(sub, sub))
    assert.are.equal(2, code, out .. err)
    assert.matches("%-%-metrics%-textfile .*/missing: no such directory", err)
    code, out, err = proc.run(("examples/onboard.lua --sandbox --state %s/n.db --metrics-port 70000"):format(sub))
    assert.are.equal(2, code, out .. err)
    assert.matches("%-%-metrics%-port must be a port number from 0 to 65535", err)
    assert.is_nil(io.open(sub .. "/n.db"))
  end)
end)

describe("the shipped alert rules", function()
  it("pass promtool check rules and their unit tests (promtool test rules)", function()
    if not PROMTOOL then return pending(NO_PROMTOOL) end
    local rc, out = sh("cd contrib/prometheus && promtool check rules scimrun-alerts.yml")
    assert.are.equal(0, rc, out)
    assert.matches("SUCCESS: 7 rules found", out)
    rc, out = sh("cd contrib/prometheus && promtool test rules scimrun-alerts.test.yml")
    assert.are.equal(0, rc, out)
    assert.matches("SUCCESS", out)
  end)
end)

describe("--metrics-port", function()
  it("serves /metrics during a run, then the port is closed", function()
    local log = dir .. "/port.log"
    -- 40 ms per request, 4 rows at a time: a run of a few seconds to scrape
    local pid = proc.spawn(("examples/onboard.lua --sandbox='latency:40ms' --param concurrency=4 --policy fast-test "
      .. "--state %s/port.db --metrics-port 0 --metrics-textfile %s --progress never"):format(dir, dir),
      "SCIMRUN_METRICS_INTERVAL=0.2", log)
    local url
    local deadline = scimrun.now() + 20
    while not url and scimrun.now() < deadline do
      url = proc.read_all(log):match("metrics: serving (http://127%.0%.0%.1:%d+/metrics)")
      if not url then scimrun.sleep(0.05) end
    end
    assert.is_string(url, proc.read_all(log))
    local running, res
    while scimrun.now() < deadline do
      res = http.request { url = url, timeout = 5 }
      local created = res and res.status == 200
        and res.body:find('scimrun_items_total{workflow="onboard",outcome="created"} [1-9]')
      if created then
        running = res.body:find('scimrun_run_status{workflow="onboard",status="running"} 1', 1, true)
        break
      end
      scimrun.sleep(0.05)
    end
    assert.is_truthy(res, "no answer from " .. url)
    assert.are.equal(200, res.status)
    assert.matches("^text/plain; version=0%.0%.4", res.headers["content-type"])
    assert.is_truthy(running, res.body)
    assert.matches("scimrun_requests_total{workflow=\"onboard\",target=\"127%.0%.0%.1:%d+\",op=\"users%.create\","
      .. "outcome=\"success\"} %d+", res.body)
    -- the textfile is written during the run too
    local during = parse(proc.read_all(dir .. "/scimrun_onboard.prom"))
    assert.are.equal(1, sum(during, "scimrun_run_status", { status = "running" }))
    -- other paths: 404
    local other = http.request { url = url:gsub("/metrics$", "/"), timeout = 5 }
    assert.are.equal(404, other.status)
    if PROMTOOL then
      local f = assert(io.open(dir .. "/scraped.prom", "w"))
      f:write(res.body)
      f:close()
      local rc, out = sh("promtool check metrics < " .. proc.sh_quote(dir .. "/scraped.prom"))
      assert.are.equal(0, rc, out)
    end
    assert.is_true(proc.wait_gone(pid, 60), proc.read_all(log))
    assert.is_nil(http.request { url = url, timeout = 2 })
    local final = parse(proc.read_all(dir .. "/scimrun_onboard.prom"))
    assert.are.equal(1, sum(final, "scimrun_run_status", { status = "completed" }), proc.read_all(log))
  end)
end)
