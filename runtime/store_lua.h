/*
 * store_lua: `require "scimrun.store"`, the Lua face of store.h. All calls are synchronous
 * but db:apply_async(), which suspends the calling task. Reads are made on a companion reader
 * (store.h) of a writable store: they see every committed transaction and never wait for one
 * on the thread pool.
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
 *   db:apply(batch) -> true, ids, nil  (one transaction, durable when it returns; ids[i] =
 *     dead-letter id for dlq_add ops; the third value is the PostgreSQL store's fenced-off
 *     writes, always nil here). Waits for a db:apply_async under way to let the writer go.
 *   db:apply_async(batch) -> true, ids | nil, err, code  (in a task: the same transaction on
 *     libuv's thread pool, the loop running meanwhile, then at durability "full" the log's
 *     fdatasync; code "SYNC" when that sync failed, and what it covered may be lost. One at a
 *     time: a second call first waits for the first to let the writer go. Every other use of
 *     the writer meanwhile waits the same way; reads do not.)
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
/* Drops the tasks still waiting on a db:apply_async() (before sched_shutdown releases them);
 * their commits finish on the thread pool and are freed when the loop closes. */
void store_lua_async_shutdown(void);

#endif
