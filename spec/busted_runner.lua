-- Runs busted inside the scimrun binary: `scimrun -l spec/busted_runner.lua [busted args]`.
-- Specs therefore exercise the real runtime (loop, transport, store), as Neovim's do under nvim -ll.
-- The exit status is busted's verdict alone: a spec that makes a task fail on purpose must not
-- turn a green run red, and busted signals failure by raising error() with no message.
package.path = "spec/?.lua;" .. package.path
-- Suites run at once (ctest -j2) and name their temporary files with math.random: seeded by
-- process, or they all draw the same numbers and share (and remove) each other's files.
do
  local f = io.open("/proc/self/stat")
  local pid = f and tonumber(f:read("*l"):match("^(%d+)")) or 0
  if f then f:close() end
  math.randomseed(os.time() * 65536 + pid)
end
local ok, err = pcall(require "busted.runner", { standalone = false })
if not ok then
  if err ~= nil then io.stderr:write(tostring(err), "\n") end
  os.exit(1, true)
end
os.exit(0, true)
