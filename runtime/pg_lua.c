/*
 * pg_lua.c: the libpq binding `scimrun.pg` (contract in pg_lua.h).
 *
 * conn:wait is the one asynchronous call: a waiter (allocated apart from the Lua userdata, as
 * luv does) holds a uv_poll_t on PQsocket and a uv_timer_t; the first to fire stops and closes
 * both and wakes the task once. While a wait is in progress the connection is anchored in a
 * registry table (not a counted sched_ref), so it is never collected under its waiter.
 */
#include "pg_lua.h"

#include <lauxlib.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "scheduler.h"

#define CONN_MT "scimrun.pg.conn"
#define MAX_PARAMS 65535 /* the protocol's limit on one statement's parameters */

/* Type OIDs (PostgreSQL's catalog/pg_type.dat) whose text form becomes a number or boolean. */
enum {
  OID_BOOL = 16,
  OID_INT8 = 20,
  OID_INT2 = 21,
  OID_INT4 = 23,
  OID_OID = 26,
  OID_FLOAT4 = 700,
  OID_FLOAT8 = 701,
  OID_NUMERIC = 1700
};

typedef struct pg_wait pg_wait;

typedef struct {
  PGconn *pg;    /* NULL once closed */
  pg_wait *wait; /* the conn:wait in progress, or NULL */
} pg_conn;

/* One conn:wait. Neither handle is the struct's first member and both have data == the waiter,
 * so sched_shutdown closes them without a callback (its self-owned-handle convention does not
 * apply) and the conn's __gc, which then runs in lua_close, frees the waiter. */
struct pg_wait {
  sched_task *task;
  pg_conn *conn; /* NULL once finished */
  int fd;        /* the socket polled: libpq replaces it on reset and drops it on failure */
  int open_handles;
  uv_poll_t poll;
  uv_timer_t timer;
};

static const char ANCHOR_KEY = 'a'; /* registry[&ANCHOR_KEY] = { [lightuserdata waiter] = conn } */

static void anchor_set(lua_State *L, pg_wait *w, int conn_index) {
  if (conn_index < 0)
    conn_index = lua_gettop(L) + conn_index + 1;
  lua_pushlightuserdata(L, (void *)&ANCHOR_KEY);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, w);
  if (conn_index)
    lua_pushvalue(L, conn_index);
  else
    lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Pushes msg without its trailing newline and spaces (libpq ends every message with one). */
static void push_trimmed(lua_State *L, const char *msg) {
  size_t len = strlen(msg);
  while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r' || msg[len - 1] == ' '))
    len--;
  lua_pushlstring(L, msg, len);
}

static void push_conn_error(lua_State *L, PGconn *pg) {
  const char *msg = pg ? PQerrorMessage(pg) : "";
  push_trimmed(L, *msg ? msg : "postgres connection lost");
}

/* ---- values ------------------------------------------------------------------------ */

/* A Lua number as PostgreSQL text: integers without ".0", others in the shortest form that
 * reads back as the same double, and PostgreSQL's spellings of NaN and the infinities. */
static void format_number(lua_Number n, char *buf, size_t size) {
  if (isnan(n))
    snprintf(buf, size, "NaN");
  else if (isinf(n))
    snprintf(buf, size, n > 0 ? "Infinity" : "-Infinity");
  else if (n == floor(n) && fabs(n) < 9.2e18)
    snprintf(buf, size, "%lld", (long long)n);
  else
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(buf, size, "%.*g", prec, n);
      if (strtod(buf, NULL) == n)
        break;
    }
}

static void push_value(lua_State *L, Oid type, const char *text, int len) {
  switch (type) {
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
  case OID_OID:
  case OID_FLOAT4:
  case OID_FLOAT8:
  case OID_NUMERIC: lua_pushnumber(L, strtod(text, NULL)); break;
  case OID_BOOL: lua_pushboolean(L, text[0] == 't'); break;
  default: lua_pushlstring(L, text, (size_t)len);
  }
}

