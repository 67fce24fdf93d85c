-- scimrun.sha256: OpenSSL's SHA-256, one-shot and streaming, and the hashes built on it.
local sha256 = require "scimrun.sha256"
local proc = require "spec.helpers.proc"

-- FIPS 180-4 / NIST CAVS example vectors.
local VECTORS = {
  { "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
  { "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
  { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
  { ("a"):rep(1000000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
}

describe("scimrun.sha256", function()
  it("hashes the standard test vectors", function()
    for _, v in ipairs(VECTORS) do assert.are.equal(v[2], sha256.hex(v[1])) end
  end)

  it("hashes bytes, NULs included, and gives 64 lowercase hex digits", function()
    local h = sha256.hex("a\0b")
    assert.are_not.equal(sha256.hex("a"), h)
    assert.matches("^[0-9a-f]+$", h)
    assert.are.equal(64, #h)
  end)

  it("streams: any split of the input gives the one-shot digest", function()
    local s = ("0123456789"):rep(1000) .. "\255\0tail"
    for _, size in ipairs { 1, 7, 55, 56, 63, 64, 65, 4096, #s } do
      local h = sha256.new()
      for i = 1, #s, size do h:update(s:sub(i, i + size - 1)) end
      assert.are.equal(sha256.hex(s), h:hex(), "chunks of " .. size)
    end
    assert.are.equal(VECTORS[1][2], sha256.new():hex())
  end)

  it("chains update, repeats hex and refuses an update after it", function()
    local h = sha256.new()
    assert.are.equal(h, h:update("a"):update("bc"))
    assert.are.equal(VECTORS[2][2], h:hex())
    assert.are.equal(VECTORS[2][2], h:hex())
    assert.has_error(function() h:update("more") end, "sha256: update after hex()")
  end)

  it("raises on misuse", function()
    assert.has_error(function() sha256.hex() end)
    assert.has_error(function() sha256.hex({}) end)
    assert.has_error(function() sha256.new():update(nil) end)
    assert.has_error(function() sha256.new().update({}, "x") end)
  end)

  it("is what csv.hash and the policy snapshot use", function()
    local dir = proc.tmpdir("sha")
    local path = dir .. "/in.csv"
    local f = assert(io.open(path, "wb"))
    local body = ("userName\n" .. ("alice\n"):rep(30000))
    f:write(body)
    f:close()
    assert.are.equal("sha256:" .. sha256.hex(body), require("scimrun.csv").hash(path))
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
