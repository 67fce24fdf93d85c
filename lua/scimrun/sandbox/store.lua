-- In-memory resources of the sandbox, with an optional JSON snapshot on disk.
--   store.new{ persist = path | nil } -> store | nil, message
--   store:get(kind, id) / store:list(kind) (creation order) / store:put(kind, res) / store:delete(kind, id)
--   store:find_unique(kind, value) -> id of the user with that userName / group with that
--     displayName, compared case-insensitively
--   store:groups_of(user_id) -> { group, ... }
--   store:commit()  writes the snapshot (tmp file + os.rename, so a reader never sees half)
--   store:reset()
-- kind is "Users" or "Groups". Resources are plain tables holding their own meta.
local json = require "scimrun.sandbox.json"

local M = {}

local Store = {}
Store.__index = Store

local UNIQUE = { Users = "userName", Groups = "displayName" }

local function empty(self)
  self.data = { Users = {}, Groups = {} }
  self.order = { Users = {}, Groups = {} }
  self.unique = { Users = {}, Groups = {} }
  self.member_of = {}
  self.serial = 0
end

local function unique_key(kind, res)
  local v = res[UNIQUE[kind]]
  return type(v) == "string" and v:lower() or nil
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

local function load(self, path)
  local f = io.open(path, "rb")
  if not f then return true end
  local text = f:read("*a")
  f:close()
  if text == "" then return true end
  local snap, err = json.decode(text)
  if type(snap) ~= "table" then
    return nil, ("cannot read the sandbox snapshot %s: %s (move it away to start empty)")
      :format(path, err or "not an object")
  end
  self.serial = tonumber(snap.serial) or 0
  for _, kind in ipairs({ "Users", "Groups" }) do
    for _, res in ipairs(snap[kind] or {}) do
      if type(res) == "table" and type(res.id) == "string" then self:put(kind, res) end
    end
  end
  return true
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

-- Inserts or replaces (same id keeps its place in the order).
function Store:put(kind, res)
  local old = self.data[kind][res.id]
  if old then
    local k = unique_key(kind, old)
    if k and self.unique[kind][k] == old.id then self.unique[kind][k] = nil end
    if kind == "Groups" then index_members(self, old, false) end
  else
    local order = self.order[kind]
    order[#order + 1] = res.id
  end
  self.data[kind][res.id] = res
  local k = unique_key(kind, res)
  if k then self.unique[kind][k] = res.id end
  if kind == "Groups" then index_members(self, res, true) end
end

function Store:delete(kind, id)
  local old = self.data[kind][id]
  if not old then return false end
  local k = unique_key(kind, old)
  if k and self.unique[kind][k] == id then self.unique[kind][k] = nil end
  if kind == "Groups" then index_members(self, old, false) end
  self.data[kind][id] = nil
  local order = self.order[kind]
  for i = 1, #order do
    if order[i] == id then table.remove(order, i) break end
  end
  return true
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

-- A fresh id: 128 random bits from /dev/urandom formatted as a UUID (v4 layout).
local urandom
function Store:new_id()
  self.serial = self.serial + 1
  if urandom == nil then urandom = io.open("/dev/urandom", "rb") or false end
  local bytes = urandom and urandom:read(16)
  if not bytes or #bytes ~= 16 then
    local t = {}
    for i = 1, 16 do t[i] = string.char(math.random(0, 255)) end
    bytes = table.concat(t)
  end
  local b = { bytes:byte(1, 16) }
  b[7] = 0x40 + b[7] % 16
  b[9] = 0x80 + b[9] % 64
  local hex = ("%02x"):rep(16):format(unpack(b))
  return ("%s-%s-%s-%s-%s"):format(hex:sub(1, 8), hex:sub(9, 12), hex:sub(13, 16), hex:sub(17, 20), hex:sub(21, 32))
end

function Store:commit()
  if not self.persist then return true end
  -- Passwords (writeOnly) stay in memory only: the snapshot never holds a secret.
  local users = json.array({})
  for i, u in ipairs(self:list("Users")) do
    local c = {}
    for k, v in pairs(u) do c[k] = v end
    c.password = nil
    users[i] = c
  end
  local snap = { serial = self.serial, Users = users, Groups = json.array(self:list("Groups")) }
  local tmp = self.persist .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, ("cannot write the sandbox snapshot: %s"):format(err) end
  f:write(json.encode(snap), "\n")
  f:close()
  local ok, rerr = os.rename(tmp, self.persist)
  if not ok then return nil, ("cannot replace the sandbox snapshot: %s"):format(rerr) end
  return true
end

function Store:reset()
  empty(self)
  return self:commit()
end

return M
