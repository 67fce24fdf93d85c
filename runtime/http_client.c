/*
 * http_client.c: libcurl multi_socket driven by libuv (see http_client.h and curl's
 * docs/examples/multi-uv.c). Finished transfers are drained after every socket_action,
 * including the timer path, and their tasks are woken through the scheduler.
 */
#include "http_client.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "scheduler.h"

#define DEFAULT_MAX_SIZE (16 * 1024 * 1024)

typedef struct {
  char *data;
  size_t len, cap;
} buffer;

typedef struct http_req {
  CURL *easy;
  sched_task *task;
  struct curl_slist *headers;
  char *req_body;
  buffer body;
  buffer resp_headers; /* "name\0value\0" pairs, names lower-cased */
  size_t max_size;
  int too_large;
  char errbuf[CURL_ERROR_SIZE];
  struct http_req *prev, *next;
} http_req;

typedef struct {
  uv_poll_t poll;
  curl_socket_t fd;
} socket_ctx;

#define EASY_POOL_MAX 256

static struct {
  CURLM *multi;
  uv_timer_t timer;
  http_req *inflight;
  int warned_insecure;
  CURL *pool[EASY_POOL_MAX]; /* reset easy handles: init/cleanup per request costs CPU */
  int npool;
} H;

static CURL *easy_get(void) {
  if (H.npool > 0)
    return H.pool[--H.npool];
  return curl_easy_init();
}

static void easy_put(CURL *e) {
  if (H.npool < EASY_POOL_MAX && H.multi) {
    curl_easy_reset(e);
    H.pool[H.npool++] = e;
  } else {
    curl_easy_cleanup(e);
  }
}

static int buffer_append(buffer *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown)
      return -1;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

static void req_free(http_req *r) {
  if (r->prev)
    r->prev->next = r->next;
  else if (H.inflight == r)
    H.inflight = r->next;
  if (r->next)
    r->next->prev = r->prev;
  if (r->easy) {
    curl_multi_remove_handle(H.multi, r->easy);
    easy_put(r->easy);
  }
  curl_slist_free_all(r->headers);
  free(r->req_body);
  free(r->body.data);
  free(r->resp_headers.data);
  free(r);
}

static const char *error_kind(CURLcode code, int too_large) {
  if (too_large)
    return "too_large";
  switch (code) {
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_COULDNT_CONNECT: return "connect";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY: return "dns";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS: return "tls";
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE: return "reset";
  case CURLE_FILESIZE_EXCEEDED: return "too_large";
  default: return "other";
  }
}

/* Pushes res or nil, err onto the task's stack and wakes it. */
static void req_finish(http_req *r, CURLcode code) {
  lua_State *co = sched_wake_begin(r->task);
  char *url = NULL;
  curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &url);
  char *method = NULL;
  curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_METHOD, &method);
  if (code == CURLE_OK) {
    long status = 0;
    double total = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &total);
    lua_createtable(co, 0, 4);
    lua_pushinteger(co, status);
    lua_setfield(co, -2, "status");
    lua_pushlstring(co, r->body.data ? r->body.data : "", r->body.len);
    lua_setfield(co, -2, "body");
    lua_pushnumber(co, total);
    lua_setfield(co, -2, "total_time");
    lua_newtable(co);
    const char *p = r->resp_headers.data;
    const char *end = p + r->resp_headers.len;
    while (p && p < end) {
      const char *name = p;
      const char *value = name + strlen(name) + 1;
      p = value + strlen(value) + 1;
      lua_getfield(co, -1, name);
      if (lua_isstring(co, -1)) { /* repeated header: join as RFC 9110 allows */
        lua_pushfstring(co, "%s, %s", lua_tostring(co, -1), value);
        lua_setfield(co, -3, name);
        lua_pop(co, 1);
      } else {
        lua_pop(co, 1);
        lua_pushstring(co, value);
        lua_setfield(co, -2, name);
      }
    }
    lua_setfield(co, -2, "headers");
    sched_wake_commit(r->task, 1);
  } else {
    /* the runtime's error contract (luv's): nil, message, code; the code here is the
     * transport kind (connect, timeout, reset, tls, dns, too_large, other) */
    lua_pushnil(co);
    lua_pushstring(co, r->too_large   ? "response larger than max_size"
                       : r->errbuf[0] ? r->errbuf
                                      : curl_easy_strerror(code));
    lua_pushstring(co, error_kind(code, r->too_large));
    sched_wake_commit(r->task, 3);
  }
  req_free(r);
}

