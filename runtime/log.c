/* log.c: levelled text/JSON logging with secret redaction at the source (see log.h). */
#include "log.h"
#include "term_status.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define MAX_SECRETS 32

static struct {
  int json;
  enum log_level min;
  char *secrets[MAX_SECRETS];
  size_t secret_len[MAX_SECRETS];
  int nsecrets;
} G = {0, LOG_INFO, {0}, {0}, 0};

static const char *level_names[] = {"debug", "info", "warn", "error"};

void log_configure(int json, enum log_level min_level) {
  G.json = json;
  G.min = min_level;
}

int log_enabled(enum log_level level) { return level >= G.min; }

/* Secrets shorter than this are redacted only where they stand alone (see whole_at): a short
 * literal matched inside words would mangle ordinary text, yet a short token is still a token. */
#define SHORT_SECRET 6

void log_add_secret(const char *secret) {
  if (!secret || !*secret || G.nsecrets == MAX_SECRETS)
    return;
  for (int i = 0; i < G.nsecrets; i++)
    if (strcmp(G.secrets[i], secret) == 0)
      return;
  char *copy = strdup(secret);
  if (!copy)
    return;
  G.secret_len[G.nsecrets] = strlen(copy);
  G.secrets[G.nsecrets++] = copy;
}

void log_clear_secrets(void) {
  for (int i = 0; i < G.nsecrets; i++)
    free(G.secrets[i]);
  G.nsecrets = 0;
}

int log_key_is_secret(const char *key) {
  static const char *words[] = {"authorization", "token", "secret", "password", "cookie", NULL};
  if (!key)
    return 0;
  char lower[64];
  size_t n = strlen(key);
  if (n >= sizeof lower)
    n = sizeof lower - 1;
  for (size_t i = 0; i < n; i++)
    lower[i] = (char)tolower((unsigned char)key[i]);
  lower[n] = 0;
  for (int i = 0; words[i]; i++)
    if (strstr(lower, words[i]))
      return 1;
  return 0;
}

static const char REDACTED[] = "[REDACTED]";

/* Characters a token is made of: a short secret next to one of these is part of a longer word. */
static int token_char(char c) {
  return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '+' ||
         c == '/';
}

/* Does the secret of length sl at s[i] stand alone: a whole value, a query parameter, a
 * header value (delimited by anything but token characters)? */
static int whole_at(const char *s, size_t len, size_t i, size_t sl) {
  return (i == 0 || !token_char(s[i - 1])) && (i + sl == len || !token_char(s[i + sl]));
}

/* Could s hold what log_redact replaces: "bearer " (any case) or a registered secret? Most
 * strings hold neither (the SCIM client redacts every attribute value it records): they skip
 * the byte-by-byte rewrite and its copy. */
static int redaction_needed(const char *s, size_t len) {
  for (size_t i = 0; i + 7 <= len; i++)
    if ((s[i] | 0x20) == 'b' && strncasecmp(s + i, "bearer ", 7) == 0)
      return 1;
  for (int k = 0; k < G.nsecrets; k++) {
    size_t sl = G.secret_len[k];
    const char *first = G.secrets[k];
    for (const char *p = s; sl <= len - (size_t)(p - s);) {
      p = memchr(p, first[0], len - (size_t)(p - s) - sl + 1);
      if (!p)
        break;
      if (memcmp(p, first, sl) == 0)
        return 1;
      p++;
    }
  }
  return 0;
}

/* The byte-by-byte rewrite of s (len bytes up to its NUL), for text redaction_needed flagged. */
static char *redact_copy(const char *s, size_t len) {
  /* worst case each byte starts a replacement of a longer marker: bound generously */
  size_t cap = len * 2 + sizeof REDACTED + 1;
  char *out = malloc(cap);
  if (!out)
    return NULL;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    int matched = 0;
    if (strncasecmp(s + i, "bearer ", 7) == 0) {
      memcpy(out + o, s + i, 7);
      o += 7;
      i += 7;
      size_t j = i;
      while (j < len && !isspace((unsigned char)s[j]) && s[j] != '"' && s[j] != ',')
        j++;
      if (j > i) {
        memcpy(out + o, REDACTED, sizeof REDACTED - 1);
        o += sizeof REDACTED - 1;
      }
      i = j;
      continue;
    }
    for (int k = 0; k < G.nsecrets; k++) {
      size_t sl = G.secret_len[k];
      if (sl <= len - i && memcmp(s + i, G.secrets[k], sl) == 0 &&
          (sl >= SHORT_SECRET || whole_at(s, len, i, sl))) {
        memcpy(out + o, REDACTED, sizeof REDACTED - 1);
        o += sizeof REDACTED - 1;
        i += sl;
        matched = 1;
        break;
      }
    }
    if (!matched)
      out[o++] = s[i++];
    if (o + sizeof REDACTED + 8 > cap) {
      cap *= 2;
      char *grown = realloc(out, cap);
      if (!grown) {
        free(out);
        return NULL;
      }
      out = grown;
    }
  }
  out[o] = 0;
  return out;
}

char *log_redact(const char *s) {
  size_t len = strlen(s);
  return redaction_needed(s, len) ? redact_copy(s, len) : strdup(s);
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (*p < 0x20)
        fprintf(f, "\\u%04x", *p);
      else
        fputc(*p, f);
    }
  }
  fputc('"', f);
}

typedef struct {
  const char *key;
  const char *str; /* NULL when numeric */
  double num;
  int is_bool;
} log_field;

