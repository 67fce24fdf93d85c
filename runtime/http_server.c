/*
 * http_server.c: HTTP/1.1 over libuv streams, parsed by http-parser (see http_server.h).
 *
 * A connection owns a FIFO of exchanges. The parser appends one per request; answers fill
 * them in any order, and conn_flush() writes from the head only while the head is answered,
 * which is what keeps pipelined responses in request order. Every way a connection ends goes
 * through hs_conn_close(), which orphans unanswered exchanges (their later answer just frees
 * them) and frees the connection from the last libuv close callback.
 */
#include "http_server.h"

#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "http_server_internal.h"
#include "log.h"
#include "scheduler.h"

#define LINGER_MS 2000 /* read and discard after our FIN so the peer sees the answer, not RST */

typedef struct {
  uv_write_t req;
  http_conn *conn;
  char *data;
} write_req;

static http_server *servers;
static http_exchange *unanswered;
static char read_buf[65536]; /* each read is parsed (and copied) before the next one */

static void conn_flush(http_conn *c);
static void conn_shutdown(http_conn *c);

int hs_sbuf_add(sbuf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown)
      return -1;
    b->data = grown;
    b->cap = cap;
  }
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

static uint64_t to_ms(double seconds) {
  double ms = seconds * 1000.0 + 0.5;
  return ms < 1 ? 1 : (uint64_t)ms;
}

/* ---- exchanges ------------------------------------------------------------------ */

static void unanswered_unlink(http_exchange *ex) {
  if (ex->gprev)
    ex->gprev->gnext = ex->gnext;
  else if (unanswered == ex)
    unanswered = ex->gnext;
  if (ex->gnext)
    ex->gnext->gprev = ex->gprev;
  ex->gprev = ex->gnext = NULL;
}

http_exchange *hs_exchange_new(http_conn *c) {
  http_exchange *ex = calloc(1, sizeof *ex);
  if (!ex)
    return NULL;
  ex->conn = c;
  ex->keep_open = 1;
  ex->gnext = unanswered;
  if (unanswered)
    unanswered->gprev = ex;
  unanswered = ex;
  if (c->qtail)
    c->qtail->next = ex;
  else
    c->qhead = ex;
  c->qtail = ex;
  c->qlen++;
  return ex;
}

static const char *reason(int status) {
  const char *r = http_status_str((enum http_status)status);
  return r[0] == '<' ? "Status" : r; /* "<unknown>" for codes http-parser does not name */
}

static char *format_response(const http_exchange *ex, int status, const char *headers, size_t hlen,
                             const char *body, size_t blen, size_t *out_len) {
  int no_body = status < 200 || status == 204 || status == 304;
  char head[96], tail[128];
  int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n", status, reason(status));
  int m = snprintf(tail, sizeof tail, "%s", "");
  if (!no_body)
    m += snprintf(tail + m, sizeof tail - (size_t)m, "Content-Length: %zu\r\n", blen);
  if (!ex->keep_open)
    m += snprintf(tail + m, sizeof tail - (size_t)m, "Connection: close\r\n");
  else if (ex->http10)
    m += snprintf(tail + m, sizeof tail - (size_t)m, "Connection: keep-alive\r\n");
  m += snprintf(tail + m, sizeof tail - (size_t)m, "\r\n");
  if (n < 0 || n >= (int)sizeof head)
    return NULL;
  size_t send_body = (no_body || ex->head) ? 0 : blen;
  size_t total = (size_t)n + hlen + (size_t)m + send_body;
  char *out = malloc(total);
  if (!out)
    return NULL;
  memcpy(out, head, (size_t)n);
  if (hlen)
    memcpy(out + n, headers, hlen);
  memcpy(out + n + hlen, tail, (size_t)m);
  if (send_body)
    memcpy(out + n + hlen + m, body, send_body);
  *out_len = total;
  return out;
}

void http_exchange_respond(http_exchange *ex, int status, const char *headers, size_t headers_len,
                           const char *body, size_t body_len, int keep_open) {
  unanswered_unlink(ex);
  http_conn *c = ex->conn;
  if (!c) {
    free(ex);
    return;
  }
  ex->keep_open = ex->keep_open && keep_open;
  ex->out = format_response(ex, status, headers, headers_len, body, body_len, &ex->out_len);
  ex->drop = ex->out == NULL; /* out of memory: the client sees a closed connection */
  ex->answered = 1;
  conn_flush(c);
}

