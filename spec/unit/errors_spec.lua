-- Built-in "what to do" texts and the three-line description of a failure.
local errors = require "scimrun.errors"

describe("errors", function()
  it("suggests by class, status and scimType when no rule did", function()
    assert.matches("^token rejected: check SCIM_TOKEN", errors.builtin_suggestion { class = "auth", status = 401 })
    assert.matches("^token rejected: check SCIM_TOKEN", errors.builtin_suggestion { class = "permanent", status = 403 })
    assert.are.equal("target rate-limited: lower concurrency or use the conservative profile",
      errors.builtin_suggestion { class = "rate_limited", status = 429 })
    assert.matches("^user exists: use update",
      errors.builtin_suggestion { class = "conflict", status = 409, scim_type = "uniqueness", op = "users.create" })
    assert.matches("^group exists: use update",
      errors.builtin_suggestion { class = "conflict", status = 409, scim_type = "uniqueness", op = "groups.create" })
    assert.matches("retry budget", errors.builtin_suggestion { class = "transient", budget_exhausted = true })
    assert.matches("no longer exists",
      errors.builtin_suggestion { class = "permanent", status = 404, op = "users.get" })
    assert.matches("file:line", errors.builtin_suggestion { class = "internal" })
  end)

  it("keeps the suggestion a rule or the client gave", function()
    local e = errors.explain { class = "auth", status = 401, suggest = "rotate the key in the vault" }
    assert.are.equal("rotate the key in the vault", e.suggest)
    e = errors.explain { class = "rate_limited", status = 429 }
    assert.matches("lower concurrency", e.suggest)
  end)

  it("fills in the dead letter's id, or points to a resume when there is none", function()
    local text = "fix the data in the source, then: scimrun dlq replay ID"
    assert.are.equal("fix the data in the source, then: scimrun dlq replay 7", errors.with_id(text, 7))
    assert.are.equal("fix the data in the source, then: resume the run with --retry-failed", errors.with_id(text, nil))
  end)

  it("describes what failed, why and what to do", function()
    local d = errors.describe({ class = "permanent", status = 400, scim_type = "invalidValue", op = "users.create",
      method = "POST", url = "https://sp.example/scim/v2/Users", step = "user:ada", detail = "bad active",
      rule = "http-client-error", attempts = 1, suggest = "fix it, then: scimrun dlq replay ID" },
      { item = "ada", dlq_id = 3 })
    assert.are.equal("users.create, POST https://sp.example/scim/v2/Users, step user:ada, item ada", d.what)
    assert.are.equal("permanent 400 invalidValue: bad active [rule http-client-error]", d.why)
    assert.are.equal("fix it, then: scimrun dlq replay 3", d.todo)
  end)
end)
