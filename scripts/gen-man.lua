-- Rewrites the generated OPTIONS lists of man/scimrun.1 from lua/scimrun/cli/flags.lua.
-- Run from the source tree:  ./build/scimrun -l scripts/gen-man.lua [--check]
-- --check: change nothing, exit 1 when the page is out of date.
local flags = require "scimrun.cli.flags"
local path = "man/scimrun.1"
local f = assert(io.open(path, "rb"))
local text = f:read("*a")
f:close()
local new, found = flags.update_man(text)
if #found ~= #flags.ORDER then
  io.stderr:write(("%s: generated regions for %s; expected %s\n"):format(path, table.concat(found, ", "),
    table.concat(flags.ORDER, ", ")))
  return 1
end
if new == text then
  print(path .. " is up to date")
  return 0
end
if arg[1] == "--check" then
  io.stderr:write(path .. " is out of date: run ./build/scimrun -l scripts/gen-man.lua\n")
  return 1
end
f = assert(io.open(path, "wb"))
f:write(new)
f:close()
print(path .. " rewritten")
return 0