static void push_rows(lua_State *L, const PGresult *res) {
  int nrows = PQntuples(res), ncols = PQnfields(res);
  lua_createtable(L, nrows, 0);
  for (int r = 0; r < nrows; r++) {
    lua_createtable(L, 0, ncols);
    for (int col = 0; col < ncols; col++) {
      if (PQgetisnull(res, r, col))
        continue;
      push_value(L, PQftype(res, col), PQgetvalue(res, r, col), PQgetlength(res, r, col));
      lua_setfield(L, -2, PQfname(res, col));
    }
    lua_rawseti(L, -2, r + 1);
  }
}

/* Pushes nil, message, sqlstate for a failed statement (res may be NULL). */
static int push_query_error(lua_State *L, PGconn *pg, const PGresult *res) {
  const char *msg = res ? PQresultErrorMessage(res) : "";
  lua_pushnil(L);
  if (msg && *msg)
    push_trimmed(L, msg);
  else
    push_conn_error(L, pg);
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  if (PQstatus(pg) == CONNECTION_BAD)
    state = "CONNECTION";
  else if (!state)
    state = "CLIENT"; /* an error libpq raised itself, e.g. an out-of-range parameter count */
  lua_pushstring(L, state);
  return 3;
}

/* A COPY started by exec or exec_script is not supported: end it so the connection is usable. */
static void abandon_copy(PGconn *pg, ExecStatusType st) {
  if (st == PGRES_COPY_IN) {
    PQputCopyEnd(pg, "COPY FROM STDIN is not supported by scimrun.pg");
  } else {
    char *buf;
    while (PQgetCopyData(pg, &buf, 0) > 0)
      PQfreemem(buf);
  }
  PGresult *r;
  while ((r = PQgetResult(pg)))
    PQclear(r);
}

static int is_copy(ExecStatusType st) {
  return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

static int push_copy_refused(lua_State *L, PGconn *pg, ExecStatusType st) {
  abandon_copy(pg, st);
  lua_pushnil(L);
  lua_pushliteral(L, "COPY is not supported by scimrun.pg");
  lua_pushstring(L, PQstatus(pg) == CONNECTION_BAD ? "CONNECTION" : "CLIENT");
  return 3;
}

/* ---- notifications and conn:wait --------------------------------------------------- */

/* Pushes an array of the notifications libpq holds, starting with `first` when not NULL. */
static void push_notifies(lua_State *L, PGconn *pg, PGnotify *first) {
  lua_newtable(L);
  int i = 0;
  for (PGnotify *n = first ? first : PQnotifies(pg); n; n = PQnotifies(pg)) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, n->relname);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, n->extra);
    lua_setfield(L, -2, "payload");
    lua_pushinteger(L, n->be_pid);
    lua_setfield(L, -2, "pid");
    PQfreemem(n);
    lua_rawseti(L, -2, ++i);
  }
}

static void on_wait_closed(uv_handle_t *h) {
  pg_wait *w = h->data;
  if (--w->open_handles == 0)
    free(w);
}

/* Stops both handles and detaches the waiter from its connection; freed once both closed. */
static void wait_stop(pg_wait *w) {
  uv_poll_stop(&w->poll);
  uv_timer_stop(&w->timer);
  w->open_handles = 2;
  uv_close((uv_handle_t *)&w->poll, on_wait_closed);
  uv_close((uv_handle_t *)&w->timer, on_wait_closed);
  if (w->conn)
    w->conn->wait = NULL;
  w->conn = NULL;
}

/* Ends a wait exactly once: wakes its task with the notifications (err NULL; `first` already
 * taken from libpq, or NULL) or with nil, err. L is any thread of the state. */