static void write_value(FILE *f, const log_field *fl, int quote_text) {
  if (fl->str == NULL) {
    if (fl->is_bool)
      fputs(fl->num != 0 ? "true" : "false", f);
    else if (fl->num == (double)(long long)fl->num)
      fprintf(f, "%lld", (long long)fl->num);
    else
      fprintf(f, "%.6g", fl->num);
    return;
  }
  const char *v = log_key_is_secret(fl->key) ? REDACTED : fl->str;
  char *clean = log_redact(v);
  const char *shown = clean ? clean : REDACTED;
  if (G.json)
    json_string(f, shown);
  else if (quote_text && (strchr(shown, ' ') || strchr(shown, '"') || !*shown))
    json_string(f, shown);
  else
    fputs(shown, f);
  free(clean);
}

static void emit_fields(enum log_level level, const char *msg, const log_field *fields, int n) {
  FILE *f = stderr;
  term_status_erase(f); /* a log line goes above the status area, never through it */
  if (G.json) {
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    fprintf(f, "{\"ts\":%lld.%03d,\"level\":\"%s\",\"msg\":", (long long)tv.tv_sec,
            (int)(tv.tv_usec / 1000), level_names[level]);
    char *m = log_redact(msg);
    json_string(f, m ? m : REDACTED);
    free(m);
    for (int i = 0; i < n; i++) {
      fputc(',', f);
      json_string(f, fields[i].key);
      fputc(':', f);
      write_value(f, &fields[i], 0);
    }
    fputs("}\n", f);
  } else {
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char *m = log_redact(msg);
    fprintf(f, "%02d:%02d:%02d %-5s %s", tm.tm_hour, tm.tm_min, tm.tm_sec, level_names[level],
            m ? m : REDACTED);
    free(m);
    for (int i = 0; i < n; i++) {
      if (strcmp(fields[i].key, "traceback") == 0) { /* multi-line: print as is, below */
        char *t = log_redact(fields[i].str ? fields[i].str : "");
        fprintf(f, "\n%s", t ? t : REDACTED);
        free(t);
        continue;
      }
      fprintf(f, " %s=", fields[i].key);
      write_value(f, &fields[i], 1);
    }
    fputc('\n', f);
  }
  term_status_draw(f);
  fflush(f);
}

void log_emit(enum log_level level, const char *msg, ...) {
  if (!log_enabled(level))
    return;
  log_field fields[16];
  int n = 0;
  va_list ap;
  va_start(ap, msg);
  const char *k;
  while (n < 16 && (k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    fields[n].key = k;
    fields[n].str = v ? v : "";
    fields[n].num = 0;
    fields[n].is_bool = 0;
    n++;
  }
  va_end(ap);
  emit_fields(level, msg, fields, n);
}

static enum log_level level_from_name(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0)
      return (enum log_level)i;
  luaL_argerror(L, idx, "level must be debug, info, warn or error");
  return LOG_INFO;
}

/* log.emit(level, msg [, fields]) */
static int l_emit(lua_State *L) {
  enum log_level level = level_from_name(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  if (!log_enabled(level))
    return 0;
  log_field fields[32];
  int n = 0;
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (n < 32 && lua_next(L, 3)) {
      if (lua_type(L, -2) == LUA_TSTRING) {
        log_field *fl = &fields[n];
        fl->key = lua_tostring(L, -2);
        fl->str = NULL;
        fl->num = 0;
        fl->is_bool = 0;
        int t = lua_type(L, -1);
        if (t == LUA_TNUMBER) {
          fl->num = lua_tonumber(L, -1);
        } else if (t == LUA_TBOOLEAN) {
          fl->is_bool = 1;
          fl->num = lua_toboolean(L, -1);
        } else if (t == LUA_TSTRING) {
          fl->str = lua_tostring(L, -1);
        } else {
          fl->str = luaL_typename(L, -1);
        }
        n++; /* strings stay alive: the fields table (argument 3) holds them */
      }
      lua_pop(L, 1);
    }
  }
  emit_fields(level, msg, fields, n);
  return 0;
}

static int l_configure(lua_State *L) {
  const char *format = luaL_optstring(L, 1, "text");
  if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0)
    return luaL_argerror(L, 1, "log format must be text or json");
  enum log_level level = lua_isnoneornil(L, 2) ? G.min : level_from_name(L, 2);
  log_configure(strcmp(format, "json") == 0, level);
  return 0;
}

static int l_add_secret(lua_State *L) {
  log_add_secret(luaL_checkstring(L, 1));
  return 0;
}

static int l_redact(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (!redaction_needed(s, len)) {
    lua_settop(L, 1); /* the string itself: nothing copied or interned again */
    return 1;
  }
  char *r = redact_copy(s, strlen(s)); /* up to a NUL, as log_redact */
  lua_pushstring(L, r ? r : REDACTED);
  free(r);
  return 1;
}

/* log.status(text|nil): the status area below the log lines on stderr (term_status.h). */
static int l_status(lua_State *L) {
  term_status_set(stderr, luaL_optstring(L, 1, NULL));
  return 0;
}

/* log.terminal() -> is stderr a terminal, its width in columns */
static int l_terminal(lua_State *L) {
  lua_pushboolean(L, term_is_tty(2));
  lua_pushinteger(L, term_columns(2));
  return 2;
}

static int l_is_json(lua_State *L) {
  lua_pushboolean(L, G.json);
  return 1;
}

int luaopen_scimrun_log(lua_State *L) {
  static const luaL_Reg funcs[] = {{"emit", l_emit},
                                   {"configure", l_configure},
                                   {"add_secret", l_add_secret},
                                   {"redact", l_redact},
                                   {"is_json", l_is_json},
                                   {"status", l_status},
                                   {"terminal", l_terminal},
                                   {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
