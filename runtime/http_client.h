/*
 * http_client: non-blocking HTTP for tasks. One curl multi handle driven by the libuv loop
 * (multi_socket pattern: a uv_poll_t per socket, one uv_timer_t for curl's timeout).
 *
 * Lua (`scimrun._http`, wrapped by lua/scimrun/http.lua):
 *   request{method, url, headers = {name = value}, body, timeout, connect_timeout,
 *           max_size, insecure} -> yields, then
 *     res {status, headers (lower-cased names), body, total_time}      for any HTTP answer
 *     nil, message, kind                                               for a transport failure
 *   (the runtime's error contract, luv's: nil, message, code), kind being the code:
 *   timeout | connect | reset | dns | tls | too_large | other
 * TLS peer and host verification are always on unless `insecure = true`.
 */
#ifndef SCIMRUN_HTTP_CLIENT_H
#define SCIMRUN_HTTP_CLIENT_H

#include <lua.h>

/* Cancels every in-flight request and releases curl; safe to call when never used. */
void http_client_shutdown(void);
int luaopen_scimrun_http(lua_State *L);

#endif
