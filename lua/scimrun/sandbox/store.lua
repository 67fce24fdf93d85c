-- In-memory resources of the sandbox, optionally persisted to a JSON-lines file: a snapshot
-- line, then one line per change (appended at each commit, so a write costs O(1), not a
-- rewrite of every resource). Loading replays the lines and compacts them into one snapshot.
--   store.new{ persist = path | nil } -> store | nil, message
--   store:get(kind, id) / store:list(kind) (creation order) / store:put(kind, res) / store:delete(kind, id)
--   store:find_unique(kind, value) -> id of the user with that userName / group with that
--     displayName, compared case-insensitively
--   store:find_external(kind, value) -> { id, ... } of the resources with that externalId (exact)
--   store:groups_of(user_id) -> { group, ... }
--   store:commit()  appends the changes since the last commit to the file
--   store:reset()
-- kind is "Users" or "Groups". Resources are plain tables holding their own meta.
local json = require "scimrun.sandbox.json"
local ffi = require "ffi"

ffi.cdef [[ int chmod(const char *path, unsigned int mode); ]]

local M = {}

local Store = {}
Store.__index = Store

local UNIQUE = { Users = "userName", Groups = "displayName" }

local function empty(self)
  self.data = { Users = {}, Groups = {} }
  self.order = { Users = {}, Groups = {} }
  self.unique = { Users = {}, Groups = {} }
  self.external = { Users = {}, Groups = {} } -- externalId -> { id = true } (not unique)
  self.member_of = {}
  self.member_index = {} -- group id -> { member value = true }, built on first in-place change
  self.serial = 0
  self.changes = {}
end

-- Passwords (writeOnly) stay in memory only: the file never holds a secret.
local function without_password(res)
  if res.password == nil then return res end
  local c = {}
  for k, v in pairs(res) do c[k] = v end
  c.password = nil
  return c
end

local function unique_key(kind, res)
  local v = res[UNIQUE[kind]]
  return type(v) == "string" and v:lower() or nil
end

local function index_external(self, kind, res, add)
  local v = res.externalId
  if type(v) ~= "string" then return end
  local set = self.external[kind][v]
  if add then
    if not set then set = {}; self.external[kind][v] = set end
    set[res.id] = true
  elseif set then
    set[res.id] = nil
    if next(set) == nil then self.external[kind][v] = nil end
  end
end

local function index_members(self, group, add)
  if type(group.members) ~= "table" then return end
  for _, m in ipairs(group.members) do
    if type(m) == "table" and type(m.value) == "string" then
      local set = self.member_of[m.value]
      if add then
        if not set then set = {}; self.member_of[m.value] = set end
        set[group.id] = true
      elseif set then
        set[group.id] = nil
      end
    end
  end
end

-- Group lines carry membership as a diff against the previous line of that group, so adding
-- one member to a 10,000-member group appends one small line.
local function member_ids(group)
  local set = {}
  for _, m in ipairs(type(group.members) == "table" and group.members or {}) do
    if type(m) == "table" and m.value ~= nil then set[m.value] = m end
  end
  return set
end

