-- The libpq binding (runtime/pg_lua.c, `scimrun.pg`) against a throwaway PostgreSQL cluster this
-- spec starts (spec/helpers/pg_cluster.lua): parameters and typed results, the error contract
-- (nil, message, sqlstate), scripts, LISTEN/NOTIFY waits on the loop, closing.
-- The suite requires PostgreSQL: without it this spec fails, it does not skip.
local pg = require "scimrun.pg"
local pg_cluster = require "helpers.pg_cluster"

describe("scimrun.pg", function()
  local cluster, url
  local opened = {}

  local function connect()
    local conn, err = pg.connect(url)
    assert(conn, err)
    opened[#opened + 1] = conn
    return conn
  end

  setup(function()
    local usable, why = pg_cluster.available()
    assert(usable, "PostgreSQL is required (scripts/install-deps.sh): " .. tostring(why))
    cluster = pg_cluster.start()
    url = cluster.createdb("binding")
  end)

  teardown(function()
    if cluster then cluster.stop() end
  end)

  after_each(function()
    for _, conn in ipairs(opened) do conn:close() end
    opened = {}
  end)

  it("connects to the URL and reports status, backend pid and state", function()
    local conn = connect()
    assert.are.equal("ok", conn:status())
    assert.is_true(conn:backend_pid() > 0)
    assert.are.equal("pg.conn (open)", tostring(conn))
    local rows = assert(conn:exec("SELECT current_database() AS db"))
    assert.are.equal("binding", rows[1].db)
  end)

  it("passes nil, booleans, numbers and strings as parameters and converts results by type", function()
    local conn = connect()
    local rows, affected = conn:exec([[
      CREATE TABLE typed (id int4 PRIMARY KEY, small int2, big int8, o oid, r float4, f float8,
                          n numeric, b bool, s text, j jsonb, at timestamptz, bytes bytea)]])
    assert.are.same({}, rows)
    assert.are.equal(0, affected)
    local text = "it's \"quoted\"; -- not a comment \\ ünïcødé ✓ 日本"
    rows, affected = conn:exec([[INSERT INTO typed (id, small, big, o, r, f, n, b, s, j, at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)]],
      1, -7, 2 ^ 53, 4000000000, 0.5, 0.1, 12.25, true, text, '{"k": [1, 2]}', nil)
    assert.are.same({}, rows)
    assert.are.equal(1, affected)
    assert(conn:exec("INSERT INTO typed (id, b, n) VALUES ($1, $2, $3)", 2, false, -1e-7))

    rows = assert(conn:exec("SELECT * FROM typed ORDER BY id"))
    assert.are.equal(2, #rows)
    local r = rows[1]
    assert.are.equal(1, r.id)
    assert.are.equal(-7, r.small)
    assert.are.equal(2 ^ 53, r.big)
    assert.are.equal(4000000000, r.o)
    assert.are.equal(0.5, r.r)
    assert.are.equal(0.1, r.f)
    assert.are.equal(12.25, r.n)
    assert.are.equal(true, r.b)
    assert.are.equal(text, r.s)
    assert.are.equal('{"k": [1, 2]}', r.j)
    assert.is_nil(r.at) -- NULL is absent
    assert.is_nil(r.bytes)
    assert.are.same({ id = 2, b = false, n = -1e-7 }, rows[2])
  end)

  it("counts trailing nils as parameters and keeps integers free of a decimal point", function()
    local conn = connect()
    local rows = assert(conn:exec("SELECT $1::text AS a, $2::text AS b, $3::text AS c", "x", nil, nil))
    assert.are.same({ { a = "x" } }, rows)
    rows = assert(conn:exec("SELECT $1::text AS i, $2::text AS neg, $3::text AS big, $4::text AS frac",
      42, -3, 1e15, 1 / 3))
    assert.are.same({ i = "42", neg = "-3", big = "1000000000000000", frac = "0.3333333333333333" }, rows[1])
    rows = assert(conn:exec("SELECT $1::bool AS t, $2::bool AS f, $3::float8 AS inf", true, false, math.huge))
    assert.are.same({ t = true, f = false, inf = math.huge }, rows[1])
  end)

  it("returns the number of rows a statement affected", function()
    local conn = connect()
    assert(conn:exec_script("CREATE TABLE counted (k int PRIMARY KEY, v text)"))
    local _, n = assert(conn:exec("INSERT INTO counted SELECT g, 'v' FROM generate_series(1, 5) g"))
    assert.are.equal(5, n)
    _, n = assert(conn:exec("UPDATE counted SET v = $1 WHERE k <= $2", "w", 3))
    assert.are.equal(3, n)
    _, n = assert(conn:exec("UPDATE counted SET v = 'x' WHERE k > 100"))
    assert.are.equal(0, n)
    local rows
    rows, n = assert(conn:exec("SELECT k FROM counted WHERE v = 'w' ORDER BY k"))
    assert.are.same({ { k = 1 }, { k = 2 }, { k = 3 } }, rows)
    assert.are.equal(3, n)
    _, n = assert(conn:exec("DELETE FROM counted"))
    assert.are.equal(5, n)
  end)

  it("returns nil, message, SQLSTATE on failure and stays usable", function()
    local conn = connect()
    assert(conn:exec("CREATE TABLE uniq (k text PRIMARY KEY)"))
    assert(conn:exec("INSERT INTO uniq VALUES ($1)", "a"))
    local rows, msg, state = conn:exec("INSERT INTO uniq VALUES ($1)", "a")
    assert.is_nil(rows)
    assert.are.equal("23505", state)
    assert.matches("duplicate key", msg)
    assert.is_nil(msg:match("\n$"))
    rows, msg, state = conn:exec("SELECT * FROM no_such_table")
    assert.is_nil(rows)
    assert.are.equal("42P01", state)
    assert.matches("no_such_table", msg)
    rows, msg, state = conn:exec("SELEC 1")
    assert.is_nil(rows)
    assert.are.equal("42601", state)
    assert.is_string(msg)
    assert.are.equal("ok", conn:status())
    assert.are.same({ { one = 1 } }, (conn:exec("SELECT 1 AS one")))
  end)

  it("refuses parameters it cannot send as text", function()
    local conn = connect()
    assert.has_error(function() conn:exec("SELECT $1", {}) end)
    assert.has_error(function() conn:exec("SELECT $1", "a\0b") end)
  end)

  it("runs a script of several statements", function()
    local conn = connect()
    assert.is_true(conn:exec_script([[
      CREATE TABLE migrated (k int PRIMARY KEY);
      INSERT INTO migrated VALUES (1), (2);
    ]]))
    assert.are.same({ { n = 2 } }, (conn:exec("SELECT count(*)::int AS n FROM migrated")))
    local ok, msg, state = conn:exec_script("INSERT INTO migrated VALUES (3); INSERT INTO migrated VALUES (1);")
    assert.is_nil(ok)
    assert.matches("duplicate key", msg)
    assert.are.equal("23505", state)
    -- one implicit transaction: the first insert was rolled back with the second
    assert.are.same({ { n = 2 } }, (conn:exec("SELECT count(*)::int AS n FROM migrated")))
  end)

  describe("LISTEN/NOTIFY", function()
    it("wakes a waiting task when another connection notifies, well before the timeout", function()
      local listener, sender = connect(), connect()
      assert(listener:exec("LISTEN jobs"))
      scimrun.spawn(function()
        scimrun.sleep(0.1)
        assert(sender:exec("SELECT pg_notify($1, $2)", "jobs", "payload ✓"))
      end)
      local t0 = scimrun.now()
      local got = assert(listener:wait(5))
      local elapsed = scimrun.now() - t0
      assert.is_true(elapsed < 2, "woken after " .. elapsed .. " s")
      assert.are.same({ { channel = "jobs", payload = "payload ✓", pid = sender:backend_pid() } }, got)
    end)

    it("returns at once what has already arrived, and notifies() reads without waiting", function()
      local listener, sender = connect(), connect()
      assert(listener:exec("LISTEN a"))
      assert.are.same({}, listener:notifies())
      assert(sender:exec("NOTIFY a, 'one'"))
      assert(sender:exec("NOTIFY a, 'two'"))
      scimrun.sleep(0.1)
      local t0 = scimrun.now()
      local got = assert(listener:wait(5))
      assert.is_true(scimrun.now() - t0 < 0.5)
      if #got < 2 then got[2] = assert(listener:wait(5))[1] end -- a slow machine may split them
      assert.are.same({ "one", "two" }, { got[1].payload, got[2].payload })
      assert(sender:exec("NOTIFY a, 'three'"))
      local deadline = scimrun.now() + 5
      repeat
        scimrun.sleep(0.02)
        got = listener:notifies()
      until #got > 0 or scimrun.now() > deadline
      assert.are.equal(1, #got)
      assert.are.same({ channel = "a", payload = "three", pid = sender:backend_pid() }, got[1])
    end)

    it("returns an empty table when the timeout passes first", function()
      local listener = connect()
      assert(listener:exec("LISTEN quiet"))
      local t0 = scimrun.now()
      local got = listener:wait(0.2)
      local elapsed = scimrun.now() - t0
      assert.are.same({}, got)
      assert.is_true(elapsed >= 0.19 and elapsed < 1.5, "waited " .. elapsed .. " s")
    end)

    it("allows one wait at a time per connection, and only from a task", function()
      local listener = connect()
      assert(listener:exec("LISTEN one"))
      local first
      scimrun.spawn(function() first = { listener:wait(0.3) } end)
      scimrun.sleep(0.05)
      local ok, err = pcall(listener.wait, listener, 0.1)
      assert.is_false(ok)
      assert.matches("already waiting", err)
      scimrun.sleep(0.4)
      assert.are.same({ {} }, first)
      local co = coroutine.create(function() return listener:wait(0) end)
      local resumed, msg = coroutine.resume(co)
      assert.is_false(resumed)
      assert.matches("must be called from a scimrun task", msg)
    end)

    it("wakes a waiter with nil, err when its connection is closed or killed", function()
      local listener, admin = connect(), connect()
      assert(listener:exec("LISTEN gone"))
      local res
      scimrun.spawn(function() res = { listener:wait(5) } end)
      scimrun.sleep(0.05)
      listener:close()
      scimrun.sleep(0.05)
      assert.are.same({ nil, "postgres connection is closed" }, res)

      local victim = connect()
      assert(victim:exec("LISTEN gone"))
      local t0 = scimrun.now()
      scimrun.spawn(function()
        scimrun.sleep(0.1)
        assert(admin:exec("SELECT pg_terminate_backend($1)", victim:backend_pid()))
      end)
      local got, err = victim:wait(5)
      assert.is_nil(got)
      assert.is_string(err)
      assert.is_true(scimrun.now() - t0 < 2)
      assert.are.equal("bad", victim:status())
      local rows, msg, state = victim:exec("SELECT 1")
      assert.is_nil(rows)
      assert.is_string(msg)
      assert.are.equal("CONNECTION", state)
      assert.is_true(victim:reset())
      assert.are.equal("ok", victim:status())
      assert.are.same({ { x = 1 } }, (victim:exec("SELECT 1 AS x")))
    end)
  end)

  it("returns nil and libpq's message for a bad conninfo, never echoing it", function()
    local conn, err = pg.connect(("postgres://postgres@/binding?host=%s&port=1"):format(cluster.socket_dir))
    assert.is_nil(conn)
    assert.is_string(err)
    assert.matches("connection to server", err)
    assert.is_nil(err:match("\n$"))
    conn, err = pg.connect("host=/tmp s3cretpassword")
    assert.is_nil(conn)
    assert.is_string(err)
    assert.is_nil(err:find("s3cretpassword", 1, true), err)
    conn, err = pg.connect(("postgres://postgres:s3cretpassword@/missing_db?host=%s&port=%d")
      :format(cluster.socket_dir, cluster.port))
    assert.is_nil(conn)
    assert.matches("missing_db", err)
    assert.is_nil(err:find("s3cretpassword", 1, true), err)
  end)

  it("closes idempotently and raises when a closed connection is used", function()
    local conn = connect()
    conn:close()
    conn:close()
    assert.are.equal("pg.conn (closed)", tostring(conn))
    for _, call in ipairs {
      function() conn:exec("SELECT 1") end, function() conn:exec_script("SELECT 1") end,
      function() conn:status() end, function() conn:wait(0) end, function() conn:notifies() end,
      function() conn:reset() end, function() conn:backend_pid() end,
    } do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches("postgres connection is closed", err)
    end
  end)
end)
