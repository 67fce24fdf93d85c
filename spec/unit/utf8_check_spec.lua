-- UTF-8 validation (RFC 3629), in C (scimrun.utf8) under scimrun.input.utf8_check: the offset
-- of the first bad byte, or nil; sanitize replaces each bad byte by U+FFFD.
local utf8_check = require "scimrun.input.utf8_check"

describe("utf8_check.invalid_at", function()
  it("accepts ASCII, multi-byte text and the edges of the ranges", function()
    for _, s in ipairs {
      "", "plain ascii, longer than eight bytes", "Zoë", "Łódź", "日本語", "emoji 😀 inside",
      "\194\128", "\223\191", "\224\160\128", "\237\159\191", "\238\128\128", "\240\144\128\128",
      "\244\143\191\191", ("x"):rep(7) .. "é" .. ("y"):rep(9),
    } do
      assert.is_nil(utf8_check.invalid_at(s), s)
    end
  end)

  it("names the first byte of what is not UTF-8", function()
    local cases = {
      { "caf\233", 4 },                    -- Latin-1 é
      { "abc\128", 4 },                    -- a lone continuation byte
      { "\192\175", 1 }, { "\193\191", 1 }, -- overlong two-byte forms
      { "\224\159\191", 1 },               -- overlong three-byte form
      { "\240\143\191\191", 1 },           -- overlong four-byte form
      { "\237\160\128", 1 },               -- a surrogate, U+D800
      { "\244\144\128\128", 1 },           -- above U+10FFFF
      { "\245\128\128\128", 1 }, { "\255", 1 },
      { "ok \226\130", 4 },                -- a sequence cut short at the end
      { "\226\40\161", 1 },                -- a sequence broken by ASCII
      { ("a"):rep(16) .. "\200", 17 },     -- after two eight-byte ASCII runs
      { "é\233", 3 },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[2], utf8_check.invalid_at(c[1]), ("%q"):format(c[1]))
    end
  end)

  it("sanitize keeps valid text and replaces each bad byte", function()
    assert.are.equal("Zoë", utf8_check.sanitize("Zoë"))
    assert.are.equal("caf\239\191\189 ok", utf8_check.sanitize("caf\233 ok"))
    assert.are.equal("\239\191\189\239\191\189é", utf8_check.sanitize("\192\175é"))
  end)
end)
