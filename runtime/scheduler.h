/*
 * scheduler: every workflow task is a Lua coroutine scheduled on the one libuv loop.
 *
 * Contract:
 *  - sched_init() once per process; sched_loop() is the only uv loop.
 *  - A C function that must wait calls sched_current() to get its task, registers a waiter
 *    that owns the task pointer, and returns sched_wait(L, task). When the event fires the
 *    waiter pushes results with sched_wake_begin()/sched_wake_commit(); the task is resumed
 *    later from the top of a loop callback, never nested inside another resume.
 *  - A task is woken at most once per wait; each live task holds one registry reference,
 *    released when the task ends. sched_ref_count() must be zero at shutdown.
 *  - An error in a task prints its traceback and counts in sched_failed_count(); other tasks
 *    carry on.
 */
#ifndef SCIMRUN_SCHEDULER_H
#define SCIMRUN_SCHEDULER_H

#include <lua.h>
#include <uv.h>

typedef struct sched_task sched_task;

void sched_init(lua_State *L);
uv_loop_t *sched_loop(void);
/* The main Lua state: use it for anything outliving the calling coroutine. */
lua_State *sched_main_state(void);

/* The task running on coroutine L, or NULL when L is not a scheduled task. */
sched_task *sched_current(lua_State *L);
/* Like sched_current but raises a Lua error naming `what` when called outside a task. */
sched_task *sched_check_task(lua_State *L, const char *what);

/* Suspends the task; use as `return sched_wait(L, t);` from a lua_CFunction. */
int sched_wait(lua_State *L, sched_task *t);
/* Returns the task's coroutine stack to push resume values onto, then commit their count. */
lua_State *sched_wake_begin(sched_task *t);
void sched_wake_commit(sched_task *t, int nvalues);

/* Spawns a task running the function at `fn_index` of L with `nargs` values above it
 * (they are popped). Pushes the new coroutine onto L. */
void sched_spawn(lua_State *L, int fn_index, int nargs);

/* Runs the loop until no task, timer or request is left. */
void sched_run(void);
/* Stops the loop at the next opportunity (hard stop on a second signal). */
void sched_stop(void);
int sched_failed_count(void);
int sched_task_count(void);
int sched_ref_count(void);
/* Registry references held outside tasks (e.g. callbacks) are counted here too. */
int sched_ref(lua_State *L);
void sched_unref(lua_State *L, int ref);

/* Releases every task and closes every handle; returns 0 when uv_loop_close succeeded. */
int sched_shutdown(void);

int luaopen_scimrun_core(lua_State *L);

#endif
