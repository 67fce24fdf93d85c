/* store_lua.c: Lua binding of the checkpoint store (contract in store_lua.h). */
#include "store_lua.h"

#include <fcntl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_lua_internal.h"

#define DB_MT "scimrun.store.db"

typedef store_lua_db db_ud;

store_lua_db *store_lua_check_ud(lua_State *L) {
  db_ud *u = luaL_checkudata(L, 1, DB_MT);
  if (!u->s)
    luaL_error(L, "state store is closed");
  return u;
}

store *store_lua_check_db(lua_State *L) { return store_lua_check_ud(L)->s; }

void store_lua_wait_idle(store_lua_db *u) {
  pthread_mutex_lock(&u->mu);
  while (u->applying)
    pthread_cond_wait(&u->idle, &u->mu);
  pthread_mutex_unlock(&u->mu);
}

store *store_lua_check_writable(lua_State *L) {
  db_ud *u = store_lua_check_ud(L);
  if (store_is_readonly(u->s))
    luaL_error(L, "state file %s was opened readonly", store_path(u->s));
  store_lua_wait_idle(u);
  return u->s;
}

store *store_lua_check_reader(lua_State *L) {
  db_ud *u = store_lua_check_ud(L);
  if (store_is_readonly(u->s))
    return u->s;
  if (!u->reader && !u->reader_failed) {
    store_error err;
    u->reader = store_open_reader_of(u->s, &err);
    /* Not fatal: reads then use the writer, waiting for the group commit as before. */
    u->reader_failed = u->reader == NULL;
  }
  if (u->reader)
    return u->reader;
  store_lua_wait_idle(u);
  return u->s;
}

int store_lua_failure(lua_State *L, store *s) {
  lua_pushnil(L);
  lua_pushstring(L, store_errmsg(s));
  lua_pushstring(L, store_errcode(s));
  return 3;
}

/* ---- table fields ------------------------------------------------------------------ */

/* Raises "<where>: field '<field>' <what>" with the context formatted only now. */
static void field_error(lua_State *L, const store_lua_where *w, const char *field,
                        const char *what) {
  if (w->what)
    luaL_error(L, "%s: field '%s' %s", w->what, field, what);
  if (w->op)
    luaL_error(L, "apply: batch[%d] (%s): field '%s' %s", w->index, w->op, field, what);
  luaL_error(L, "apply: batch[%d]: field '%s' %s", w->index, field, what);
}

const char *store_lua_string_at(lua_State *L, int idx, const char *field, int required,
                                const store_lua_where *w) {
  lua_getfield(L, idx, field);
  const char *v = NULL;
  if (lua_type(L, -1) == LUA_TSTRING)
    v = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1) || required)
    field_error(L, w, field, lua_pushfstring(L, "must be a string (got %s)", luaL_typename(L, -1)));
  lua_pop(L, 1);
  return v;
}

int store_lua_count_at(lua_State *L, int idx, const char *field, int dflt,
                       const store_lua_where *w) {
  lua_getfield(L, idx, field);
  int v = dflt;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, -1);
    if (n < 0 || n > 2147483647.0)
      field_error(L, w, field, "must be a non-negative integer");
    v = (int)n;
  } else if (!lua_isnil(L, -1)) {
    field_error(L, w, field, lua_pushfstring(L, "must be a number (got %s)", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
  return v;
}

const char *store_lua_field_string(lua_State *L, int idx, const char *field, int required,
                                   const char *ctx) {
  const store_lua_where w = {ctx, 0, NULL};
  return store_lua_string_at(L, idx, field, required, &w);
}

int store_lua_field_count(lua_State *L, int idx, const char *field, int dflt, const char *ctx) {
  const store_lua_where w = {ctx, 0, NULL};
  return store_lua_count_at(L, idx, field, dflt, &w);
}

static const char *opt_table_string(lua_State *L, int idx, const char *field, const char *ctx) {
  return lua_istable(L, idx) ? store_lua_field_string(L, idx, field, 0, ctx) : NULL;
}

/* ---- rows -------------------------------------------------------------------------- */

static void push_column(lua_State *L, sqlite3_stmt *st, int i) {
  switch (sqlite3_column_type(st, i)) {
  case SQLITE_INTEGER:
    if (strcmp(sqlite3_column_name(st, i), "is_compensation") == 0)
      lua_pushboolean(L, sqlite3_column_int(st, i));
    else
      lua_pushnumber(L, (lua_Number)sqlite3_column_int64(st, i));
    break;
  case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, i)); break;
  default:
    lua_pushlstring(L, (const char *)sqlite3_column_text(st, i),
                    (size_t)sqlite3_column_bytes(st, i));
  }
}

