/* store_lua_apply.c: db:apply(batch), many writes in one transaction (group commit), and the
 * decoding of a batch that db:apply_async (store_lua_async.c) shares. */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "store_lua_internal.h"

enum {
  OP_STEP_START,
  OP_STEP_COMPLETE,
  OP_STEP_FAIL,
  OP_STEP_COMPENSATED,
  OP_KV_PUT,
  OP_RUN_STATUS,
  OP_DLQ_ADD,
  OP_EVENT_ADD,
  OP_AUDIT_ADD
};
static const char *const OP_NAMES[] = {
    "step_start", "step_complete", "step_fail", "step_compensated", "kv_put",
    "run_status", "dlq_add",       "event_add", "audit_add",        NULL};

typedef struct {
  int kind;
  const char *run_id, *key, *json, *status;
  int attempts, has_exit, exit_code;
  int64_t id; /* dlq_add: the new entry's id */
  store_dlq_entry dlq;
  store_audit_entry audit;
} batch_op;

struct store_lua_batch {
  int n;
  batch_op ops[];
};

/* Reads batch[i] (on top of the stack) into op, raising on misuse. */
static void decode_op(lua_State *L, int i, batch_op *op) {
  if (!lua_istable(L, -1))
    luaL_error(L, "apply: batch[%d] must be a table", i);
  int t = lua_gettop(L);
  /* errors name "apply: batch[i]", then "apply: batch[i] (op)", formatted only when raised */
  const store_lua_where at_i = {NULL, i, NULL};
  const char *name = store_lua_string_at(L, t, "op", 1, &at_i);
  op->kind = -1;
  for (int k = 0; OP_NAMES[k]; k++)
    if (strcmp(name, OP_NAMES[k]) == 0)
      op->kind = k;
  if (op->kind < 0)
    luaL_error(L, "apply: batch[%d]: unknown op '%s'", i, name);
  const store_lua_where w = {NULL, i, name};
  op->run_id = store_lua_string_at(L, t, "run_id", 1, &w);
  switch (op->kind) {
  case OP_STEP_START:
  case OP_STEP_COMPLETE:
  case OP_STEP_FAIL:
  case OP_STEP_COMPENSATED:
  case OP_KV_PUT:
    op->key = store_lua_string_at(L, t, "key", 1, &w);
    op->attempts = store_lua_count_at(L, t, "attempts", -1, &w);
    if (op->kind == OP_STEP_COMPLETE)
      op->json = store_lua_string_at(L, t, "result_json", 0, &w);
    else if (op->kind == OP_STEP_FAIL)
      op->json = store_lua_string_at(L, t, "error_json", 0, &w);
    else if (op->kind == OP_KV_PUT)
      op->json = store_lua_string_at(L, t, "value_json", 0, &w);
    break;
  case OP_EVENT_ADD:
    op->key = store_lua_string_at(L, t, "key", 1, &w);
    op->json = store_lua_string_at(L, t, "event_json", 1, &w);
    break;
  case OP_RUN_STATUS:
    op->status = store_lua_string_at(L, t, "status", 1, &w);
    if (!store_run_status_valid(op->status))
      luaL_error(L, "apply: batch[%d] (%s): unknown run status '%s'", i, name, op->status);
    lua_getfield(L, t, "exit_code");
    op->has_exit = !lua_isnil(L, -1);
    if (op->has_exit && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "apply: batch[%d] (%s): field 'exit_code' must be a number", i, name);
    op->exit_code = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    break;
  case OP_AUDIT_ADD: {
    store_audit_entry *a = &op->audit;
    a->run_id = op->run_id;
    a->item = store_lua_string_at(L, t, "item", 0, &w);
    a->operation = store_lua_string_at(L, t, "operation", 1, &w);
    a->method = store_lua_string_at(L, t, "method", 0, &w);
    a->target = store_lua_string_at(L, t, "target", 0, &w);
    a->resource_type = store_lua_string_at(L, t, "resource_type", 0, &w);
    a->resource_id = store_lua_string_at(L, t, "resource_id", 0, &w);
    a->resource_name = store_lua_string_at(L, t, "resource_name", 0, &w);
    a->member_id = store_lua_string_at(L, t, "member_id", 0, &w);
    a->changes_json = store_lua_string_at(L, t, "changes_json", 0, &w);
    a->result = store_lua_string_at(L, t, "result", 1, &w);
    a->detail = store_lua_string_at(L, t, "detail", 0, &w);
    a->status = store_lua_count_at(L, t, "status", -1, &w);
    break;
  }
  case OP_DLQ_ADD: {
    store_dlq_entry *e = &op->dlq;
    e->run_id = op->run_id;
    e->step_key = store_lua_string_at(L, t, "step_key", 0, &w);
    e->operation = store_lua_string_at(L, t, "operation", 0, &w);
    e->method = store_lua_string_at(L, t, "method", 0, &w);
    e->url = store_lua_string_at(L, t, "url", 0, &w);
    e->request_body = store_lua_string_at(L, t, "request_body", 0, &w);
    e->class_ = store_lua_string_at(L, t, "class", 0, &w);
    e->scim_type = store_lua_string_at(L, t, "scim_type", 0, &w);
    e->last_error = store_lua_string_at(L, t, "last_error", 0, &w);
    e->suggest = store_lua_string_at(L, t, "suggest", 0, &w);
    e->rule = store_lua_string_at(L, t, "rule", 0, &w);
    e->status = store_lua_count_at(L, t, "status", -1, &w);
    e->attempts = store_lua_count_at(L, t, "attempts", 0, &w);
    lua_getfield(L, t, "is_compensation");
    e->is_compensation = lua_toboolean(L, -1);
    lua_getfield(L, t, "first_failed_at");
    e->first_failed_at = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 2);
    break;
  }
  }
}

