-- scimrun.httpdate: HTTP dates through libcurl's curl_getdate, and the two places that read
-- them (Retry-After in the retry layer and in one SCIM attempt).
local httpdate = require "scimrun.httpdate"
local retry = require "scimrun.resilience.retry"
local request = require "scimrun.scim.request"

local WANT = 784111777 -- Sun, 06 Nov 1994 08:49:37 GMT

describe("scimrun.httpdate.parse", function()
  it("reads the three forms of RFC 9110 5.6.7", function()
    assert.are.equal(WANT, httpdate.parse("Sun, 06 Nov 1994 08:49:37 GMT"))  -- IMF-fixdate
    assert.are.equal(WANT, httpdate.parse("Sunday, 06-Nov-94 08:49:37 GMT")) -- RFC 850
    assert.are.equal(WANT, httpdate.parse("Sun Nov  6 08:49:37 1994"))       -- asctime
  end)

  it("ignores case and reads numeric zones and dates past 2038", function()
    assert.are.equal(WANT, httpdate.parse("sun, 06 nov 1994 08:49:37 gmt"))
    assert.are.equal(WANT - 7200, httpdate.parse("Sun, 06 Nov 1994 08:49:37 +0200"))
    assert.are.equal(4102444800, httpdate.parse("Fri, 01 Jan 2100 00:00:00 GMT"))
  end)

  it("agrees with os.date", function()
    local now = os.time()
    assert.are.equal(now, httpdate.parse(os.date("!%a, %d %b %Y %H:%M:%S GMT", now)))
  end)

  it("returns nil, alone, for what is not a date", function()
    for _, s in ipairs { "", "tomorrow", "5", "1994", "Sun, 32 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT" } do
      assert.are.equal(1, select("#", httpdate.parse(s)), s)
      assert.is_nil(httpdate.parse(s), s)
    end
  end)

  it("raises on misuse", function()
    assert.has_error(function() httpdate.parse() end)
    assert.has_error(function() httpdate.parse({}) end)
  end)
end)

describe("the callers of scimrun.httpdate", function()
  it("retry.parse_http_date is nil for anything but a string", function()
    assert.are.equal(WANT, retry.parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.is_nil(retry.parse_http_date(nil))
    assert.is_nil(retry.parse_http_date(42))
  end)

  it("retry.server_delay turns a Retry-After date into seconds from the wall clock", function()
    local wall = WANT - 30
    local d, source = retry.server_delay({ headers = { ["retry-after"] = "Sun, 06 Nov 1994 08:49:37 GMT" } }, wall)
    assert.are.equal(30, d)
    assert.are.equal("Retry-After (HTTP-date)", source)
    d = retry.server_delay({ headers = { ["retry-after"] = "Sun, 06 Nov 1994 08:49:37 GMT" } }, WANT + 100)
    assert.are.equal(0, d)
    assert.is_nil(retry.server_delay({ headers = { ["retry-after"] = "soon" } }, wall))
  end)

  it("request.retry_after reads seconds or a date, never negative", function()
    assert.are.equal(7, request.retry_after("7"))
    assert.are.equal(0, request.retry_after("-3"))
    local soon = request.retry_after(os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 120))
    assert.is_true(soon >= 118 and soon <= 120, tostring(soon))
    assert.are.equal(0, request.retry_after("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.is_nil(request.retry_after("later"))
    assert.is_nil(request.retry_after(nil))
  end)
end)