/* Pushes the current row as a table keyed by column name; NULL columns are left out. */
static void push_row(lua_State *L, sqlite3_stmt *st) {
  int n = sqlite3_column_count(st);
  lua_createtable(L, 0, n);
  for (int i = 0; i < n; i++) {
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
      continue;
    push_column(L, st, i);
    lua_setfield(L, -2, sqlite3_column_name(st, i));
  }
}

static void bind_opt_text(sqlite3_stmt *st, int i, const char *v) {
  if (v)
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, i);
}

/* Runs a bound query; pushes its first row as a table or nil. */
static int one_row(lua_State *L, store *s, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    push_row(L, st);
  if (store_query_end(s, st, rc) != 0) {
    if (rc == SQLITE_ROW)
      lua_pop(L, 1);
    return store_lua_failure(L, s);
  }
  if (rc != SQLITE_ROW)
    lua_pushnil(L);
  return 1;
}

/* Runs a bound query; pushes all rows as an array. */
static int all_rows(lua_State *L, store *s, sqlite3_stmt *st) {
  lua_newtable(L);
  int rc, n = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    push_row(L, st);
    lua_rawseti(L, -2, ++n);
  }
  if (store_query_end(s, st, rc) != 0) {
    lua_pop(L, 1);
    return store_lua_failure(L, s);
  }
  return 1;
}

/* ---- module functions -------------------------------------------------------------- */

static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  store_options o = {0, 0, 0};
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *d = store_lua_field_string(L, 2, "durability", 0, "store.open");
    if (d && strcmp(d, "normal") == 0)
      o.durability_normal = 1;
    else if (d && strcmp(d, "full") != 0)
      return luaL_argerror(L, 2, "durability must be \"full\" or \"normal\"");
    lua_getfield(L, 2, "readonly");
    o.readonly = lua_toboolean(L, -1);
    lua_getfield(L, 2, "max_value_bytes");
    if (!lua_isnil(L, -1)) {
      lua_Number n = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER || n < 1 || n > 2e9 || n != (lua_Number)(size_t)n)
        return luaL_argerror(L, 2, "max_value_bytes must be an integer from 1 to 2e9");
      o.max_value_bytes = (size_t)n;
    }
    lua_pop(L, 2);
  }
  db_ud *u = lua_newuserdata(L, sizeof *u);
  memset(u, 0, sizeof *u);
  pthread_mutex_init(&u->mu, NULL);
  pthread_cond_init(&u->idle, NULL);
  luaL_getmetatable(L, DB_MT);
  lua_setmetatable(L, -2);
  store_error err;
  u->s = store_open(path, &o, &err);
  if (!u->s) {
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    lua_pushstring(L, err.code);
    return 3;
  }
  return 1;
}

static int l_new_run_id(lua_State *L) {
  unsigned char rnd[2] = {0, 0};
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
    struct timespec ts; /* fallback: still unique enough with the pid mixed in */
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned v = (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 4);
    rnd[0] = (unsigned char)v, rnd[1] = (unsigned char)(v >> 8);
  }
  if (fd >= 0)
    close(fd);
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char id[48];
  strftime(id, sizeof id, "r-%Y%m%d-%H%M%S-", &tm);
  size_t len = strlen(id);
  snprintf(id + len, sizeof id - len, "%02x%02x", rnd[0], rnd[1]);
  lua_pushstring(L, id);
  return 1;
}

/* ---- db methods: lifecycle and runs ----------------------------------------------- */

/* Waits for a group commit that holds the writer (a hard stop may close during one). */
static int l_close(lua_State *L) {
  db_ud *u = luaL_checkudata(L, 1, DB_MT);
  if (!u->s)
    return 0;
  store_lua_wait_idle(u);
  store_close(u->reader);
  store_close(u->s);
  u->reader = u->s = NULL;
  return 0;
}

static int l_gc(lua_State *L) {
  db_ud *u = luaL_checkudata(L, 1, DB_MT);
  l_close(L);
  pthread_cond_destroy(&u->idle);
  pthread_mutex_destroy(&u->mu);
  return 0;
}

static int l_tostring(lua_State *L) {
  db_ud *u = luaL_checkudata(L, 1, DB_MT);
  lua_pushfstring(L, "scimrun.store(%s)", u->s ? store_path(u->s) : "closed");
  return 1;
}

