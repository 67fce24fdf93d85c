-- The audit trail's rows of one write event (scimrun.observe.audit rows): what `scimrun audit`
-- lists comes from these.
local audit = require "scimrun.observe.audit"
local cjson = require "cjson"

local function write(changes)
  return { type = "write", op = "groups.add_members", method = "PATCH", target = "idp.example:443",
           resource = "groups", id = "g-1", name = "Engineering", item = "member:x", result = "added",
           status = 200, changes = changes }
end

describe("audit rows", function()
  it("are one per member of a membership change, each naming only its member", function()
    local rows = audit.rows(write { { attribute = "members", added = { "u-1", "u-2", "u-3" } } })
    assert.are.equal(3, #rows)
    for i, id in ipairs { "u-1", "u-2", "u-3" } do
      local r = rows[i]
      assert.are.equal(id, r.member_id)
      assert.are.same({ { attribute = "members", added = { id } } }, cjson.decode(r.changes_json))
      assert.are.equal("g-1", r.resource_id)
      assert.are.equal("Engineering", r.resource_name)
      assert.are.equal("added", r.result)
      assert.are.equal(200, r.status)
      assert.are.equal("audit_add", r.op)
    end
    assert.are_not.equal(rows[1], rows[2]) -- distinct rows, not one table written three times
    assert.are_not.equal(rows[2], rows[3])
  end)

  it("of a removal name each member removed; a single member is one row", function()
    local rows = audit.rows(write { { attribute = "members", removed = { "u-9" } } })
    assert.are.equal(1, #rows)
    assert.are.equal("u-9", rows[1].member_id)
    assert.are.same({ { attribute = "members", removed = { "u-9" } } }, cjson.decode(rows[1].changes_json))
  end)

  it("of any other write are one row with the changes as JSON, and no member", function()
    local ev = write { { attribute = "title", before = "Engineer", after = "Lead" } }
    ev.op, ev.resource, ev.id, ev.name = "users.patch", "users", "u-1", "ada"
    local rows = audit.rows(ev)
    assert.are.equal(1, #rows)
    assert.is_nil(rows[1].member_id)
    assert.are.same({ { attribute = "title", before = "Engineer", after = "Lead" } },
      cjson.decode(rows[1].changes_json))
  end)
end)
