/*
 * http_server: a small HTTP/1.1 server on the scimrun libuv loop (sched_loop()), for the
 * embedded SCIM sandbox and test fixtures. Requests are parsed by http-parser.
 *
 * Contract:
 *  - Keep-alive and pipelining: every parsed request becomes an exchange queued on its
 *    connection; responses are written strictly in request order, whatever order the
 *    exchanges are answered in. At most HTTP_SERVER_MAX_QUEUE requests per connection are
 *    outstanding; beyond that the connection stops reading until answers go out.
 *  - Limits: a body above max_body answers 413, headers above max_header (or too many) 431,
 *    a malformed request 400, a request not complete within read_timeout 408; each of these
 *    closes the connection after the answer. An idle keep-alive connection is closed after
 *    idle_timeout. `Connection: close` (and HTTP/1.0 without keep-alive) is honoured.
 *  - Each exchange must be answered exactly once, by http_exchange_respond() or
 *    http_exchange_drop(), even after its connection or server went away (the call then
 *    just frees it). Exchanges never answered are freed by http_server_shutdown_all().
 *  - http_server_close() stops accepting and closes every connection at once; on_closed runs
 *    from the last libuv close callback, after which the server pointer is invalid.
 *  - Parsing is in http_server_parse.c, the Lua binding (`scimrun.httpserver`) in
 *    http_server_lua.c.
 */
#ifndef SCIMRUN_HTTP_SERVER_H
#define SCIMRUN_HTTP_SERVER_H

#include <lua.h>
#include <stddef.h>

#define HTTP_SERVER_MAX_QUEUE 32

typedef struct http_server http_server;
typedef struct http_exchange http_exchange;

/* A parsed request; valid only during the on_request call. */
typedef struct {
  const char *method;
  const char *url; /* raw request target, NUL-terminated */
  const char *headers;
  size_t headers_len; /* "name\0value\0" pairs, names lower-cased, in arrival order */
  const char *body;
  size_t body_len;
  const char *remote; /* peer IP address */
  int http_major, http_minor;
} http_request;

typedef struct {
  const char *host; /* IPv4 or IPv6 literal */
  int port;         /* 0 picks a free port */
  size_t max_body, max_header;
  double idle_timeout, read_timeout; /* seconds */
  void (*on_request)(http_server *s, http_exchange *ex, const http_request *req, void *ud);
  void (*on_closed)(http_server *s, void *ud);
  void *userdata;
} http_server_config;

typedef struct {
  unsigned long connections; /* accepted since start */
  unsigned long requests;    /* parsed since start */
  int open;                  /* connections open now */
} http_server_stats;

/* Returns 0 and sets *out, or a negative libuv error (nothing to close then). */
int http_server_start(const http_server_config *cfg, http_server **out);
int http_server_port(const http_server *s);
http_server_stats http_server_get_stats(const http_server *s);
/* Idempotent. */
void http_server_close(http_server *s);

/* `headers` holds complete "Name: value\r\n" lines (already validated by the caller); the
 * server adds Content-Length and Connection. keep_open = 0 closes after this answer. */
void http_exchange_respond(http_exchange *ex, int status, const char *headers, size_t headers_len,
                           const char *body, size_t body_len, int keep_open);
/* Closes the connection at this exchange's turn without writing anything. */
void http_exchange_drop(http_exchange *ex);

/* Closes every server and frees unanswered exchanges; call before sched_shutdown(). */
void http_server_shutdown_all(void);

int luaopen_scimrun_httpserver(lua_State *L);

#endif