static int run_op(store *s, const batch_op *op, int64_t *id) {
  switch (op->kind) {
  case OP_STEP_START: return store_step_start(s, op->run_id, op->key, op->attempts);
  case OP_STEP_COMPLETE: return store_step_complete(s, op->run_id, op->key, op->json, op->attempts);
  case OP_STEP_FAIL: return store_step_fail(s, op->run_id, op->key, op->json, op->attempts);
  case OP_STEP_COMPENSATED: return store_step_compensated(s, op->run_id, op->key);
  case OP_KV_PUT: return store_kv_put(s, op->run_id, op->key, op->json);
  case OP_RUN_STATUS:
    return store_run_set_status(s, op->run_id, op->status, op->has_exit, op->exit_code);
  case OP_EVENT_ADD: return store_event_add(s, op->run_id, op->key, op->json);
  case OP_AUDIT_ADD: return store_audit_add(s, &op->audit);
  default: return store_dlq_add(s, &op->dlq, id);
  }
}

/* One transaction of every op; rolled back on the first failure. */
int store_lua_batch_write(store *s, store_lua_batch *b) {
  if (store_begin(s) != 0)
    return -1;
  for (int i = 0; i < b->n; i++) {
    if (run_op(s, &b->ops[i], &b->ops[i].id) != 0) {
      store_rollback(s);
      return -1;
    }
  }
  if (store_commit(s) != 0) {
    store_rollback(s);
    return -1;
  }
  return 0;
}

/* The decoded ops live in a userdata left on the stack while decoding, so a misuse error
 * frees them with it; the C copy returned is malloc'd once all are decoded. */
store_lua_batch *store_lua_batch_decode(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  int n = (int)lua_objlen(L, idx);
  size_t size = sizeof(store_lua_batch) + (size_t)(n > 0 ? n : 1) * sizeof(batch_op);
  store_lua_batch *tmp = lua_newuserdata(L, size);
  memset(tmp, 0, size);
  tmp->n = n;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    decode_op(L, i, &tmp->ops[i - 1]);
    lua_pop(L, 1);
  }
  store_lua_batch *b = malloc(size);
  if (!b)
    luaL_error(L, "apply: out of memory");
  memcpy(b, tmp, size);
  lua_pop(L, 1);
  return b;
}

void store_lua_batch_free(store_lua_batch *b) { free(b); }

int store_lua_batch_size(const store_lua_batch *b) { return b->n; }

void store_lua_batch_push_ids(lua_State *L, const store_lua_batch *b) {
  lua_newtable(L);
  for (int i = 0; i < b->n; i++) {
    if (b->ops[i].kind == OP_DLQ_ADD) {
      lua_pushnumber(L, (lua_Number)b->ops[i].id);
      lua_rawseti(L, -2, i + 1);
    }
  }
}

int store_lua_apply(lua_State *L) {
  store *s = store_lua_check_writable(L);
  lua_settop(L, 2);
  /* Decode everything first: misuse raises before the transaction starts. */
  store_lua_batch *b = store_lua_batch_decode(L, 2);
  if (b->n > 0 && store_lua_batch_write(s, b) != 0) {
    store_lua_batch_free(b);
    return store_lua_failure(L, s);
  }
  lua_pushboolean(L, 1);
  store_lua_batch_push_ids(L, b);
  store_lua_batch_free(b);
  lua_pushnil(L); /* lost: fenced writes not made (the PostgreSQL store's worker mode only) */
  return 3;
}