void http_exchange_drop(http_exchange *ex) {
  unanswered_unlink(ex);
  http_conn *c = ex->conn;
  if (!c) {
    free(ex);
    return;
  }
  ex->drop = 1;
  ex->answered = 1;
  conn_flush(c);
}

/* ---- connections ---------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

void hs_conn_timer(http_conn *c, enum timer_mode mode, double seconds) {
  c->tmode = mode;
  if (mode == T_NONE)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timer, to_ms(seconds), 0);
}

static void conn_discard_queue(http_conn *c) {
  http_exchange *ex = c->qhead;
  while (ex) {
    http_exchange *next = ex->next;
    if (ex->answered) {
      free(ex->out);
      free(ex);
    } else {
      ex->conn = NULL; /* freed when its handler answers */
      ex->next = NULL;
    }
    ex = next;
  }
  c->qhead = c->qtail = NULL;
  c->qlen = 0;
}

static void server_maybe_free(http_server *s) {
  if (s->tcp_open || s->nconns > 0)
    return;
  if (s->prev)
    s->prev->next = s->next;
  else
    servers = s->next;
  if (s->next)
    s->next->prev = s->prev;
  if (s->cfg.on_closed)
    s->cfg.on_closed(s, s->cfg.userdata);
  free(s);
}

static void on_conn_closed(uv_handle_t *h) {
  http_conn *c = h->data;
  if (--c->open_handles > 0)
    return;
  http_server *s = c->srv;
  free(c->url.data);
  free(c->headers.data);
  free(c->body.data);
  free(c->stash.data);
  free(c);
  s->nconns--;
  server_maybe_free(s);
}

