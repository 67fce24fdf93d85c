-- Runs busted inside the scimrun binary: `scimrun -l spec/busted_runner.lua [busted args]`.
-- Specs therefore exercise the real runtime (loop, transport, store), as Neovim's do under nvim -ll.
-- The exit status is busted's verdict alone: a spec that makes a task fail on purpose must not
-- turn a green run red, and busted signals failure by raising error() with no message.
package.path = "spec/?.lua;" .. package.path
local ok, err = pcall(require "busted.runner", { standalone = false })
if not ok then
  if err ~= nil then io.stderr:write(tostring(err), "\n") end
  os.exit(1, true)
end
os.exit(0, true)
