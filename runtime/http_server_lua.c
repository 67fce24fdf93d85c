/*
 * http_server_lua.c: the Lua binding `scimrun.httpserver` over http_server.c.
 *
 *   local srv, err, code = hs.listen{host = "127.0.0.1", port = 0, handler = fn,
 *                                    max_body = 1048576, max_header = 16384,
 *                                    idle_timeout = 30, read_timeout = 10}
 *   srv:port(), srv:url(), srv:close(), srv:stats() -> {connections, requests, open}
 *
 * Every request runs handler(req) on its own task; its return value (or error) is turned
 * into the answer by l_respond(). The server holds two counted refs while it exists: the
 * handler wrapper and its own userdata (so a listening server needs no Lua variable to keep
 * serving); both are released from on_closed, i.e. when the last libuv handle is closed.
 */
#include <http_parser.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "http_server.h"
#include "log.h"
#include "scheduler.h"

#define SERVER_MT "scimrun.httpserver.server"

typedef struct {
  http_server *s; /* NULL once the server has been freed */
  int port;
  int handler_ref, self_ref;
  http_server_stats last; /* stats when it was freed */
  char host[64];
} server_ud;

typedef struct {
  char *data;
  size_t len, cap;
} hbuf;

/* Runs on the request's task; xpcall keeps a handler error from failing the task. */
static const char WRAPPER[] =
    "local handler, respond = ...\n"
    "local traceback, tostring, type, xpcall = debug.traceback, tostring, type, xpcall\n"
    "local function on_error(e)\n"
    "  if type(e) == 'table' then e = e.detail or e.message or e end\n"
    "  return traceback(tostring(e), 2)\n"
    "end\n"
    "return function(ex, req) return respond(ex, req, xpcall(handler, on_error, req)) end\n";

static int hbuf_add(hbuf *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown)
      return -1;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static int is_token(const char *s, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          strchr("!#$%&'*+-.^_`|~", ch)))
      return 0;
  }
  return 1;
}

static int is_field_value(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
      return 0;
  return 1;
}

/* Appends "name: value\r\n" for the value at the top of L; returns an error text or NULL. */
static const char *add_header(lua_State *L, hbuf *b, const char *name, size_t nlen) {
  if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
    return "header values must be strings or numbers (or a list of them)";
  size_t vlen;
  const char *value = lua_tolstring(L, -1, &vlen);
  if (!is_field_value(value, vlen))
    return "header values must not contain CR, LF or NUL";
  if (hbuf_add(b, name, nlen) || hbuf_add(b, ": ", 2) || hbuf_add(b, value, vlen) ||
      hbuf_add(b, "\r\n", 2))
    return "out of memory";
  return NULL;
}

/* Validates the response table at idx and serialises its headers into b. */
static const char *build_headers(lua_State *L, int idx, hbuf *b, int *keep_open) {
  lua_getfield(L, idx, "headers");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (!lua_istable(L, -1))
    return "headers must be a table {Name = value}";
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    size_t nlen;
    if (lua_type(L, -2) != LUA_TSTRING)
      return "header names must be strings";
    const char *name = lua_tolstring(L, -2, &nlen);
    if (!is_token(name, nlen))
      return "header names must be HTTP tokens (no spaces, colons or control characters)";
    if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "transfer-encoding") == 0) {
      lua_pop(L, 1); /* framing is the server's job */
      continue;
    }
    if (strcasecmp(name, "connection") == 0) {
      const char *v = lua_tostring(L, -1);
      if (v && strcasecmp(v, "close") == 0)
        *keep_open = 0;
      lua_pop(L, 1);
      continue;
    }
    const char *err = NULL;
    if (lua_istable(L, -1)) { /* repeated header, e.g. several Set-Cookie */
      for (int i = 1; !err; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          break;
        }
        err = add_header(L, b, name, nlen);
        lua_pop(L, 1);
      }
    } else {
      err = add_header(L, b, name, nlen);
    }
    if (err)
      return err;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return NULL;
}

static void respond_text(http_exchange *ex, int status, const char *text) {
  static const char ct[] = "Content-Type: text/plain\r\n";
  http_exchange_respond(ex, status, ct, sizeof ct - 1, text, strlen(text), 1);
}

static const char *req_field(lua_State *L, int req, const char *key) {
  lua_getfield(L, req, key);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1); /* still anchored in req */
  return s ? s : "?";
}