static void drain_finished(void) {
  CURLMsg *msg;
  int pending;
  while ((msg = curl_multi_info_read(H.multi, &pending))) {
    if (msg->msg != CURLMSG_DONE)
      continue;
    http_req *r = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    req_finish(r, msg->data.result);
  }
}

static void on_poll(uv_poll_t *poll, int status, int events) {
  socket_ctx *ctx = poll->data;
  int flags = 0;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(H.multi, ctx->fd, flags, &running);
  drain_finished();
}

static void on_timeout(uv_timer_t *timer) {
  (void)timer;
  int running;
  curl_multi_socket_action(H.multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_finished();
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  (void)userp;
  if (timeout_ms < 0)
    uv_timer_stop(&H.timer);
  else { /* 0 means "now": still go through the loop, never call back into curl from here */
    uv_update_time(sched_loop());
    uv_timer_start(&H.timer, on_timeout, (uint64_t)timeout_ms, 0);
  }
  return 0;
}

static void on_socket_closed(uv_handle_t *h) { free(h->data); }

static int on_curl_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp) {
  (void)easy;
  (void)userp;
  socket_ctx *ctx = socketp;
  if (action == CURL_POLL_REMOVE) {
    if (ctx) {
      uv_poll_stop(&ctx->poll);
      uv_close((uv_handle_t *)&ctx->poll, on_socket_closed);
      curl_multi_assign(H.multi, fd, NULL);
    }
    return 0;
  }
  if (!ctx) {
    ctx = calloc(1, sizeof *ctx);
    if (!ctx)
      return -1;
    ctx->fd = fd;
    uv_poll_init_socket(sched_loop(), &ctx->poll, fd);
    ctx->poll.data = ctx;
    curl_multi_assign(H.multi, fd, ctx);
  }
  int events = 0;
  if (action != CURL_POLL_OUT)
    events |= UV_READABLE;
  if (action != CURL_POLL_IN)
    events |= UV_WRITABLE;
  uv_poll_start(&ctx->poll, events, on_poll);
  return 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
  http_req *r = userdata;
  size_t n = size * nmemb;
  if (r->body.len + n > r->max_size) {
    r->too_large = 1;
    return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
  }
  if (buffer_append(&r->body, ptr, n) != 0)
    return 0;
  return n;
}

