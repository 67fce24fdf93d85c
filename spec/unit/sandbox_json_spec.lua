-- The sandbox's JSON (lua-cjson underneath): arrays stay arrays, `[]` stays `[]`, numbers stay
-- exact, and a malformed body gives a message the sandbox returns as 400 invalidSyntax.
local json = require "scimrun.sandbox.json"

local A = json.array

-- Structural equality that also compares the array marks.
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  if json.is_array(a) ~= json.is_array(b) then return false end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function roundtrip(text) return json.encode(assert(json.decode(text))) end

describe("sandbox json.decode", function()
  it("marks arrays, empty ones included, and tells them from empty objects", function()
    local v = assert(json.decode('{"schemas":["urn:x"],"emails":[],"name":{},"members":[[],{}]}'))
    assert.is_true(json.is_array(v.schemas))
    assert.is_true(json.is_array(v.emails))
    assert.is_false(json.is_array(v.name))
    assert.is_false(json.is_array(v))
    assert.is_true(json.is_array(v.members[1]))
    assert.is_false(json.is_array(v.members[2]))
  end)

  it("keeps [] and {} apart in every mix, brackets inside strings included", function()
    for _, text in ipairs {
      '[]', '{}', '[[]]', '[{}]', '{"a":[ ]}', '{"a":{ }}', '{"a":[],"b":{}}',
      '{"a":[],"b":{},"s":"x[]y"}', '{"s":"[]","o":{}}', '{"s":"q\\"[]","e":[],"o":{}}',
      '{"s":"b\\\\","e":[],"o":{},"t":"[ ]"}', ' { "x" : [\n] , "y" : {\t} } ',
    } do
      local v = assert(json.decode(text))
      assert.is_true(same(v, json.decode(roundtrip(text))), text)
    end
    assert.are.equal('{"s":"x[]y"}', json.encode(json.decode('{"s":"x[]y"}')))
    local v = json.decode('{"a":[],"b":{},"s":"x[]y"}')
    assert.is_true(json.is_array(v.a))
    assert.is_false(json.is_array(v.b))
    assert.are.equal("x[]y", v.s)
  end)

  it("reads values as JSON defines them", function()
    local v = assert(json.decode('{"n":-1.5e3,"t":true,"f":false,"z":null,"u":"\\u00e9\\ud83d\\ude00\\/"}'))
    assert.are.equal(-1500, v.n)
    assert.is_true(v.t)
    assert.is_false(v.f)
    assert.are.equal(json.null, v.z)
    assert.are.equal("é😀/", v.u)
    assert.are.equal(5, json.decode("5"))
    assert.are.equal("s", json.decode('"s"'))
  end)

  it("returns nil and a message with the position for a malformed body", function()
    for text, want in pairs {
      [""] = "expected value but found the end of the body at character 1",
      ["{"] = "expected object key string but found the end of the body at character 2",
      ["[1,2"] = "expected comma or array end but found the end of the body at character 5",
      ['{"a":1,}'] = "expected object key string but found '}' at character 8",
      ['{"a" 1}'] = "expected colon but found a number at character 6",
      ["{} x"] = "at character 4",
      ['{"a":[],"b":{}} x'] = "at character 17",
      ['{"a":"[]","b":{}'] = "at character 17",
      ["0x10"] = "invalid number",
      ["NaN"] = "at character 1",
      ["[01]"] = "invalid number",
      ['"\\x"'] = "invalid escape code",
      ['"abc'] = "unexpected end of string",
      ['"\\ud83d"'] = "invalid unicode escape code",
    } do
      local v, err = json.decode(text)
      assert.is_nil(v, text)
      assert.is_truthy(err:find(want, 1, true), ("%q: %s"):format(text, err))
    end
    local v, err = json.decode(nil)
    assert.is_nil(v)
    assert.are.equal("no body", err)
  end)

  it("refuses nesting deeper than 200 levels", function()
    assert.is_table(json.decode(("["):rep(200) .. ("]"):rep(200)))
    local v, err = json.decode(("["):rep(201) .. ("]"):rep(201))
    assert.is_nil(v)
    assert.matches("too many nested data structures", err)
  end)
end)

describe("sandbox json.encode", function()
  it("writes marked empty arrays as [] and other empty tables as {}", function()
    assert.are.equal("[]", json.encode(A({})))
    assert.are.equal("{}", json.encode({}))
    assert.are.equal('{"a":[]}', json.encode({ a = A({}) }))
    assert.are.equal('[[],{},[1]]', json.encode(A({ A({}), {}, { 1 } })))
  end)

  it("writes numbers exactly and / unescaped", function()
    assert.are.equal("3", json.encode(3))
    assert.are.equal("0.1", json.encode(0.1))
    assert.are.equal(1 / 3, json.decode(json.encode(1 / 3)))
    assert.are.equal(2 ^ 53, json.decode(json.encode(2 ^ 53)))
    assert.are.equal("123456789012345", json.encode(123456789012345))
    assert.are.equal('{"n":123456789012345.5}', json.encode({ n = 123456789012345.5 }))
    assert.are.equal('"http://h/scim/v2"', json.encode("http://h/scim/v2"))
    assert.are.equal('"a\\\\/b"', json.encode("a\\/b"))
    assert.are.equal("a\\/b", json.decode(json.encode("a\\/b")))
  end)

  it("leaves the value it encodes as it was, after an error too", function()
    local empty, third = A({}), 1 / 3
    local v = { a = empty, b = { third, empty } }
    json.encode(v)
    assert.are.equal(empty, v.a)
    assert.are.equal(third, v.b[1])
    assert.are.equal(empty, v.b[2])
    local bad = { a = empty, n = 1 / 3, f = print }
    assert.has_error(function() json.encode(bad) end)
    assert.are.equal(empty, bad.a)
    assert.are.equal(third, bad.n)
  end)

  it("refuses what JSON cannot hold", function()
    assert.has_error(function() json.encode({ f = print }) end)
    assert.has_error(function() json.encode(0 / 0) end)
    assert.has_error(function() json.encode({ math.huge }) end)
  end)

  it("round-trips a SCIM resource", function()
    local user = { schemas = A({ "urn:ietf:params:scim:schemas:core:2.0:User" }), id = "u1", userName = "o'brien",
      name = { givenName = "Ní", familyName = "O\"Brien" }, emails = A({ { value = "a@b", primary = true } }),
      groups = A({}), active = false, meta = { location = "http://127.0.0.1/scim/v2/Users/u1", version = 'W/"1"' } }
    assert.is_true(same(user, json.decode(json.encode(user))))
  end)
end)

describe("sandbox json.copy", function()
  it("copies deeply and keeps the marks", function()
    local v = { a = A({}), b = { c = A({ 1 }) } }
    local c = json.copy(v)
    assert.are_not.equal(v.b, c.b)
    assert.is_true(same(v, c))
    assert.is_true(json.is_array(c.a))
  end)
end)