static int l_path(lua_State *L) {
  lua_pushstring(L, store_path(store_lua_check_db(L)));
  return 1;
}

static int l_max_value_bytes(lua_State *L) {
  lua_pushnumber(L, (lua_Number)store_max_value_bytes(store_lua_check_db(L)));
  return 1;
}

static int l_is_readonly(lua_State *L) {
  lua_pushboolean(L, store_is_readonly(store_lua_check_db(L)));
  return 1;
}

static int l_run_create(lua_State *L) {
  store *s = store_lua_check_writable(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *ctx = "run_create";
  store_run r = {
      .id = store_lua_field_string(L, 2, "id", 1, ctx),
      .workflow_name = store_lua_field_string(L, 2, "workflow_name", 1, ctx),
      .workflow_path = store_lua_field_string(L, 2, "workflow_path", 1, ctx),
      .workflow_hash = store_lua_field_string(L, 2, "workflow_hash", 1, ctx),
      .params_json = store_lua_field_string(L, 2, "params_json", 0, ctx),
      .inputs_json = store_lua_field_string(L, 2, "inputs_json", 0, ctx),
      .policy_json = store_lua_field_string(L, 2, "policy_json", 0, ctx),
  };
  if (!r.id[0])
    return luaL_error(L, "run_create: field 'id' must not be empty");
  if (store_run_create(s, &r) != 0)
    return store_lua_failure(L, s);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_run_get(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *id = luaL_checkstring(L, 2);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_RUN_GET);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, id);
  return one_row(L, s, st);
}

static int l_run_latest_unfinished(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *path = luaL_checkstring(L, 2);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_RUN_LATEST_UNFINISHED);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, path);
  return one_row(L, s, st);
}

static int l_runs_list(lua_State *L) {
  store *s = store_lua_check_reader(L);
  int limit = 50;
  const char *path = NULL;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    limit = store_lua_field_count(L, 2, "limit", 50, "runs_list");
    path = store_lua_field_string(L, 2, "workflow_path", 0, "runs_list");
  }
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_RUNS_LIST);
  if (!st)
    return store_lua_failure(L, s);
  sqlite3_bind_int(st, 1, limit);
  bind_opt_text(st, 2, path);
  return all_rows(L, s, st);
}

static int l_run_set_status(lua_State *L) {
  store *s = store_lua_check_writable(L);
  const char *id = luaL_checkstring(L, 2);
  const char *status = luaL_checkstring(L, 3);
  if (!store_run_status_valid(status))
    return luaL_argerror(L, 3, "unknown run status");
  int has_exit = !lua_isnoneornil(L, 4);
  int code = has_exit ? (int)luaL_checkinteger(L, 4) : 0;
  if (store_run_set_status(s, id, status, has_exit, code) != 0)
    return store_lua_failure(L, s);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_run_step_counts(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *id = luaL_checkstring(L, 2);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_RUN_STEP_COUNTS);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, id);
  lua_createtable(L, 0, 4);
  static const char *const states[] = {"started", "completed", "failed", "compensated"};
  for (int i = 0; i < 4; i++) {
    lua_pushnumber(L, 0);
    lua_setfield(L, -2, states[i]);
  }
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    lua_pushnumber(L, (lua_Number)sqlite3_column_int64(st, 1));
    lua_setfield(L, -2, (const char *)sqlite3_column_text(st, 0));
  }
  if (store_query_end(s, st, rc) != 0) {
    lua_pop(L, 1);
    return store_lua_failure(L, s);
  }
  return 1;
}

/* ---- steps and kv ------------------------------------------------------------------ */

static int l_step_get(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *run_id = luaL_checkstring(L, 2);
  const char *key = luaL_checkstring(L, 3);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_STEP_GET);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, run_id);
  bind_opt_text(st, 2, key);
  return one_row(L, s, st);
}

static int l_steps_load(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *run_id = luaL_checkstring(L, 2);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_STEPS_LOAD);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, run_id);
  lua_newtable(L);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    lua_pushlstring(L, (const char *)sqlite3_column_text(st, 0),
                    (size_t)sqlite3_column_bytes(st, 0));
    push_row(L, st);
    lua_rawset(L, -3);
  }
  if (store_query_end(s, st, rc) != 0) {
    lua_pop(L, 1);
    return store_lua_failure(L, s);
  }
  return 1;
}

