-- scimrun -l bench/sqlite_rows.lua STATE N DURABILITY
-- The comparator: one transaction per row through the same store, no batching. Prints rows/s.
local store = require "scimrun.store"
local path, n, durability = arg[1], tonumber(arg[2]), arg[3] or "full"
local db = assert(store.open(path, { durability = durability }))
assert(db:run_create { id = "r-bench", workflow_name = "bench", workflow_path = "/bench", workflow_hash = "x",
  params_json = "{}", inputs_json = "{}" })
local t0 = scimrun.now()
for i = 1, n do
  assert(db:apply { { op = "step_complete", run_id = "r-bench", key = "s" .. i, result_json = '{"v":1}',
                      attempts = 1 } })
end
print(("%.0f"):format(n / (scimrun.now() - t0)))
db:close()