/* respond(ex, req, ok, response_or_traceback): called by WRAPPER on the request's task. */
static int l_respond(lua_State *L) {
  http_exchange *ex = lua_touserdata(L, 1);
  if (!lua_toboolean(L, 3)) {
    const char *tb = lua_tostring(L, 4);
    log_emit(LOG_ERROR, "http handler failed", "method", req_field(L, 2, "method"), "path",
             req_field(L, 2, "path"), "traceback", tb ? tb : "(no message)", NULL);
    respond_text(ex, 500, "Internal Server Error\n");
    return 0;
  }
  const char *err = NULL;
  int status = 200, keep_open = 1;
  size_t blen = 0;
  const char *body = "";
  hbuf hb = {NULL, 0, 0};
  if (!lua_istable(L, 4)) {
    err = "the handler must return a table {status =, headers =, body =}";
  } else {
    lua_getfield(L, 4, "drop");
    int drop = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (drop) {
      http_exchange_drop(ex);
      return 0;
    }
    lua_getfield(L, 4, "status");
    lua_Number st = lua_isnil(L, -1) ? 200 : lua_tonumber(L, -1);
    status = (int)st;
    if (lua_type(L, -1) != LUA_TNUMBER && !lua_isnil(L, -1))
      err = "status must be a number";
    else if ((lua_Number)status != st || status < 200 || status > 599)
      err = "status must be an integer from 200 to 599";
    lua_getfield(L, 4, "body");
    if (lua_type(L, -1) == LUA_TSTRING)
      body = lua_tolstring(L, -1, &blen); /* stays on the stack until we return */
    else if (!lua_isnil(L, -1) && !err)
      err = "body must be a string";
    if (!err)
      err = build_headers(L, 4, &hb, &keep_open);
  }
  if (err) {
    log_emit(LOG_ERROR, "http handler returned an invalid response", "method",
             req_field(L, 2, "method"), "path", req_field(L, 2, "path"), "problem", err, NULL);
    respond_text(ex, 500, "Internal Server Error\n");
  } else {
    http_exchange_respond(ex, status, hb.data, hb.len, body, blen, keep_open);
  }
  free(hb.data);
  return 0;
}

static void push_request(lua_State *L, const http_request *r) {
  lua_createtable(L, 0, 9);
  lua_pushstring(L, r->method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, r->url);
  lua_setfield(L, -2, "url");
  /* path and query from the target; absolute-form targets lose scheme and authority */
  struct http_parser_url u;
  http_parser_url_init(&u);
  size_t ulen = strlen(r->url);
  if (http_parser_parse_url(r->url, ulen, 0, &u) == 0 && (u.field_set & (1 << UF_PATH))) {
    lua_pushlstring(L, r->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    if (u.field_set & (1 << UF_QUERY)) {
      lua_pushlstring(L, r->url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
      lua_setfield(L, -3, "query");
    }
  } else {
    const char *q = strchr(r->url, '?');
    lua_pushlstring(L, r->url, q ? (size_t)(q - r->url) : ulen);
    if (q) {
      lua_pushstring(L, q + 1);
      lua_setfield(L, -3, "query");
    }
  }
  lua_setfield(L, -2, "path");
  lua_newtable(L);
  const char *p = r->headers, *end = r->headers + r->headers_len;
  while (p < end) {
    const char *value = p + strlen(p) + 1;
    lua_getfield(L, -1, p);
    if (lua_isstring(L, -1)) /* repeated header: join as RFC 9110 allows */
      lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), value);
    else
      lua_pushstring(L, value);
    lua_setfield(L, -3, p);
    lua_pop(L, 1);
    p = value + strlen(value) + 1;
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, r->body, r->body_len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, r->remote);
  lua_setfield(L, -2, "remote");
  lua_pushfstring(L, "%d.%d", r->http_major, r->http_minor);
  lua_setfield(L, -2, "version");
}

/* Called from the parser inside a libuv callback: the main state's stack is free to use. */
static void on_request(http_server *s, http_exchange *ex, const http_request *req, void *ud) {
  (void)s;
  server_ud *u = ud;
  lua_State *L = sched_main_state();
  lua_rawgeti(L, LUA_REGISTRYINDEX, u->handler_ref);
  lua_pushlightuserdata(L, ex);
  push_request(L, req);
  sched_spawn(L, -3, 2);
  lua_pop(L, 1);
}

static void on_closed(http_server *s, void *ud) {
  server_ud *u = ud;
  lua_State *L = sched_main_state();
  u->last = http_server_get_stats(s);
  u->last.open = 0;
  u->s = NULL;
  int handler_ref = u->handler_ref, self_ref = u->self_ref;
  u->handler_ref = u->self_ref = LUA_NOREF;
  sched_unref(L, handler_ref);
  sched_unref(L, self_ref); /* u may be collected from here on */
}