local function apply_member_diff(self, rec)
  local old = self.data.Groups[rec.res.id]
  local members, seen = json.array({}), {}
  local removed = {}
  for _, v in ipairs(rec.remove or {}) do removed[v] = true end
  for _, m in ipairs(old and old.members or {}) do
    if not removed[m.value] then members[#members + 1] = m; seen[m.value] = true end
  end
  for _, m in ipairs(rec.add or {}) do
    if not seen[m.value] then members[#members + 1] = m; seen[m.value] = true end
  end
  return members
end

local function apply_line(self, rec)
  if rec.Users or rec.Groups then -- a snapshot line
    self.serial = tonumber(rec.serial) or self.serial
    for _, kind in ipairs({ "Users", "Groups" }) do
      for _, res in ipairs(rec[kind] or {}) do
        if type(res) == "table" and type(res.id) == "string" then self:put(kind, res) end
      end
    end
  elseif rec.op == "put" and UNIQUE[rec.kind] and type(rec.res) == "table" then
    if rec.kind == "Groups" and rec.res.members == nil then rec.res.members = apply_member_diff(self, rec) end
    self:put(rec.kind, rec.res)
    self.serial = math.max(self.serial, tonumber(rec.serial) or 0)
  elseif rec.op == "del" and UNIQUE[rec.kind] then
    self:delete(rec.kind, rec.id)
  end
end

local function write_snapshot(self)
  local users = json.array({})
  for i, u in ipairs(self:list("Users")) do users[i] = without_password(u) end
  local snap = { serial = self.serial, Users = users, Groups = json.array(self:list("Groups")) }
  local tmp = self.persist .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, ("cannot write the sandbox snapshot: %s"):format(err) end
  f:write(json.encode(snap), "\n")
  f:close()
  -- provider data is personal data: owner-only, like the state file it sits beside
  ffi.C.chmod(tmp, 384) -- 0600
  local ok, rerr = os.rename(tmp, self.persist)
  if not ok then return nil, ("cannot replace the sandbox snapshot: %s"):format(rerr) end
  if self.journal then self.journal:close() end
  self.journal = io.open(self.persist, "ab")
  self.journaled_members = {}
  for _, g in ipairs(self:list("Groups")) do self.journaled_members[g.id] = member_ids(g) end
  return true
end

local function load(self, path)
  local f = io.open(path, "rb")
  if not f then return write_snapshot(self) end
  local text = f:read("*a")
  f:close()
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  self.loading = true
  for n, line in ipairs(lines) do
    local rec, err = json.decode(line)
    if type(rec) == "table" then
      apply_line(self, rec)
    elseif n < #lines or n == 1 then -- a torn last line (died mid-append) is expected; nothing else is
      self.loading = false
      return nil, ("cannot read the sandbox snapshot %s line %d: %s (move it away to start empty)")
        :format(path, n, err or "not an object")
    end
  end
  self.loading = false
  self.changes = {}
  return write_snapshot(self) -- compaction: one snapshot line, then appends
end

function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ persist = opts.persist }, Store)
  empty(self)
  if self.persist then
    local ok, err = load(self, self.persist)
    if not ok then return nil, err end
  end
  return self
end

function Store:get(kind, id) return self.data[kind][id] end

function Store:count(kind) return #self.order[kind] end

