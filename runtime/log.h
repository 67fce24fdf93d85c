/*
 * log: the one logger for C and Lua. Text lines for people (stderr), JSON lines for
 * machines (--log-format json). Secrets are redacted here, at the source: any field whose
 * key names a secret (authorization, token, secret, password, cookie), any "Bearer ..."
 * value, and every literal registered with log_add_secret() become "[REDACTED]".
 */
#ifndef SCIMRUN_LOG_H
#define SCIMRUN_LOG_H

#include <lua.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_configure(int json, enum log_level min_level);
int log_enabled(enum log_level level);
/* key/value string pairs, NULL-terminated: log_emit(LOG_INFO, "msg", "k", "v", NULL) */
void log_emit(enum log_level level, const char *msg, ...);
/* Registers a secret literal (e.g. a token read from the environment) to redact everywhere; one
 * shorter than 6 characters only where it stands alone (not inside a longer word). */
void log_add_secret(const char *secret);
/* Returns a malloc'd copy of s with secrets redacted; caller frees. */
char *log_redact(const char *s);
int log_key_is_secret(const char *key);
void log_clear_secrets(void);

int luaopen_scimrun_log(lua_State *L);

#endif
