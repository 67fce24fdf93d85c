-- Runs busted inside the scimrun binary: `scimrun -l spec/busted_runner.lua [busted args]`.
-- Specs therefore exercise the real runtime (loop, transport, store), as Neovim's do under nvim -ll.
package.path = "spec/?.lua;" .. package.path
require "busted.runner" ({ standalone = false })
