-- Live progress. On a terminal (a real one: tmux, read back with capture-pane) a status area
-- shows done/total, rate, ETA, in flight, retries by class and dead letters; log lines print
-- above it; Ctrl-C clears it before the resume message. Elsewhere (a file, a pipe) a one-line
-- `progress` record every interval, in text or JSON. --quiet: warnings and errors only.
local cjson = require "cjson"
local proc = require "helpers.proc"

local dir = proc.tmpdir("progress")
local bin = proc.bin:match("^/") and proc.bin or (require("scimrun.fs").cwd() .. "/" .. proc.bin)
-- the server's socket inside the spec's directory: `kill-server` leaves the socket file
-- behind, and -L would leave one per run in /tmp/tmux-UID
local socket = dir .. "/tmux.sock"
teardown(function()
  os.execute(("tmux -S %s kill-server 2>/dev/null"):format(socket))
  os.execute("rm -rf '" .. dir .. "'")
end)

local sh = proc.sh

-- Starts `scimrun ARGS` in a detached tmux pane 150x30; the pane stays after the exit.
local function tmux_start(name, args)
  local cmd = ("cd %s && %s %s; echo EXIT=$?; sleep 600"):format(require("scimrun.fs").cwd(), bin, args)
  -- single quotes: $? is the pane shell's, not expanded by the shell that starts tmux
  os.execute(("tmux -S %s new-session -d -s %s -x 150 -y 30 '%s'"):format(socket, name, cmd))
end

local function pane(name)
  return sh(("tmux -S %s capture-pane -p -t %s"):format(socket, name))
end

-- Polls the pane until pattern shows (or the time is up); returns the pane text.
local function wait_pane(name, pattern, timeout)
  local deadline = os.time() + (timeout or 60)
  local text
  repeat
    text = pane(name)
    if text:find(pattern) then return text end
    os.execute("sleep 0.1")
  until os.time() > deadline
  error(("pane %s never showed %q; it shows:\n%s"):format(name, pattern, text))
end

describe("progress on a terminal", function()
  it("shows done/total, rate, ETA and retries by class; clears itself before the summary", function()
    local state = dir .. "/tty.db"
    tmux_start("tty", ("examples/onboard.lua --sandbox=latency:100ms,503:0.1 --seed 3 --state %s "
      .. "--param concurrency=8"):format(state))
    local text = wait_pane("tty", "onboard  %d+/300 %(%d+%%%)  [%d%.]+/s  ETA %d+:%d%d  in flight %d+")
    assert.matches("retries %d+", text)
    assert.matches("dead letters 0", text)
    -- per-attempt retry lines are counted in the area, not printed (that needs -v)
    text = wait_pane("tty", "retries [1-9]%d* %(transient [1-9]")
    assert.is_nil(text:find("retrying", 1, true), text)
    text = wait_pane("tty", "EXIT=0", 120)
    assert.matches("run r%-[%w%-]+ completed", text)
    -- the area is gone: no status line left on the screen
    assert.is_nil(text:find("in flight", 1, true), text)
    assert.is_nil(text:find("ETA", 1, true), text)
  end)

  it("Ctrl-C clears the area, then says how to resume", function()
    local state = dir .. "/int.db"
    tmux_start("int", ("examples/onboard.lua --sandbox=latency:200ms --state %s --param concurrency=4")
      :format(state))
    wait_pane("int", "in flight %d+")
    os.execute(("tmux -S %s send-keys -t int C-c"):format(socket))
    local text = wait_pane("int", "EXIT=130", 60)
    assert.matches("finishing in%-flight steps", text)
    assert.matches("scimrun examples/onboard%.lua %-%-resume", text)
    assert.is_nil(text:find("in flight", 1, true), text)
    assert.is_nil(text:find("ETA", 1, true), text)
  end)
end)

describe("verbosity", function()
  it("-v on a terminal prints the retrying lines above the area", function()
    tmux_start("verbose", ("examples/onboard.lua --sandbox=latency:50ms,503:0.08 --seed 5 -v --state %s "
      .. "--param concurrency=8"):format(dir .. "/v.db"))
    local text = wait_pane("verbose", "retrying .*class=transient")
    assert.matches("in flight %d+", text)
    wait_pane("verbose", "EXIT=0", 120)
  end)

  it("--quiet: warnings and errors only, no progress; the summary still prints", function()
    local code, out, err = proc.run(("examples/onboard.lua --sandbox=503:0.1 --quiet --state %s")
      :format(dir .. "/q.db"), "SCIMRUN_PROGRESS_INTERVAL=0.2")
    assert.are.equal(0, code, out .. err)
    assert.is_nil(err:find(" info ", 1, true), err)
    assert.matches("run r%-[%w%-]+ completed", out)
  end)

  it("-vv adds debug lines", function()
    local code, out, err = proc.run(("examples/onboard.lua --sandbox --param csv=%s -vv --state %s")
      :format("examples/data/users_scim.csv", dir .. "/vv.db"))
    assert.are.equal(0, code, out .. err)
    assert.matches(" debug ", err)
  end)
end)