static void wait_finish(lua_State *L, pg_wait *w, PGnotify *first, const char *err) {
  pg_conn *c = w->conn;
  sched_task *task = w->task;
  wait_stop(w); /* before anything else: libpq may close or replace the socket */
  lua_State *co = sched_wake_begin(task);
  int n = 1;
  if (err) {
    lua_pushnil(co);
    push_trimmed(co, *err ? err : "postgres connection lost");
    n = 2;
  } else {
    push_notifies(co, c->pg, first);
  }
  anchor_set(L, w, 0); /* last: the conn may be collected from here on */
  sched_wake_commit(task, n);
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  pg_wait *w = h->data;
  if (!w->conn)
    return;
  lua_State *L = sched_main_state();
  PGconn *pg = w->conn->pg;
  if (status < 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "waiting on the postgres connection failed: %s", uv_strerror(status));
    wait_finish(L, w, NULL, msg);
  } else if (!PQconsumeInput(pg) || PQstatus(pg) == CONNECTION_BAD) {
    wait_finish(L, w, NULL, PQerrorMessage(pg));
  } else {
    PGnotify *first = PQnotifies(pg);
    if (first)
      wait_finish(L, w, first, NULL);
    /* otherwise a notice or a parameter status arrived: keep waiting */
  }
}

static void on_wait_timeout(uv_timer_t *h) {
  pg_wait *w = h->data;
  if (!w->conn)
    return;
  PGconn *pg = w->conn->pg;
  int ok = PQconsumeInput(pg) && PQstatus(pg) != CONNECTION_BAD;
  wait_finish(sched_main_state(), w, NULL, ok ? NULL : PQerrorMessage(pg));
}

/* After a query on a connection another task waits on: libpq may have read notifications
 * (they no longer make the socket readable) or dropped the socket the waiter polls. */
static void wait_after_query(lua_State *L, pg_conn *c) {
  pg_wait *w = c->wait;
  if (!w)
    return;
  if (PQstatus(c->pg) == CONNECTION_BAD || PQsocket(c->pg) != w->fd) {
    wait_finish(L, w, NULL, PQerrorMessage(c->pg));
    return;
  }
  PGnotify *first = PQnotifies(c->pg);
  if (first)
    wait_finish(L, w, first, NULL);
}

/* ---- connection -------------------------------------------------------------------- */

static pg_conn *check_conn(lua_State *L) {
  pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
  if (!c->pg)
    luaL_error(L, "postgres connection is closed");
  return c;
}

/* libpq prints notices (e.g. "... does not exist, skipping") to stderr by default. */
static void on_notice(void *arg, const char *message) {
  (void)arg;
  if (!log_enabled(LOG_DEBUG))
    return;
  char buf[512];
  size_t len = strlen(message);
  while (len > 0 && message[len - 1] == '\n')
    len--;
  snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), message);
  log_emit(LOG_DEBUG, "postgres notice", "message", buf, NULL);
}

static int occurs_in(const char *hay, const char *needle, size_t n) {
  for (; *hay; hay++)
    if (strncmp(hay, needle, n) == 0)
      return 1;
  return 0;
}

/* Pushes a libpq message with every quoted fragment that comes from the conninfo (a parse error
 * quotes what it could not read, which may be a password) replaced by [REDACTED], and every
 * occurrence of `secret` (the password, when known) too. */
static void push_scrubbed(lua_State *L, const char *msg, const char *conninfo, const char *secret) {
  size_t len = strlen(msg), slen = secret ? strlen(secret) : 0;
  while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
    len--;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t i = 0;
  while (i < len) {
    if (slen > 0 && i + slen <= len && memcmp(msg + i, secret, slen) == 0) {
      luaL_addstring(&b, "[REDACTED]");
      i += slen;
      continue;
    }
    const char *close = msg[i] == '"' ? memchr(msg + i + 1, '"', len - i - 1) : NULL;
    size_t frag = close ? (size_t)(close - (msg + i + 1)) : 0;
    if (conninfo && frag >= 2 && occurs_in(conninfo, msg + i + 1, frag)) {
      luaL_addstring(&b, "\"[REDACTED]\"");
      i += frag + 2;
      continue;
    }
    luaL_addchar(&b, msg[i]);
    i++;
  }
  luaL_pushresult(&b);
}

