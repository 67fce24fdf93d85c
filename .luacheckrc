std = "luajit"
globals = { "scimrun" }
max_line_length = 120
exclude_files = { "build*/**", "spec/interop/node_modules/**", "spec/fixtures/bad/**" }
files["spec/**/*_spec.lua"] = { std = "+busted" }
files["spec/busted_runner.lua"] = { std = "+busted" }
files["policies/*.lua"] = { std = "min", globals = {} }