static double opt_number(lua_State *L, const char *key, double dflt, double min, double max) {
  lua_getfield(L, 1, key);
  double v = dflt;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER || lua_tonumber(L, -1) < min || lua_tonumber(L, -1) > max) {
      lua_pushfstring(L, "%s must be a number from %f to %f", key, min, max);
      luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int l_listen(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "handler");
  if (!lua_isfunction(L, -1))
    luaL_argerror(L, 1, "handler must be a function(req) returning {status, headers, body}");
  int handler = lua_gettop(L);
  lua_getfield(L, 1, "host");
  const char *host = lua_isnil(L, -1) ? "127.0.0.1" : lua_tostring(L, -1);
  if (!host || strlen(host) >= sizeof(((server_ud *)0)->host))
    luaL_argerror(L, 1, "host must be an IP address string such as \"127.0.0.1\" or \"::1\"");
  double port = opt_number(L, "port", 0, 0, 65535);
  if (port != (int)port)
    luaL_argerror(L, 1, "port must be an integer from 0 to 65535 (0 picks a free port)");

  server_ud *u = lua_newuserdata(L, sizeof *u);
  memset(u, 0, sizeof *u);
  u->handler_ref = u->self_ref = LUA_NOREF;
  strcpy(u->host, host);
  luaL_getmetatable(L, SERVER_MT);
  lua_setmetatable(L, -2);
  http_server_config cfg = {
      .host = host,
      .port = (int)port,
      .max_body = (size_t)opt_number(L, "max_body", 1048576, 0, 1 << 30),
      .max_header = (size_t)opt_number(L, "max_header", 16384, 256, 1 << 20),
      .idle_timeout = opt_number(L, "idle_timeout", 30, 0.001, 86400),
      .read_timeout = opt_number(L, "read_timeout", 10, 0.001, 86400),
      .on_request = on_request,
      .on_closed = on_closed,
      .userdata = u,
  };
  int rc = http_server_start(&cfg, &u->s);
  if (rc != 0) {
    lua_pushnil(L);
    if (rc == UV_EINVAL)
      lua_pushfstring(L,
                      "EINVAL: cannot listen on %s: host must be an IP address such as "
                      "127.0.0.1 or ::1 (not a name)",
                      host);
    else
      lua_pushfstring(L, "%s: cannot listen on %s port %d: %s", uv_err_name(rc), host, (int)port,
                      uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    return 3;
  }
  u->port = http_server_port(u->s);
  lua_pushvalue(L, -1);
  u->self_ref = sched_ref(L);
  luaL_loadbuffer(L, WRAPPER, sizeof WRAPPER - 1, "=httpserver");
  lua_pushvalue(L, handler);
  lua_pushcfunction(L, l_respond);
  lua_call(L, 2, 1);
  u->handler_ref = sched_ref(L);
  return 1;
}

static server_ud *check_server(lua_State *L) { return luaL_checkudata(L, 1, SERVER_MT); }

static int l_port(lua_State *L) {
  lua_pushinteger(L, check_server(L)->port);
  return 1;
}

static int l_url(lua_State *L) {
  server_ud *u = check_server(L);
  if (strchr(u->host, ':'))
    lua_pushfstring(L, "http://[%s]:%d", u->host, u->port);
  else
    lua_pushfstring(L, "http://%s:%d", u->host, u->port);
  return 1;
}

static int l_close(lua_State *L) {
  server_ud *u = check_server(L);
  if (u->s)
    http_server_close(u->s);
  return 0;
}

static int l_stats(lua_State *L) {
  server_ud *u = check_server(L);
  http_server_stats st = u->s ? http_server_get_stats(u->s) : u->last;
  lua_createtable(L, 0, 3);
  lua_pushnumber(L, (lua_Number)st.connections);
  lua_setfield(L, -2, "connections");
  lua_pushnumber(L, (lua_Number)st.requests);
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, st.open);
  lua_setfield(L, -2, "open");
  return 1;
}

static int l_tostring(lua_State *L) {
  server_ud *u = check_server(L);
  lua_pushfstring(L, "httpserver(%s port %d%s)", u->host, u->port, u->s ? "" : ", closed");
  return 1;
}

static const luaL_Reg server_methods[] = {
    {"port", l_port}, {"url", l_url}, {"close", l_close}, {"stats", l_stats}, {NULL, NULL}};

int luaopen_scimrun_httpserver(lua_State *L) {
  if (luaL_newmetatable(L, SERVER_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, server_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_listen);
  lua_setfield(L, -2, "listen");
  return 1;
}
