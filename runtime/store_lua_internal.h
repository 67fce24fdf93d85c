/*
 * store_lua_internal: helpers shared by store_lua*.c; not for other files.
 *
 * A db userdata holds the writer connection, and once a read is made, a companion reader
 * (store.h). While db:apply_async() writes a batch on the thread pool, the writer belongs to
 * that job: every other use of it on the loop first waits for the job to let it go
 * (store_lua_wait_idle), and reads go to the reader, which never waits.
 */
#ifndef SCIMRUN_STORE_LUA_INTERNAL_H
#define SCIMRUN_STORE_LUA_INTERNAL_H

#include <lua.h>
#include <pthread.h>

#include "store.h"

typedef struct {
  store *s;           /* the writer (or a readonly store); NULL once closed */
  store *reader;      /* companion reader of a writer, opened at the first read */
  int reader_failed;  /* it could not be opened: reads use the writer */
  pthread_mutex_t mu; /* guards applying */
  pthread_cond_t idle;
  int applying; /* a job owns s: queued or writing */
} store_lua_db;

/* The open db argument 1; raises when closed. */
store_lua_db *store_lua_check_ud(lua_State *L);
/* The writer behind db argument 1, for what needs no SQL (path, limits); raises when closed. */
store *store_lua_check_db(lua_State *L);
/* The writer for SQL, once no job holds it; raises when closed or readonly. */
store *store_lua_check_writable(lua_State *L);
/* The connection for a read query: the companion reader, or the writer once no job holds it. */
store *store_lua_check_reader(lua_State *L);
/* Blocks until no job holds the writer (the loop thread only). */
void store_lua_wait_idle(store_lua_db *u);
/* Pushes nil, message, code; returns 3. */
int store_lua_failure(lua_State *L, store *s);
/* t[field] as a string (NULL when nil and optional), raising "<ctx>: field ..." on a wrong
 * type. The string stays valid while the table at idx is alive and unchanged. */
const char *store_lua_field_string(lua_State *L, int idx, const char *field, int required,
                                   const char *ctx);
/* t[field] as a non-negative integer, or dflt when nil. */
int store_lua_field_count(lua_State *L, int idx, const char *field, int dflt, const char *ctx);
/* The same with the context given as where: `what`, else "apply: batch[index] (op)", or
 * "apply: batch[index]" without an op, formatted only when a field is refused (a group commit
 * decodes hundreds of ops). */
typedef struct {
  const char *what;
  int index;
  const char *op;
} store_lua_where;
const char *store_lua_string_at(lua_State *L, int idx, const char *field, int required,
                                const store_lua_where *w);
int store_lua_count_at(lua_State *L, int idx, const char *field, int dflt,
                       const store_lua_where *w);

/* A decoded batch (store_lua_apply.c). Its strings point into the batch table, which must stay
 * alive and unchanged while it is used. */
typedef struct store_lua_batch store_lua_batch;
/* Decodes the batch table at idx (raising on misuse, before anything is written); free with
 * store_lua_batch_free. */
store_lua_batch *store_lua_batch_decode(lua_State *L, int idx);
void store_lua_batch_free(store_lua_batch *b);
int store_lua_batch_size(const store_lua_batch *b);
/* Writes every op in one transaction, rolled back on the first failure: 0 or -1 (error in s).
 * Any thread, with s owned by the caller. */
int store_lua_batch_write(store *s, store_lua_batch *b);
/* Pushes the ids table of a written batch ({[i] = dead-letter id of dlq_add op i}). */
void store_lua_batch_push_ids(lua_State *L, const store_lua_batch *b);

/* db:apply(batch) (store_lua_apply.c); db:apply_async(batch) (store_lua_async.c) */
int store_lua_apply(lua_State *L);
int store_lua_apply_async(lua_State *L);

#endif