static int l_connect(lua_State *L) {
  const char *conninfo = luaL_checkstring(L, 1);
  pg_conn *c = lua_newuserdata(L, sizeof *c);
  c->pg = NULL;
  c->wait = NULL;
  luaL_getmetatable(L, CONN_MT);
  lua_setmetatable(L, -2);

  char *parse_err = NULL;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &parse_err);
  if (!opts) {
    lua_pushnil(L);
    push_scrubbed(L, parse_err ? parse_err : "out of memory", conninfo, NULL);
    PQfreemem(parse_err);
    return 2;
  }
  const char *password = NULL;
  for (PQconninfoOption *o = opts; o->keyword; o++)
    if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
      password = o->val;

  c->pg = PQconnectdb(conninfo);
  if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
    lua_pushnil(L);
    push_scrubbed(L, c->pg ? PQerrorMessage(c->pg) : "out of memory", NULL, password);
    PQconninfoFree(opts);
    PQfinish(c->pg);
    c->pg = NULL;
    return 2;
  }
  PQconninfoFree(opts);
  PQsetNoticeProcessor(c->pg, on_notice, NULL);
  return 1;
}

static int l_exec(lua_State *L) {
  pg_conn *c = check_conn(L);
  const char *sql = luaL_checkstring(L, 2);
  int nparams = lua_gettop(L) - 2;
  if (nparams > MAX_PARAMS)
    return luaL_error(L, "conn:exec: at most %d parameters", MAX_PARAMS);
  const char **values = nparams ? lua_newuserdata(L, (size_t)nparams * sizeof *values) : NULL;
  for (int i = 0; i < nparams; i++) {
    int idx = i + 3;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: values[i] = NULL; break;
    case LUA_TBOOLEAN: values[i] = lua_toboolean(L, idx) ? "t" : "f"; break;
    case LUA_TNUMBER: {
      char buf[64];
      format_number(lua_tonumber(L, idx), buf, sizeof buf);
      lua_pushstring(L, buf);
      lua_replace(L, idx); /* the text stays anchored in the argument's slot */
      values[i] = lua_tostring(L, idx);
      break;
    }
    case LUA_TSTRING: {
      size_t len;
      values[i] = lua_tolstring(L, idx, &len);
      if (memchr(values[i], 0, len))
        return luaL_argerror(L, idx, "a text parameter cannot contain a NUL byte");
      break;
    }
    default: return luaL_argerror(L, idx, "expected nil, boolean, number or string");
    }
  }
  PGresult *res = PQexecParams(c->pg, sql, nparams, NULL, values, NULL, NULL, 0);
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  int n;
  if (st == PGRES_TUPLES_OK || st == PGRES_SINGLE_TUPLE || st == PGRES_COMMAND_OK ||
      st == PGRES_EMPTY_QUERY) {
    if (st == PGRES_TUPLES_OK || st == PGRES_SINGLE_TUPLE)
      push_rows(L, res);
    else
      lua_newtable(L);
    lua_pushnumber(L, strtod(PQcmdTuples(res), NULL));
    n = 2;
  } else if (is_copy(st)) {
    n = push_copy_refused(L, c->pg, st);
  } else {
    n = push_query_error(L, c->pg, res);
  }
  PQclear(res);
  wait_after_query(L, c);
  return n;
}

static int l_exec_script(lua_State *L) {
  pg_conn *c = check_conn(L);
  const char *sql = luaL_checkstring(L, 2);
  PGresult *res = PQexec(c->pg, sql);
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  int n = 1;
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY)
    lua_pushboolean(L, 1);
  else if (is_copy(st))
    n = push_copy_refused(L, c->pg, st);
  else
    n = push_query_error(L, c->pg, res);
  PQclear(res);
  wait_after_query(L, c);
  return n;
}

static int l_status(lua_State *L) {
  pg_conn *c = check_conn(L);
  lua_pushstring(L, PQstatus(c->pg) == CONNECTION_OK ? "ok" : "bad");
  return 1;
}