static int l_kv_get(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *run_id = luaL_checkstring(L, 2);
  const char *key = luaL_checkstring(L, 3);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_KV_GET);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, run_id);
  bind_opt_text(st, 2, key);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    push_column(L, st, 0);
  else
    lua_pushnil(L);
  if (store_query_end(s, st, rc) != 0) {
    lua_pop(L, 1);
    return store_lua_failure(L, s);
  }
  return 1;
}

static int l_kv_all(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *run_id = luaL_checkstring(L, 2);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_KV_ALL);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, run_id);
  lua_newtable(L);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    push_column(L, st, 0);
    push_column(L, st, 1);
    lua_rawset(L, -3);
  }
  if (store_query_end(s, st, rc) != 0) {
    lua_pop(L, 1);
    return store_lua_failure(L, s);
  }
  return 1;
}

/* db:step_events(run_id, key) -> { {at, event_json}, ... } oldest first */
static int l_step_events(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *run_id = luaL_checkstring(L, 2);
  const char *key = luaL_checkstring(L, 3);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_STEP_EVENTS);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, run_id);
  bind_opt_text(st, 2, key);
  lua_newtable(L);
  int rc, n = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    lua_createtable(L, 0, 2);
    lua_pushnumber(L, sqlite3_column_double(st, 0));
    lua_setfield(L, -2, "at");
    push_column(L, st, 1);
    lua_setfield(L, -2, "event_json");
    lua_rawseti(L, -2, ++n);
  }
  if (store_query_end(s, st, rc) != 0) {
    lua_pop(L, 1);
    return store_lua_failure(L, s);
  }
  return 1;
}

static int l_events_prune(lua_State *L) {
  store *s = store_lua_check_writable(L);
  lua_Number retention = luaL_checknumber(L, 2);
  if (retention < 0)
    return luaL_argerror(L, 2, "retention must be >= 0 seconds");
  int64_t deleted = 0;
  if (store_events_prune(s, (double)retention, &deleted) != 0)
    return store_lua_failure(L, s);
  lua_pushnumber(L, (lua_Number)deleted);
  return 1;
}

/* ---- audit trail ------------------------------------------------------------------ */

/* db:audit_list{run_id, user, limit} -> rows, oldest first (the newest `limit` when given) */
static int l_audit_list(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *run_id = opt_table_string(L, 2, "run_id", "audit_list");
  const char *user = opt_table_string(L, 2, "user", "audit_list");
  int limit = lua_istable(L, 2) ? store_lua_field_count(L, 2, "limit", -1, "audit_list") : -1;
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_AUDIT_LIST);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, run_id);
  bind_opt_text(st, 2, user);
  sqlite3_bind_int(st, 3, limit);
  int n = all_rows(L, s, st);
  if (n != 1 || !lua_istable(L, -1))
    return n;
  /* newest first from the query (so LIMIT keeps the newest); oldest first to the caller */
  int len = (int)lua_objlen(L, -1);
  for (int i = 1, j = len; i < j; i++, j--) {
    lua_rawgeti(L, -1, i);
    lua_rawgeti(L, -2, j);
    lua_rawseti(L, -3, i);
    lua_rawseti(L, -2, j);
  }
  return 1;
}

static int l_audit_prune(lua_State *L) {
  store *s = store_lua_check_writable(L);
  lua_Number retention = luaL_checknumber(L, 2);
  if (retention < 0)
    return luaL_argerror(L, 2, "retention must be >= 0 seconds");
  int64_t deleted = 0;
  if (store_audit_prune(s, (double)retention, &deleted) != 0)
    return store_lua_failure(L, s);
  lua_pushnumber(L, (lua_Number)deleted);
  return 1;
}

/* ---- dead letters ------------------------------------------------------------------ */

static const char *check_dlq_state(lua_State *L, const char *state) {
  if (state && !store_dlq_state_valid(state))
    luaL_error(L, "dead-letter state must be pending, replayed or dropped (got '%s')", state);
  return state;
}

static int l_dlq_list(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *run_id = opt_table_string(L, 2, "run_id", "dlq_list");
  const char *state = check_dlq_state(L, opt_table_string(L, 2, "state", "dlq_list"));
  int limit = lua_istable(L, 2) ? store_lua_field_count(L, 2, "limit", -1, "dlq_list") : -1;
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_DLQ_LIST);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, run_id);
  bind_opt_text(st, 2, state);
  sqlite3_bind_int(st, 3, limit);
  return all_rows(L, s, st);
}

