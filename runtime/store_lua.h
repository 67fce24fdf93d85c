/*
 * store_lua: `require "scimrun.store"`, the Lua face of store.h. All calls are synchronous
 * but db:sync(), which suspends the calling task.
 * Misuse (wrong argument type, unknown op/status/state, a closed or readonly db) raises;
 * operational failure returns nil, message (naming the state file), code ("SQLITE_FULL",
 * "LOCKED", "LINKED", "NOTFOUND", "EXISTS", "TOOBIG", ...).
 *
 *   store.open(path, {durability = "full"|"normal", readonly = false,
 *                     max_value_bytes = store.MAX_VALUE_BYTES}) -> db | nil, err, code
 *   store.new_run_id() -> "r-YYYYMMDD-HHMMSS-xxxx" (UTC); store.SCHEMA_VERSION
 *   store.MAX_VALUE_BYTES: default limit on one stored JSON value (16 MiB); a larger one makes
 *     the write (the whole apply batch) fail with code "TOOBIG", naming it and its size
 *   db:close(); db:path(); db:is_readonly(); db:max_value_bytes()
 *   db:run_create{id, workflow_name, workflow_path, workflow_hash, params_json, inputs_json,
 *                 policy_json} -> true
 *   db:run_get(id) / db:run_latest_unfinished(workflow_path) -> run | nil
 *   db:runs_list{limit = 50, workflow_path = nil} -> array, newest first
 *   db:run_set_status(id, status, exit_code_or_nil) -> true
 *   db:run_step_counts(id) -> {started, completed, failed, compensated}
 *   db:step_get(run_id, key) -> step | nil;  db:steps_load(run_id) -> {[key] = step}
 *   db:apply(batch [, defer_sync]) -> true, ids, nil, unsynced  (one transaction; ids[i] =
 *     dead-letter id for dlq_add ops; the third value is the PostgreSQL store's fenced-off
 *     writes, always nil here). With defer_sync and durability "full" the log is not synced in
 *     the commit and unsynced is true: the batch is durable only after a later db:sync().
 *   db:sync() -> true | nil, err, "SYNC"  (in a task: fdatasync of the log on libuv's thread
 *     pool, the loop running meanwhile; true at once with durability "normal")
 *   db:kv_get(run_id, key) -> value_json | nil;  db:kv_all(run_id) -> {[key] = value_json}
 *   db:dlq_list{run_id, state, limit} -> array by id;  db:dlq_get(id) -> entry | nil
 *   db:dlq_set_state(id, state) -> true;  db:dlq_count{state, run_id} -> n
 *   db:dlq_prune(retention_seconds) -> number deleted
 *   db:audit_list{run_id, user, limit} -> rows oldest first (limit: the newest N); user matches
 *     a userName (ignoring case, any name the user had) or an id, membership rows included
 *   db:audit_prune(retention_seconds) -> number deleted
 *   apply op "audit_add": run_id, operation, result (required), item, method, target,
 *     resource_type, resource_id, resource_name, member_id, changes_json, status, detail
 *   db:_pragma("max_page_count"|"query_only", n) -> value  (test hook: simulate full/readonly)
 * NULL columns are absent from the returned tables; is_compensation is a boolean.
 */
#ifndef SCIMRUN_STORE_LUA_H
#define SCIMRUN_STORE_LUA_H

#include <lua.h>

int luaopen_scimrun_store(lua_State *L);
/* Drops the tasks still waiting on a db:sync() (before sched_shutdown releases them); their
 * syncs finish on the thread pool and are freed when the loop closes. */
void store_lua_sync_shutdown(void);

#endif