static int l_reset(lua_State *L) {
  pg_conn *c = check_conn(L);
  if (c->wait) /* the socket it polls is about to close */
    wait_finish(L, c->wait, NULL, "postgres connection was reset");
  PQreset(c->pg);
  if (PQstatus(c->pg) != CONNECTION_OK) {
    lua_pushnil(L);
    push_conn_error(L, c->pg);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_backend_pid(lua_State *L) {
  lua_pushinteger(L, PQbackendPID(check_conn(L)->pg));
  return 1;
}

static int l_notifies(lua_State *L) {
  pg_conn *c = check_conn(L);
  PQconsumeInput(c->pg); /* a failure shows in conn:status() and the next query */
  push_notifies(L, c->pg, NULL);
  return 1;
}

static uint64_t timeout_ms(double seconds) {
  if (!(seconds > 0))
    return 0;
  double ms = ceil(seconds * 1000);
  return ms > 1e15 ? (uint64_t)1e15 : (uint64_t)ms;
}

static int l_wait(lua_State *L) {
  pg_conn *c = check_conn(L);
  double seconds = luaL_checknumber(L, 2);
  sched_task *task = sched_check_task(L, "conn:wait");
  if (c->wait)
    return luaL_error(L, "conn:wait: another task is already waiting on this postgres connection");
  if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
    lua_pushnil(L);
    push_conn_error(L, c->pg);
    return 2;
  }
  PGnotify *first = PQnotifies(c->pg);
  if (first) {
    push_notifies(L, c->pg, first);
    return 1;
  }
  int fd = PQsocket(c->pg);
  pg_wait *w = fd >= 0 ? calloc(1, sizeof *w) : NULL;
  int rc = w ? uv_poll_init_socket(sched_loop(), &w->poll, fd) : UV_ENOMEM;
  if (rc != 0) {
    free(w);
    lua_pushnil(L);
    if (fd < 0)
      push_conn_error(L, c->pg);
    else
      lua_pushfstring(L, "cannot watch the postgres connection: %s", uv_strerror(rc));
    return 2;
  }
  uv_timer_init(sched_loop(), &w->timer);
  w->poll.data = w;
  w->timer.data = w;
  w->task = task;
  w->conn = c;
  w->fd = fd;
  c->wait = w;
  anchor_set(L, w, 1);
  uv_poll_start(&w->poll, UV_READABLE, on_readable);
  uv_update_time(sched_loop()); /* the cached clock is stale after a blocking query */
  uv_timer_start(&w->timer, on_wait_timeout, timeout_ms(seconds), 0);
  return sched_wait(L, task);
}

static int l_close(lua_State *L) {
  pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
  if (c->wait) /* another task waits on it: it gets nil, err */
    wait_finish(L, c->wait, NULL, "postgres connection is closed");
  PQfinish(c->pg);
  c->pg = NULL;
  return 0;
}

/* A conn is collected during a wait only in lua_close (the anchor holds it otherwise): after
 * sched_shutdown closed the waiter's handles, or, from os.exit(code, true), with the loop still
 * open. Either way the task is gone or will never resume: do not wake it. */
static int l_gc(lua_State *L) {
  pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
  pg_wait *w = c->wait;
  if (w) {
    if (uv_is_closing((uv_handle_t *)&w->poll))
      free(w); /* closed (without callback) by sched_shutdown */
    else
      wait_stop(w);
    c->wait = NULL;
  }
  PQfinish(c->pg);
  c->pg = NULL;
  return 0;
}

static int l_tostring(lua_State *L) {
  pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
  lua_pushstring(L, c->pg ? "pg.conn (open)" : "pg.conn (closed)");
  return 1;
}

static const luaL_Reg conn_methods[] = {
    {"exec", l_exec},
    {"exec_script", l_exec_script},
    {"status", l_status},
    {"reset", l_reset},
    {"backend_pid", l_backend_pid},
    {"notifies", l_notifies},
    {"wait", l_wait},
    {"close", l_close},
    {NULL, NULL},
};

int luaopen_scimrun_pg(lua_State *L) {
  if (luaL_newmetatable(L, CONN_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_pushlightuserdata(L, (void *)&ANCHOR_KEY);
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isnil(L, -1)) {
    lua_pushlightuserdata(L, (void *)&ANCHOR_KEY);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  lua_pop(L, 1);

  lua_newtable(L);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  return 1;
}
