-- A provider behind a private CA: a CA and a server certificate for 127.0.0.1 made with openssl
-- here, an HTTPS listener (python3's ssl) answering every request 404. With the CA given
-- (scim.connect's ca_file, or SCIMRUN_CA_FILE) the TLS handshake succeeds and the 404 comes
-- back; without it the failure is class permanent, kind tls, and says what to set.
local proc = require "helpers.proc"
local scim = require "scimrun.scim"

local dir = proc.tmpdir("tls-ca")
local port, pid

local function sh(cmd)
  local ok = os.execute(cmd .. " >/dev/null 2>&1")
  assert(ok == true or ok == 0, "failed: " .. cmd)
end

setup(function()
  local d = "'" .. dir .. "'"
  sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/ca.key -out %s/ca.pem -days 2 "
    .. "-subj '/CN=scimrun spec CA'"):format(d, d))
  sh(("openssl req -newkey rsa:2048 -nodes -keyout %s/srv.key -out %s/srv.csr -subj '/CN=127.0.0.1'"):format(d, d))
  local ext = assert(io.open(dir .. "/ext.cnf", "w"))
  ext:write("subjectAltName=IP:127.0.0.1\n")
  ext:close()
  sh(("openssl x509 -req -in %s/srv.csr -CA %s/ca.pem -CAkey %s/ca.key -CAcreateserial -out %s/srv.pem "
    .. "-days 2 -extfile %s/ext.cnf"):format(d, d, d, d, d))
  local script = dir .. "/https.py"
  local f = assert(io.open(script, "w"))
  f:write([[
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = b'{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"404","detail":"none"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1] + "/srv.pem", sys.argv[1] + "/srv.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
open(sys.argv[2], "w").write(str(srv.server_address[1]))
srv.serve_forever()
]])
  f:close()
  port, pid = proc.start_listening("https", function(port_file)
    return ("python3 %s %s %s"):format(proc.sh_quote(script), proc.sh_quote(dir), proc.sh_quote(port_file))
  end, "the HTTPS test server did not start")
end)

teardown(function()
  if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
  os.execute("rm -rf '" .. dir .. "'")
end)

local function get(opts)
  opts.base_url = ("https://127.0.0.1:%d/scim/v2"):format(port)
  opts.token, opts.discover = "t0ken-for-tls-spec", false
  local sp = scim.connect(opts)
  return select(2, sp.users:get("someone"))
end

describe("a provider behind a private CA", function()
  it("is trusted with scim.connect's ca_file", function()
    local err = get { ca_file = dir .. "/ca.pem" }
    assert.are.equal(404, err.status) -- the handshake went through
  end)

  it("is trusted with SCIMRUN_CA_FILE", function()
    scimrun.setenv("SCIMRUN_CA_FILE", dir .. "/ca.pem")
    local err = get {}
    scimrun.setenv("SCIMRUN_CA_FILE", "")
    assert.are.equal(404, err.status)
  end)

  it("fails as tls, permanent, saying what to set, without it", function()
    local err = get {}
    assert.are.same({ "tls", "permanent" }, { err.kind, err.class })
    assert.matches("ca_file or SCIMRUN_CA_FILE", err.suggest)
  end)

  it("refuses a ca_file that cannot be read, naming it", function()
    local ok, err = pcall(get, { ca_file = dir .. "/missing.pem" })
    assert.is_false(ok)
    assert.are.equal("config", err.class)
    assert.matches("missing.pem cannot be read", err.detail)
  end)
end)
