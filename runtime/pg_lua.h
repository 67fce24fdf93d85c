/*
 * pg_lua: `require "scimrun.pg"`, a thin libpq binding for the PostgreSQL store.
 * Misuse (a closed connection, a bad argument, a second concurrent wait) raises; operational
 * failure returns nil, message (libpq's, trimmed), and for queries the SQLSTATE, "CONNECTION"
 * when the connection is bad, or "CLIENT" for an error libpq raised without one.
 *
 *   pg.connect(conninfo) -> conn | nil, err        (libpq URL or keywords; blocking; a message
 *                                                   never echoes the conninfo or its password)
 *   conn:exec(sql, ...) -> rows, affected | nil, err, sqlstate
 *     $1..$n from the extra arguments (trailing nils count): nil -> NULL, boolean -> t/f,
 *     number -> shortest round-trip text, string -> as is (no NUL byte). rows[i][column]:
 *     int2/int4/int8/oid/float4/float8/numeric -> number, bool -> boolean, NULL -> absent,
 *     anything else -> string. affected: PQcmdTuples (0 when none).
 *   conn:exec_script(sql) -> true | nil, err, sqlstate   (several statements, one PQexec)
 *   conn:status() -> "ok" | "bad";  conn:reset() -> true | nil, err;  conn:backend_pid() -> n
 *   conn:notifies() -> {{channel, payload, pid}, ...}    (what has arrived, without waiting)
 *   conn:wait(seconds) -> notifies (empty on timeout) | nil, err   (from a task; one at a time)
 *   conn:close() (idempotent, also __gc); tostring(conn) -> "pg.conn (open)" | "pg.conn (closed)"
 *
 * Queries block the loop thread (PQexecParams): over a Unix socket or a LAN a statement is a
 * round trip of well under a millisecond, the same order as SQLite's fsync in the loop thread,
 * and the group commit batches writes into one transaction per turn. LISTEN waits are
 * asynchronous: conn:wait parks its task on a uv_poll_t of the connection's socket.
 */
#ifndef SCIMRUN_PG_LUA_H
#define SCIMRUN_PG_LUA_H

#include <lua.h>

int luaopen_scimrun_pg(lua_State *L);

#endif
