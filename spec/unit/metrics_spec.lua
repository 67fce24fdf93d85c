-- The registry and the Prometheus text exposition (lua/scimrun/observe/metrics.lua).
local metrics = require "scimrun.observe.metrics"

describe("metrics registry", function()
  it("writes counters and gauges with HELP and TYPE, series sorted, values as the format wants", function()
    local reg = metrics.registry()
    local c = reg:counter("t_requests_total", "Requests.\nSecond line with a \\.", { "op", "outcome" })
    local g = reg:gauge("t_ts_seconds", "A time.", {})
    c:inc(1, "users.create", "success")
    c:inc(2, "users.create", "success")
    c:inc(1, "groups.get", "transient")
    g:set(1796141375.469558)
    assert.are.equal(table.concat({
      "# HELP t_requests_total Requests.\\nSecond line with a \\\\.",
      "# TYPE t_requests_total counter",
      't_requests_total{op="groups.get",outcome="transient"} 1',
      't_requests_total{op="users.create",outcome="success"} 3',
      "# HELP t_ts_seconds A time.",
      "# TYPE t_ts_seconds gauge",
      "t_ts_seconds 1796141375.469558",
      "" }, "\n"), reg:expose())
  end)

  it("escapes label values and formats special numbers", function()
    local reg = metrics.registry()
    local g = reg:gauge("t_g", "G.", { "l" })
    g:set(0 / 0, 'a"b\\c\nd')
    g:set(math.huge, "inf")
    g:set(-0.5, "neg")
    local text = reg:expose()
    assert.truthy(text:find('t_g{l="a\\"b\\\\c\\nd"} NaN', 1, true), text)
    assert.truthy(text:find('t_g{l="inf"} +Inf', 1, true), text)
    assert.truthy(text:find('t_g{l="neg"} -0.5', 1, true), text)
    assert.are.equal("0.1", metrics.number(0.1))
    assert.are.equal("3", metrics.number(3))
  end)

  it("writes histograms with cumulative buckets, +Inf, sum and count", function()
    local reg = metrics.registry()
    local h = reg:histogram("t_seconds", "D.", { "op" }, { 0.1, 1 })
    h:observe(0.05, "x")
    h:observe(0.1, "x")
    h:observe(0.5, "x")
    h:observe(7, "x")
    assert.are.equal(table.concat({
      "# HELP t_seconds D.",
      "# TYPE t_seconds histogram",
      't_seconds_bucket{op="x",le="0.1"} 2',
      't_seconds_bucket{op="x",le="1"} 3',
      't_seconds_bucket{op="x",le="+Inf"} 4',
      't_seconds_sum{op="x"} 7.65',
      't_seconds_count{op="x"} 4',
      "" }, "\n"), reg:expose())
  end)

  it("refuses wrong label counts, a counter going down and bad names; touch and remove series", function()
    local reg = metrics.registry()
    local c = reg:counter("t_total", "C.", { "a" })
    assert.has_error(function() c:inc(1) end)
    assert.has_error(function() c:inc(-1, "x") end)
    assert.has_error(function() reg:gauge("bad-name", "B.") end)
    assert.has_error(function() reg:histogram("t_h", "H.", { "le" }) end)
    assert.has_error(function() reg:counter("t_total", "again") end)
    c:touch("zero")
    assert.truthy(reg:expose():find('t_total{a="zero"} 0', 1, true))
    local g = reg:gauge("t_g", "G.", { "a" })
    g:set(5, "x")
    g:remove("x")
    assert.is_nil(reg:expose():find("t_g", 1, true))
    assert.are.equal("", metrics.registry():expose())
  end)

  it("writes a file atomically, through a temporary file beside it", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    assert.is_true(metrics.write_atomic(dir .. "/x.prom", "a 1\n"))
    assert.is_true(metrics.write_atomic(dir .. "/x.prom", "a 2\n"))
    local f = assert(io.open(dir .. "/x.prom"))
    assert.are.equal("a 2\n", f:read("*a"))
    f:close()
    local ls = io.popen("ls -A " .. dir):read("*a")
    assert.are.equal("x.prom\n", ls)
    local ok, err = metrics.write_atomic(dir .. "/missing/x.prom", "a 1\n")
    assert.is_nil(ok)
    assert.is_string(err)
    os.execute("rm -rf " .. dir)
  end)
end)
