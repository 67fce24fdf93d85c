-- scimrun.fs: mkdir -p, stat, copy and cwd on libuv's synchronous uv_fs_* calls, with luv's
-- error convention (nil, "ECODE: message: path", "ECODE").
local fs = require "scimrun.fs"
local proc = require "spec.helpers.proc"

local dir = proc.tmpdir("fs")
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function write(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then os.execute(("chmod %s '%s'"):format(mode, path)) end
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function octal(s) return tonumber(s, 8) end

describe("scimrun.fs.mkdir_p", function()
  it("creates every missing folder of the path with the mode given", function()
    local path = dir .. "/a/b/c"
    assert.is_true(fs.mkdir_p(path, octal("700")))
    for _, p in ipairs { dir .. "/a", dir .. "/a/b", path } do
      local st = assert(fs.stat(p))
      assert.are.equal("directory", st.type)
      assert.are.equal(octal("700"), st.perm)
    end
  end)

  it("accepts folders that exist, a trailing slash and the root", function()
    assert.is_true(fs.mkdir_p(dir .. "/a/b/c"))
    assert.is_true(fs.mkdir_p(dir .. "/a/b/c/"))
    assert.is_true(fs.mkdir_p(dir .. "//d//e"))
    assert.are.equal("directory", fs.stat(dir .. "/d/e").type)
    assert.is_true(fs.mkdir_p("/"))
  end)

  it("leaves the mode of a folder that exists as it is", function()
    assert.is_true(fs.mkdir_p(dir .. "/open", octal("755")))
    assert.is_true(fs.mkdir_p(dir .. "/open/inner", octal("700")))
    assert.are.equal(octal("755"), fs.stat(dir .. "/open").perm)
  end)

  it("fails with ENOTDIR when a parent is a file, EEXIST when the path is one", function()
    write(dir .. "/plain", "x")
    local ok, err, code = fs.mkdir_p(dir .. "/plain/sub")
    assert.is_nil(ok)
    assert.are.equal("ENOTDIR", code)
    assert.are.equal("ENOTDIR: not a directory: " .. dir .. "/plain/sub", err)
    ok, err, code = fs.mkdir_p(dir .. "/plain")
    assert.is_nil(ok)
    assert.are.equal("EEXIST", code)
    assert.matches("^EEXIST: ", err)
  end)

  it("fails with the system's reason where nothing can be created", function()
    local ok, err, code = fs.mkdir_p("/proc/scimrun-no/such")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.matches("/proc/scimrun%-no/such", err)
    ok, err, code = fs.mkdir_p("")
    assert.is_nil(ok)
    assert.are.equal("EINVAL", code)
    assert.is_string(err)
  end)

  it("raises on misuse", function()
    assert.has_error(function() fs.mkdir_p() end)
    assert.has_error(function() fs.mkdir_p({}) end)
    assert.has_error(function() fs.mkdir_p(dir .. "/m", octal("10000")) end)
    assert.has_error(function() fs.mkdir_p(dir .. "/m", -1) end)
  end)
end)

describe("scimrun.fs.stat", function()
  it("describes a file", function()
    write(dir .. "/six", "123456", "0640")
    local st = assert(fs.stat(dir .. "/six"))
    assert.are.equal("file", st.type)
    assert.are.equal(6, st.size)
    assert.are.equal(octal("640"), st.perm)
    assert.are.equal(octal("100640"), st.mode)
    assert.are.equal(1, st.nlink)
    for _, k in ipairs { "ino", "dev", "uid", "gid", "mtime" } do assert.is_number(st[k], k) end
    assert.is_true(math.abs(st.mtime - os.time()) < 60)
  end)

  it("follows links and tells files, folders and devices apart", function()
    os.execute(("ln -s six '%s/link'"):format(dir))
    local st, target = assert(fs.stat(dir .. "/link")), assert(fs.stat(dir .. "/six"))
    assert.are.equal(target.ino, st.ino)
    assert.are.equal("directory", fs.stat(dir).type)
    assert.are.equal("char", fs.stat("/dev/null").type)
  end)

  it("returns nil, message, code for a missing path", function()
    local st, err, code = fs.stat(dir .. "/missing")
    assert.is_nil(st)
    assert.are.equal("ENOENT", code)
    assert.are.equal("ENOENT: no such file or directory: " .. dir .. "/missing", err)
    st, err, code = fs.stat(dir .. "/six/below")
    assert.is_nil(st)
    assert.are.equal("ENOTDIR", code)
    assert.is_string(err)
  end)

  it("raises on misuse", function()
    assert.has_error(function() fs.stat() end)
    assert.has_error(function() fs.stat(true) end)
  end)
end)

describe("scimrun.fs.copyfile", function()
  it("copies the bytes and the mode", function()
    local bytes = ("line\0with\255bytes\n"):rep(10000)
    write(dir .. "/src", bytes, "0600")
    assert.is_true(fs.copyfile(dir .. "/src", dir .. "/dst"))
    assert.are.equal(bytes, read(dir .. "/dst"))
    assert.are.equal(octal("600"), fs.stat(dir .. "/dst").perm)
  end)

  it("replaces an existing destination unless excl is given", function()
    write(dir .. "/small", "new")
    write(dir .. "/old", "old contents")
    assert.is_true(fs.copyfile(dir .. "/small", dir .. "/old"))
    assert.are.equal("new", read(dir .. "/old"))
    local ok, err, code = fs.copyfile(dir .. "/src", dir .. "/old", { excl = true })
    assert.is_nil(ok)
    assert.are.equal("EEXIST", code)
    assert.are.equal(("EEXIST: file already exists: %s/src -> %s/old"):format(dir, dir), err)
    assert.are.equal("new", read(dir .. "/old"))
  end)

  it("fails with nil, message, code for a missing source or destination folder", function()
    local ok, err, code = fs.copyfile(dir .. "/nothing", dir .. "/x")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.matches("nothing %-> ", err)
    ok, err, code = fs.copyfile(dir .. "/src", dir .. "/no/such/dir/x")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.is_string(err)
  end)

  it("raises on misuse", function()
    assert.has_error(function() fs.copyfile(dir .. "/src") end)
    assert.has_error(function() fs.copyfile(dir .. "/src", dir .. "/y", "excl") end)
  end)
end)

describe("scimrun.fs.cwd", function()
  it("is the folder that relative paths start from", function()
    local cwd = assert(fs.cwd())
    assert.matches("^/", cwd)
    assert.are.equal(fs.stat(".").ino, fs.stat(cwd).ino)
    assert.are.equal(fs.stat(".").dev, fs.stat(cwd).dev)
  end)
end)