void hs_conn_close(http_conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  http_server *s = c->srv;
  s->stats.open--;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  conn_discard_queue(c);
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_timer(uv_timer_t *t) {
  http_conn *c = t->data;
  if (c->tmode == T_READ && !c->no_more)
    hs_conn_reject(c, 408); /* the request started but did not finish in time */
  else
    hs_conn_close(c);
}

static void on_write(uv_write_t *w, int status) {
  write_req *wr = (write_req *)w;
  http_conn *c = wr->conn;
  free(wr->data);
  free(wr);
  if (status < 0 && !c->closing)
    hs_conn_close(c);
}

/* Takes ownership of data. */
void hs_conn_write(http_conn *c, char *data, size_t len) {
  write_req *wr = malloc(sizeof *wr);
  if (!wr) {
    free(data);
    hs_conn_close(c);
    return;
  }
  wr->conn = c;
  wr->data = data;
  uv_buf_t buf = uv_buf_init(data, (unsigned int)len);
  if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
    free(data);
    free(wr);
    hs_conn_close(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  http_conn *c = stream->data;
  (void)buf;
  if (c->closing || n == 0)
    return;
  if (n < 0) {
    c->reading = 0;
    /* A half-close after complete requests still gets its answers; anything else ends. */
    if (n != UV_EOF || c->shutting || c->in_message) {
      hs_conn_close(c);
      return;
    }
    uv_read_stop(stream);
    c->peer_eof = c->no_more = 1;
    if (!c->qhead)
      conn_shutdown(c); /* FIN once pending writes are out, then close */
    return;
  }
  if (c->no_more)
    return; /* after a closing request, a rejection or our FIN: discard */
  hs_conn_parse(c, read_buf, (size_t)n);
}

static void conn_start_reading(http_conn *c) {
  if (!c->reading && !c->peer_eof && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
    c->reading = 1;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  http_conn *c = req->data;
  if (c->closing)
    return;
  if (status < 0 || c->peer_eof)
    hs_conn_close(c);
  else
    hs_conn_timer(c, T_LINGER, LINGER_MS / 1000.0);
}

/* Graceful end: FIN after the queued writes, then read and discard until the peer closes. */
static void conn_shutdown(http_conn *c) {
  if (c->shutting || c->closing)
    return;
  c->shutting = 1;
  c->shutdown.data = c;
  hs_conn_timer(c, T_LINGER, c->srv->cfg.idle_timeout); /* bounds a client that stops reading */
  if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    hs_conn_close(c);
    return;
  }
  conn_start_reading(c);
}

static void conn_resume(http_conn *c) {
  c->paused = 0;
  http_parser_pause(&c->parser, 0);
  sbuf pending = c->stash;
  memset(&c->stash, 0, sizeof c->stash);
  if (pending.len && !c->no_more)
    hs_conn_parse(c, pending.data, pending.len);
  free(pending.data);
  if (c->closing || c->paused)
    return;
  if (c->peer_eof)
    c->no_more = 1;
  else if (!c->no_more)
    conn_start_reading(c);
}

static void conn_flush(http_conn *c) {
  while (!c->closing && c->qhead && c->qhead->answered) {
    http_exchange *ex = c->qhead;
    c->qhead = ex->next;
    if (!c->qhead)
      c->qtail = NULL;
    c->qlen--;
    int drop = ex->drop, keep_open = ex->keep_open;
    if (drop)
      free(ex->out);
    else
      hs_conn_write(c, ex->out, ex->out_len);
    free(ex);
    if (drop || !keep_open) { /* nothing after a closing answer (or a drop) is answered */
      c->no_more = 1;
      conn_discard_queue(c);
    }
  }
  if (!c->closing && c->paused && c->qlen <= HTTP_SERVER_MAX_QUEUE / 2)
    conn_resume(c); /* may queue more requests */
  if (c->closing || c->qhead)
    return;
  if (c->no_more)
    conn_shutdown(c);
  else if (!c->in_message && !c->paused)
    hs_conn_timer(c, T_IDLE, c->srv->cfg.idle_timeout);
}

void hs_conn_reject(http_conn *c, int status) {
  if (c->no_more || c->closing)
    return;
  c->no_more = 1;
  c->in_message = 0;
  http_exchange *ex = hs_exchange_new(c);
  if (!ex) {
    hs_conn_close(c);
    return;
  }
  ex->keep_open = 0;
  char body[64];
  int n = snprintf(body, sizeof body, "%s\n", reason(status));
  http_exchange_respond(ex, status, "Content-Type: text/plain\r\n", 26, body, (size_t)n, 0);
}

/* ---- servers -------------------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status) {
  http_server *s = listener->data;
  if (status < 0 || s->closed) {
    if (status < 0)
      log_emit(LOG_WARN, "http server accept failed", "error", uv_strerror(status), NULL);
    return;
  }
  http_conn *c = calloc(1, sizeof *c);
  if (!c)
    return;
  c->srv = s;
  uv_tcp_init(sched_loop(), &c->tcp);
  uv_timer_init(sched_loop(), &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  s->nconns++;
  s->stats.open++;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    hs_conn_close(c);
    return;
  }
  s->stats.connections++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_tcp_nodelay(&c->tcp, 1);
  struct sockaddr_storage peer;
  int plen = sizeof peer;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) == 0) {
    if (peer.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&peer, c->remote, sizeof c->remote);
    else
      uv_ip4_name((struct sockaddr_in *)&peer, c->remote, sizeof c->remote);
  }
  conn_start_reading(c);
  hs_conn_timer(c, T_IDLE, s->cfg.idle_timeout);
}

static void on_listener_closed(uv_handle_t *h) {
  http_server *s = h->data;
  s->tcp_open = 0;
  server_maybe_free(s);
}

int http_server_start(const http_server_config *cfg, http_server **out) {
  struct sockaddr_storage addr;
  int rc = strchr(cfg->host, ':') ? uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr)
                                  : uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    return rc;
  http_server *s = calloc(1, sizeof *s);
  if (!s)
    return UV_ENOMEM;
  s->cfg = *cfg;
  s->cfg.host = NULL; /* not owned */
  uv_tcp_init(sched_loop(), &s->tcp);
  s->tcp.data = s;
  s->tcp_open = 1;
  s->next = servers;
  if (servers)
    servers->prev = s;
  servers = s;
  rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&addr, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&s->tcp, 511, on_connection);
  if (rc != 0) {
    s->cfg.on_closed = NULL;
    s->closed = 1;
    uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
    return rc;
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &blen);
  s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  *out = s;
  return 0;
}

int http_server_port(const http_server *s) { return s->port; }
http_server_stats http_server_get_stats(const http_server *s) { return s->stats; }

void http_server_close(http_server *s) {
  if (s->closed)
    return;
  s->closed = 1;
  uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
  while (s->conns)
    hs_conn_close(s->conns);
}

void http_server_shutdown_all(void) {
  for (http_server *s = servers; s; s = s->next)
    http_server_close(s);
  while (unanswered) {
    http_exchange *ex = unanswered;
    unanswered_unlink(ex);
    free(ex);
  }
}
