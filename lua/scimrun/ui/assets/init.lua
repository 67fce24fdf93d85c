-- The console's page, style and script, served by scimrun ui from memory. They are Lua modules
-- holding long strings, so they ship the way the rest of the console does: inside the binary's
-- Lua library (lua/, installed to share/scimrun/lua), found by the same search as every module,
-- loaded once, never read from the current directory or fetched from a CDN. Plain HTML, CSS and
-- JavaScript with fetch(): no build step, no third-party file. (Compiling them into the
-- executable as C arrays would change nothing for an operator, since the executable already
-- needs its Lua library, and would add a generator to the build.)
local function asset(module, content_type)
  return { type = content_type, body = require("scimrun.ui.assets." .. module) }
end

return {
  ["index.html"] = asset("index_html", "text/html; charset=utf-8"),
  ["app.css"] = asset("app_css", "text/css; charset=utf-8"),
  ["app.js"] = asset("app_js", "text/javascript; charset=utf-8"),
}