describe("progress without a terminal", function()
  it("logs a progress record every interval, in text", function()
    local code, out, err = proc.run(("examples/onboard.lua --sandbox=latency:30ms,503:0.1 --state %s "
      .. "--param concurrency=4"):format(dir .. "/lines.db"), "SCIMRUN_PROGRESS_INTERVAL=0.5")
    assert.are.equal(0, code, out .. err)
    local n = 0
    for line in err:gmatch("[^\n]+") do
      if line:find(" progress ", 1, true) then
        n = n + 1
        assert.matches("done=%d+", line)
        assert.matches("total=300", line)
        assert.matches("in_flight=%d+", line)
      end
    end
    assert.is_true(n >= 2, err)
    assert.is_nil(err:find("\27%["), "no terminal escape codes in a file")
    -- off a terminal the retries are logged one by one, as before
    assert.matches("retrying", err)
  end)

  it("logs them as JSON with --log-format json", function()
    local code, out, err = proc.run(("examples/onboard.lua --sandbox=latency:30ms --state %s "
      .. "--param concurrency=4 --log-format json"):format(dir .. "/json.db"), "SCIMRUN_PROGRESS_INTERVAL=0.5")
    assert.are.equal(0, code, out .. err)
    local got
    for line in err:gmatch("[^\n]+") do
      local ok, rec = pcall(cjson.decode, line)
      assert.is_true(ok, line)
      if rec.msg == "progress" then got = rec end
    end
    assert.is_table(got, err)
    assert.are.equal(300, got.total)
    assert.is_number(got.done)
    assert.is_number(got.rate)
  end)
end)

describe("progress events", function()
  local progress = require "scimrun.observe.progress"
  local events = require "scimrun.engine.events"

  it("counts items, retries by class, dead letters, breaker and rate limit per target", function()
    local now = 100
    local s = events.new()
    local p = progress.new { stream = s, mode = "off", name = "wf", now = function() return now end,
                             log = { emit = function() end } }
    s:emit { type = "input", total = 10 }
    for _ = 1, 4 do s:emit { type = "item_start" } end
    s:emit { type = "item", status = "ok", outcome = "created" }
    s:emit { type = "item", status = "failed", outcome = "dead_lettered" }
    s:emit { type = "failure", retry = true, class = "transient" }
    s:emit { type = "failure", retry = true, class = "rate_limited" }
    s:emit { type = "failure", retry = false, class = "permanent" }
    s:emit { type = "breaker", target = "api", state = "open", cooldown = 30, t = now }
    s:emit { type = "rate", target = "api", rps = 25 }
    s:emit { type = "wait", reason = "rate_limit", target = "api", seconds = 2, t = now }
    now = 110
    local lines = p:lines(now)
    assert.matches("^wf  2/10 %(20%%%)  0%.2/s  ETA 0:40  in flight 2", lines[1])
    assert.are.equal("retries 2 (rate_limited 1, transient 1)  dead letters 1", lines[2])
    assert.are.equal("api: limit 25/s, 0 waiting, 0:02 waited, breaker OPEN 20s left", lines[3])
    s:emit { type = "input", total = -1, correction = true }
    assert.are.equal(9, p:figures(now).total)
  end)

  -- A worker of a shared run (--worker) reads the whole input's size but runs only its share:
  -- counted by its own items, two workers each showed half the run done at the end and an ETA
  -- twice too long.
  it("a worker shows the run's done, rate and ETA from its heartbeats, and its own share apart", function()
    local now = 0
    local s = events.new()
    local p = progress.new { stream = s, mode = "off", now = function() return now end,
                             log = { emit = function() end } }
    s:emit { type = "input", total = 1000 }
    s:emit { type = "run_items", done = 0 }
    p:sample(now)
    for _ = 1, 100 do s:emit { type = "item_start" }; s:emit { type = "item", status = "ok" } end
    now = 10
    s:emit { type = "run_items", done = 200 } -- another worker did as many
    for _ = 1, 10 do s:emit { type = "item_start" }; s:emit { type = "item", status = "ok" } end
    local f = p:figures(now)
    assert.are.equal(210, f.done)
    assert.are.equal(110, f.mine)
    assert.are.equal(21, f.percent)
    assert.are.equal(21, f.rate)
    assert.are.equal(38, f.eta_s) -- (1000 - 210) / 21 per second
    assert.matches("^210/1000 %(21%%%)  110 by this worker  21/s  ETA 0:38", p:lines(now)[1])
  end)

  it("a worker joining a run under way: what the others did before is not its rate; done stays <= total", function()
    local now = 0
    local s = events.new()
    local p = progress.new { stream = s, mode = "off", now = function() return now end,
                             log = { emit = function() end } }
    p:sample(now)
    now = 1
    s:emit { type = "run_items", done = 500, every = 10 }
    s:emit { type = "input", total = 1000 }
    p:sample(now)
    for _ = 1, 20 do s:emit { type = "item_start" }; s:emit { type = "item", status = "ok" } end
    now = 11
    s:emit { type = "run_items", done = 600, every = 10 } -- this worker's 20 and the others' 80
    local f = p:figures(now)
    assert.are.equal(600, f.done)
    assert.are.equal(10, f.rate) -- (600 - 500) / 10 s, not 600 in 11 s
    s:emit { type = "run_items", done = 1500, every = 10 } -- the others are on a batch not loaded here
    assert.are.equal(1000, p:figures(now).done)
  end)
end)
