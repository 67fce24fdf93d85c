-- The sandbox's in-memory store: resource ids.
local store_mod = require "scimrun.sandbox.store"

describe("sandbox store ids", function()
  it("are distinct version-4 UUIDs, also across the random pool's refills", function()
    local st = assert(store_mod.new {})
    local seen, n = {}, 1000 -- 1000 ids take four 4 KiB pools
    for _ = 1, n do
      local id = st:new_id()
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", id)
      assert.is_nil(seen[id], "id repeated: " .. id)
      seen[id] = true
    end
    assert.are.equal(n, st.serial)
  end)
end)
