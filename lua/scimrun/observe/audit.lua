-- The audit trail: every write scimrun makes at a service provider, recorded append-only in
-- the state file (table `audit`, store migration 3) and listed by `scimrun audit`.
--
-- The SCIM client emits one `write` event per write on the run's stream (scimrun.scim.resource
-- R:_written: create, PATCH, PUT, DELETE, each call's membership change); attach() turns each
-- into rows that ride on the engine's group commit (no transaction of their own): a row is in
-- the same transaction as the completion of the step that made the write, or an earlier one.
-- A membership change is one row per member, so `scimrun audit --user NAME` finds the groups a
-- user joined. Dry runs write nothing (they make no write). A row holds the run, the item (the
-- step's key), operation, HTTP method, target (host), resource kind, id and name, the member,
-- the changed attributes (scimrun.scim.changes: before -> after, never a secret), the result
-- (created, adopted, updated, deactivated, deleted, absent, added, removed, replaced, failed),
-- the HTTP status and the error's detail (redacted). Never a token or a header.
-- `dlq replay` records its writes with record().
--
-- Known gap: a process killed between a write and the next group commit leaves no row for it
-- (the step is in doubt and its recovery looks the effect up instead of writing again).
local cjson = require "cjson"

local M = {}

M.DEFAULT_RETENTION_DAYS = 365

local function encode(v)
  if v == nil then return nil end
  local ok, json = pcall(cjson.encode, v)
  return ok and json or nil
end

-- The store rows (apply ops "audit_add", without run_id) of one write event.
function M.rows(ev)
  local base = {
    op = "audit_add", item = ev.item, operation = ev.op or "?", method = ev.method, target = ev.target,
    resource_type = ev.resource, resource_id = ev.id ~= nil and tostring(ev.id) or nil,
    resource_name = ev.name ~= nil and tostring(ev.name) or nil, result = ev.result or "?",
    status = tonumber(ev.status), detail = ev.detail,
  }
  if base.status and (base.status < 0 or base.status % 1 ~= 0) then base.status = nil end
  local members
  for _, c in ipairs(ev.changes or {}) do
    if c.attribute == "members" and (c.added or c.removed) then members = c end
  end
  if not members then
    base.changes_json = ev.changes and #ev.changes > 0 and encode(ev.changes) or nil
    return { base }
  end
  local out = {}
  local key = members.added and "added" or "removed"
  -- one row per member: its changes_json written directly, not a table encoded per row
  local head = '[{"attribute":"members","' .. key .. '":['
  local ids = members[key]
  for i, id in ipairs(ids) do
    local row = base -- the last (usually the only) member's row is base itself
    if i < #ids then
      row = {}
      for k, v in pairs(base) do row[k] = v end
    end
    local text = encode(id)
    row.member_id = tostring(id)
    row.changes_json = text and head .. text .. "]}]" or nil
    out[#out + 1] = row
  end
  return out
end

-- Subscribes to the run's stream: o.enqueue(op) queues each row for the next group commit
-- (the engine fills in the run id). Nothing in a dry run.
function M.attach(stream, o)
  if o.dry_run then return end
  stream:subscribe(function(ev)
    if ev.dry_run then return end
    for _, row in ipairs(M.rows(ev)) do o.enqueue(row) end
  end, { "write" })
end

-- Deletes rows older than the retention (audit.retention_days). Returns the number deleted,
-- or nil, err.
function M.prune(db, days)
  days = days or M.DEFAULT_RETENTION_DAYS
  if not db.audit_prune then return 0 end
  local ok, n, err = pcall(db.audit_prune, db, days * 86400)
  if not ok then return nil, tostring(n) end
  if not n then return nil, err end
  return n
end

-- The rows of a write made outside a run's stream (dlq replay re-sending a recorded request).
-- w: run_id, item, operation, method, url, body (JSON text of the request), result, status,
-- detail, resource_id (when the URL does not name it: a create's answer)
function M.request_rows(w)
  local changes = require "scimrun.scim.changes"
  local body = type(w.body) == "string" and w.body ~= "" and select(2, pcall(cjson.decode, w.body)) or nil
  local path = type(w.url) == "string" and w.url:match("^%a+://[^/]+(/[^?#]*)") or ""
  local kind, id = path:match("/(%a+)/([^/]+)$")
  if not (kind and (kind:lower() == "users" or kind:lower() == "groups")) then kind, id = path:match("/(%a+)$"), nil end
  kind = kind and kind:lower()
  local list
  if type(body) == "table" and type(body.Operations) == "table" then
    -- a membership PATCH of this client: members added as values, removed by value paths
    local added, removed = {}, {}
    for _, o in ipairs(body.Operations) do
      local op = type(o.op) == "string" and o.op:lower()
      if op == "add" and o.path == "members" and type(o.value) == "table" then
        for _, m in ipairs(o.value) do added[#added + 1] = type(m) == "table" and m.value or nil end
      elseif op == "remove" and type(o.path) == "string" then
        local mid = o.path:match('^members%[value eq "(.-)"%]$')
        if mid then removed[#removed + 1] = mid end
      end
    end
    if kind == "groups" and (#added > 0 or #removed > 0) then
      list = #added > 0 and changes.members("add", added) or changes.members("remove", removed)
    else
      list = changes.from_ops(body.Operations)
    end
  elseif type(body) == "table" then
    list = changes.from_attrs(body, { replace = w.method == "PUT" })
  end
  local target = type(w.url) == "string" and w.url:match("^%a+://([^/?#]+)") or nil
  local ev = { op = w.operation, method = w.method, target = target,
               resource = (kind == "users" or kind == "groups") and kind or nil, id = id, changes = list,
               item = w.item, result = w.result, status = w.status, detail = changes.redact(w.detail) }
  if not id and w.resource_id then ev.id = w.resource_id end
  local batch = M.rows(ev)
  for _, row in ipairs(batch) do row.run_id = w.run_id end
  return batch
end

-- Records such a write in its own transaction: true, or nil, err.
function M.record(db, w)
  return db:apply(M.request_rows(w))
end

return M