static int l_dlq_get(lua_State *L) {
  store *s = store_lua_check_reader(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_DLQ_GET);
  if (!st)
    return store_lua_failure(L, s);
  sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
  return one_row(L, s, st);
}

static int l_dlq_set_state(lua_State *L) {
  store *s = store_lua_check_writable(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  const char *state = check_dlq_state(L, luaL_checkstring(L, 3));
  if (store_dlq_set_state(s, (int64_t)id, state) != 0)
    return store_lua_failure(L, s);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_dlq_count(lua_State *L) {
  store *s = store_lua_check_reader(L);
  const char *state = check_dlq_state(L, opt_table_string(L, 2, "state", "dlq_count"));
  const char *run_id = opt_table_string(L, 2, "run_id", "dlq_count");
  sqlite3_stmt *st = store_query_begin(s, STORE_Q_DLQ_COUNT);
  if (!st)
    return store_lua_failure(L, s);
  bind_opt_text(st, 1, state);
  bind_opt_text(st, 2, run_id);
  int rc = sqlite3_step(st);
  lua_Number n = rc == SQLITE_ROW ? (lua_Number)sqlite3_column_int64(st, 0) : 0;
  if (store_query_end(s, st, rc) != 0)
    return store_lua_failure(L, s);
  lua_pushnumber(L, n);
  return 1;
}

static int l_dlq_prune(lua_State *L) {
  store *s = store_lua_check_writable(L);
  lua_Number retention = luaL_checknumber(L, 2);
  if (retention < 0)
    return luaL_argerror(L, 2, "retention must be >= 0 seconds");
  int64_t deleted = 0;
  if (store_dlq_prune(s, (double)retention, &deleted) != 0)
    return store_lua_failure(L, s);
  lua_pushnumber(L, (lua_Number)deleted);
  return 1;
}

/* Test hook: lets specs force SQLITE_FULL (max_page_count) or SQLITE_READONLY (query_only). */
static int l_pragma(lua_State *L) {
  db_ud *u = store_lua_check_ud(L);
  store_lua_wait_idle(u);
  store *s = u->s;
  const char *name = luaL_checkstring(L, 2);
  lua_Integer v = luaL_checkinteger(L, 3);
  if (strcmp(name, "max_page_count") != 0 && strcmp(name, "query_only") != 0)
    return luaL_argerror(L, 2, "only max_page_count and query_only");
  char sql[96];
  snprintf(sql, sizeof sql, "PRAGMA %s = %lld", name, (long long)v);
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(store_handle(s), sql, -1, &st, NULL);
  lua_Number out = (lua_Number)v;
  if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    out = (lua_Number)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  lua_pushnumber(L, out);
  return 1;
}

static const luaL_Reg db_methods[] = {
    {"close", l_close},
    {"path", l_path},
    {"is_readonly", l_is_readonly},
    {"max_value_bytes", l_max_value_bytes},
    {"run_create", l_run_create},
    {"run_get", l_run_get},
    {"run_latest_unfinished", l_run_latest_unfinished},
    {"runs_list", l_runs_list},
    {"run_set_status", l_run_set_status},
    {"run_step_counts", l_run_step_counts},
    {"step_get", l_step_get},
    {"steps_load", l_steps_load},
    {"apply", store_lua_apply},
    {"apply_async", store_lua_apply_async},
    {"kv_get", l_kv_get},
    {"kv_all", l_kv_all},
    {"dlq_list", l_dlq_list},
    {"dlq_get", l_dlq_get},
    {"dlq_set_state", l_dlq_set_state},
    {"dlq_count", l_dlq_count},
    {"dlq_prune", l_dlq_prune},
    {"step_events", l_step_events},
    {"events_prune", l_events_prune},
    {"audit_list", l_audit_list},
    {"audit_prune", l_audit_prune},
    {"_pragma", l_pragma},
    {NULL, NULL},
};

int luaopen_scimrun_store(lua_State *L) {
  luaL_newmetatable(L, DB_MT);
  lua_newtable(L);
  luaL_register(L, NULL, db_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  lua_newtable(L);
  lua_pushcfunction(L, l_open);
  lua_setfield(L, -2, "open");
  lua_pushcfunction(L, l_new_run_id);
  lua_setfield(L, -2, "new_run_id");
  lua_pushnumber(L, store_schema_version());
  lua_setfield(L, -2, "SCHEMA_VERSION");
  lua_pushnumber(L, (lua_Number)STORE_MAX_VALUE_BYTES);
  lua_setfield(L, -2, "MAX_VALUE_BYTES");
  return 1;
}
