-- The one place that opens a checkpoint store from a --state spec: a postgres:// or
-- postgresql:// URL (any case) is the PostgreSQL store (scimrun.postgres.store), anything else
-- a path to an SQLite state file (scimrun.store). Both return a `db` with the same methods.
local pg_url = require "scimrun.postgres.url"

local M = {}

function M.is_postgres(spec) return pg_url.is_postgres(spec) end

-- open(spec, opts) -> db | nil, err, code. opts as both stores take them: readonly,
-- durability ("full" | "normal"), max_value_bytes.
function M.open(spec, opts)
  if M.is_postgres(spec) then return require("scimrun.postgres.store").open(spec, opts) end
  return require("scimrun.store").open(spec, opts)
end

-- The spec for a message: "state database postgres://..." (any password masked) or
-- "state file PATH".
function M.describe(spec)
  if M.is_postgres(spec) then return "state database " .. pg_url.redact(spec) end
  return "state file " .. tostring(spec)
end

-- "postgres" or "sqlite": which store a db is.
function M.kind(db) return db.kind or "sqlite" end

return M