function Store:list(kind)
  local out = {}
  for _, id in ipairs(self.order[kind]) do out[#out + 1] = self.data[kind][id] end
  return out
end

function Store:find_unique(kind, value)
  if type(value) ~= "string" then return nil end
  return self.unique[kind][value:lower()]
end

function Store:find_external(kind, value)
  local out = {}
  for id in pairs(type(value) == "string" and self.external[kind][value] or {}) do out[#out + 1] = id end
  table.sort(out)
  return out
end

-- Inserts or replaces (same id keeps its place in the order).
function Store:put(kind, res)
  local old = self.data[kind][res.id]
  if old then
    local k = unique_key(kind, old)
    if k and self.unique[kind][k] == old.id then self.unique[kind][k] = nil end
    index_external(self, kind, old, false)
    if kind == "Groups" then index_members(self, old, false) end
  else
    local order = self.order[kind]
    order[#order + 1] = res.id
  end
  self.data[kind][res.id] = res
  if kind == "Groups" then self.member_index[res.id] = nil end
  if self.persist and not self.loading then self.changes[#self.changes + 1] = { "put", kind, res.id } end
  local k = unique_key(kind, res)
  if k then self.unique[kind][k] = res.id end
  index_external(self, kind, res, true)
  if kind == "Groups" then index_members(self, res, true) end
end

function Store:delete(kind, id)
  local old = self.data[kind][id]
  if not old then return false end
  local k = unique_key(kind, old)
  if k and self.unique[kind][k] == id then self.unique[kind][k] = nil end
  index_external(self, kind, old, false)
  if kind == "Groups" then index_members(self, old, false) end
  self.data[kind][id] = nil
  if kind == "Groups" then self.member_index[id] = nil end
  if self.persist and not self.loading then self.changes[#self.changes + 1] = { "del", kind, id } end
  local order = self.order[kind]
  for i = 1, #order do
    if order[i] == id then table.remove(order, i) break end
  end
  return true
end

-- The PATCH fast path: adds (clean {value, type, display} entries) and removes (values) the
-- members of a group in place, so one member more costs O(1), not a copy of the whole group.
-- Returns true when something changed.
function Store:change_members(group, adds, removes)
  local index = self.member_index[group.id]
  if not index then
    index = {}
    for _, m in ipairs(group.members or {}) do index[m.value] = true end
    self.member_index[group.id] = index
  end
  if type(group.members) ~= "table" then group.members = json.array({}) end
  local added, removed, drop = json.array({}), json.array({}), nil
  for _, m in ipairs(adds) do
    if not index[m.value] then
      index[m.value] = true
      group.members[#group.members + 1] = m
      local set = self.member_of[m.value]
      if not set then set = {}; self.member_of[m.value] = set end
      set[group.id] = true
      added[#added + 1] = m
    end
  end
  for _, v in ipairs(removes) do
    if index[v] then
      index[v] = nil
      drop = drop or {}
      drop[v] = true
      removed[#removed + 1] = v
      local set = self.member_of[v]
      if set then set[group.id] = nil end
    end
  end
  if drop then
    local keep = json.array({})
    for _, m in ipairs(group.members) do
      if not drop[m.value] then keep[#keep + 1] = m end
    end
    group.members = keep
  end
  local changed = #added > 0 or #removed > 0
  if changed and self.persist then
    self.changes[#self.changes + 1] = { "members", "Groups", group.id, added, removed }
  end
  return changed
end

function Store:groups_of(id)
  local out = {}
  for gid in pairs(self.member_of[id] or {}) do
    local g = self.data.Groups[gid]
    if g then out[#out + 1] = g end
  end
  table.sort(out, function(a, b) return a.id < b.id end)
  return out
end

-- A fresh id: 128 random bits from /dev/urandom formatted as a UUID (v4 layout). The bytes
-- come from a 4 KiB pool (one read per 256 ids) and are formatted through a byte -> hex table:
-- a read and a 16-argument format per id cost the sandbox a tenth of its CPU.
local HEX = {}
for i = 0, 255 do HEX[i] = ("%02x"):format(i) end
local urandom, pool, pool_at = nil, "", 1

local function random_bytes16()
  if pool_at + 15 > #pool then
    if urandom == nil then urandom = io.open("/dev/urandom", "rb") or false end
    pool = urandom and urandom:read(4096) or ""
    if #pool < 16 then
      local t = {}
      for i = 1, 4096 do t[i] = string.char(math.random(0, 255)) end
      pool = table.concat(t)
    end
    pool_at = 1
  end
  local at = pool_at
  pool_at = at + 16
  return pool:byte(at, at + 15)
end

function Store:new_id()
  self.serial = self.serial + 1
  local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 = random_bytes16()
  return HEX[b1] .. HEX[b2] .. HEX[b3] .. HEX[b4] .. "-" .. HEX[b5] .. HEX[b6] .. "-"
    .. HEX[0x40 + b7 % 16] .. HEX[b8] .. "-" .. HEX[0x80 + b9 % 64] .. HEX[b10] .. "-"
    .. HEX[b11] .. HEX[b12] .. HEX[b13] .. HEX[b14] .. HEX[b15] .. HEX[b16]
end

function Store:commit()
  if not self.persist then return true end
  if not self.journal then return nil, "cannot append to the sandbox data file " .. self.persist end
  local lines = {}
  for i, c in ipairs(self.changes) do
    local op, kind, id = c[1], c[2], c[3]
    local res = (op == "put" or op == "members") and self.data[kind][id]
    if res and op == "members" then
      local jm = self.journaled_members[id] or {}
      for _, m in ipairs(c[4]) do jm[m.value] = m end
      for _, v in ipairs(c[5]) do jm[v] = nil end
      self.journaled_members[id] = jm
      local bare = {}
      for k, v in pairs(res) do if k ~= "members" then bare[k] = v end end
      lines[i] = json.encode({ op = "put", kind = kind, serial = self.serial, res = bare, add = c[4], remove = c[5] })
    elseif res and kind == "Groups" then
      local now, before = member_ids(res), self.journaled_members[id] or {}
      local add, remove = json.array({}), json.array({})
      for v, m in pairs(now) do if not before[v] then add[#add + 1] = m end end
      for v in pairs(before) do if not now[v] then remove[#remove + 1] = v end end
      local bare = {}
      for k, v in pairs(res) do if k ~= "members" then bare[k] = v end end
      self.journaled_members[id] = now
      lines[i] = json.encode({ op = "put", kind = kind, serial = self.serial, res = bare, add = add, remove = remove })
    elseif res then
      lines[i] = json.encode({ op = "put", kind = kind, serial = self.serial, res = without_password(res) })
    else
      if kind == "Groups" then self.journaled_members[id] = nil end
      lines[i] = json.encode({ op = "del", kind = kind, id = id })
    end
  end
  self.changes = {}
  if #lines == 0 then return true end
  local ok, err = self.journal:write(table.concat(lines, "\n"), "\n")
  if not ok then return nil, ("cannot append to the sandbox data file: %s"):format(err) end
  self.journal:flush() -- in the OS now: a killed process loses nothing it answered for
  return true
end

function Store:reset()
  empty(self)
  if not self.persist then return true end
  return write_snapshot(self)
end

function Store:close()
  if self.journal then self.journal:close(); self.journal = nil end
end

return M
