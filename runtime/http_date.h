/*
 * http_date: HTTP dates (Retry-After, rate-limit reset headers) parsed by libcurl's
 * curl_getdate, the parser curl itself uses for cookies and If-Modified-Since. It reads the
 * three RFC 9110 5.6.7 forms (IMF-fixdate, RFC 850, asctime) and the usual variants.
 *
 * Lua module scimrun.httpdate:
 *   httpdate.parse(s) -> seconds since the epoch (UTC), or nil when s is not a date
 * A string that is not a date is an answer, not a failure: nil alone, like tonumber.
 */
#ifndef SCIMRUN_HTTP_DATE_H
#define SCIMRUN_HTTP_DATE_H

#include <lua.h>

int luaopen_scimrun_httpdate(lua_State *L);

#endif