static size_t on_header(char *ptr, size_t size, size_t nitems, void *userdata) {
  http_req *r = userdata;
  size_t n = size * nitems;
  if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) { /* new response (redirect, 100): restart */
    r->resp_headers.len = 0;
    return n;
  }
  const char *colon = memchr(ptr, ':', n);
  if (!colon)
    return n;
  size_t name_len = (size_t)(colon - ptr);
  const char *value = colon + 1;
  const char *end = ptr + n;
  while (value < end && (*value == ' ' || *value == '\t'))
    value++;
  while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    end--;
  char name[128];
  if (name_len == 0 || name_len >= sizeof name)
    return n;
  for (size_t i = 0; i < name_len; i++) {
    char c = ptr[i];
    name[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  name[name_len] = 0;
  if (buffer_append(&r->resp_headers, name, name_len + 1) != 0 ||
      buffer_append(&r->resp_headers, value, (size_t)(end - value)) != 0 ||
      buffer_append(&r->resp_headers, "", 1) != 0)
    return 0;
  return n;
}

static int ensure_multi(lua_State *L) {
  if (H.multi)
    return 0;
  H.multi = curl_multi_init();
  if (!H.multi)
    return luaL_error(L, "curl_multi_init failed");
  uv_timer_init(sched_loop(), &H.timer);
  curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(H.multi, CURLMOPT_MAXCONNECTS, 512L);
  return 0;
}

static double opt_number(lua_State *L, int t, const char *key, double dflt) {
  lua_getfield(L, t, key);
  double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static int add_headers(lua_State *L, http_req *r) {
  lua_getfield(L, 1, "headers");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_isstring(L, -1)) {
        lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
        struct curl_slist *grown = curl_slist_append(r->headers, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (!grown)
          return -1;
        r->headers = grown;
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  /* Never wait for 100-continue on a large body: one round trip less per write. */
  struct curl_slist *grown = curl_slist_append(r->headers, "Expect:");
  if (!grown)
    return -1;
  r->headers = grown;
  return 0;
}

/* Seconds to libcurl milliseconds, rounded up and at least 1: libcurl reads 0 as "no timeout",
 * so a tiny timeout must not turn into an endless one. */
static long timeout_ms(double seconds) {
  if (!(seconds > 0))
    return 1;
  double ms = ceil(seconds * 1000);
  return ms > 2147483647.0 ? 2147483647L : (long)ms;
}

static int l_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  sched_task *task = sched_check_task(L, "http.request");
  lua_getfield(L, 1, "url");
  const char *url = lua_tostring(L, -1);
  if (!url)
    return luaL_error(L, "http.request: url is required");
  lua_getfield(L, 1, "method");
  const char *method = luaL_optstring(L, -1, "GET");
  ensure_multi(L);

  http_req *r = calloc(1, sizeof *r);
  if (!r)
    return luaL_error(L, "out of memory");
  r->task = task;
  r->max_size = (size_t)opt_number(L, 1, "max_size", DEFAULT_MAX_SIZE);
  r->easy = easy_get();
  if (!r->easy || add_headers(L, r) != 0) {
    req_free(r);
    return luaL_error(L, "http.request: out of memory");
  }
  CURL *e = r->easy;
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, r);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms(opt_number(L, 1, "timeout", 30)));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   timeout_ms(opt_number(L, 1, "connect_timeout", 10)));
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  /* A private CA: a PEM bundle trusted instead of the system's (scim.connect's ca_file). */
  lua_getfield(L, 1, "ca_file");
  if (lua_type(L, -1) == LUA_TSTRING)
    curl_easy_setopt(e, CURLOPT_CAINFO, lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, 1, "insecure");
  if (lua_toboolean(L, -1)) {
    if (!H.warned_insecure) {
      H.warned_insecure = 1;
      log_emit(LOG_WARN, "TLS verification is OFF (insecure = true): use only for testing", "url",
               url, NULL);
    }
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  lua_pop(L, 1);
  size_t body_len = 0;
  lua_getfield(L, 1, "body");
  const char *body = lua_tolstring(L, -1, &body_len);
  if (body) {
    r->req_body = malloc(body_len + 1);
    if (!r->req_body) {
      req_free(r);
      return luaL_error(L, "out of memory");
    }
    memcpy(r->req_body, body, body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->req_body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  lua_pop(L, 1);
  if (strcmp(method, "GET") == 0 && !body)
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  else if (strcmp(method, "HEAD") == 0)
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  else
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  if (!body && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
  }
  lua_pop(L, 2);

  r->next = H.inflight;
  if (H.inflight)
    H.inflight->prev = r;
  H.inflight = r;
  CURLMcode mc = curl_multi_add_handle(H.multi, e);
  if (mc != CURLM_OK) {
    req_free(r);
    return luaL_error(L, "http.request: %s", curl_multi_strerror(mc));
  }
  return sched_wait(L, task);
}

static int l_inflight(lua_State *L) {
  int n = 0;
  for (http_req *r = H.inflight; r; r = r->next)
    n++;
  lua_pushinteger(L, n);
  return 1;
}

void http_client_shutdown(void) {
  if (!H.multi)
    return;
  while (H.inflight)
    req_free(H.inflight);
  while (H.npool > 0)
    curl_easy_cleanup(H.pool[--H.npool]);
  curl_multi_cleanup(H.multi); /* removes sockets: their poll handles close and free */
  H.multi = NULL;
  uv_close((uv_handle_t *)&H.timer, NULL);
}

int luaopen_scimrun_http(lua_State *L) {
  static const luaL_Reg funcs[] = {{"request", l_request}, {"inflight", l_inflight}, {NULL, NULL}};
  curl_global_init(CURL_GLOBAL_DEFAULT);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
