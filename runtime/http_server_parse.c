/*
 * http_server_parse.c: http-parser callbacks that turn bytes into queued exchanges, with the
 * header, body and pipelining limits of http_server.h.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_server_internal.h"

#define MAX_HEADERS 100

static int fail(http_conn *c, int status) {
  c->reject = status;
  return -1;
}

static int count_header_bytes(http_conn *c, size_t len) {
  c->header_bytes += len;
  return c->header_bytes > c->srv->cfg.max_header;
}

static int on_message_begin(http_parser *p) {
  http_conn *c = p->data;
  c->in_message = 1;
  c->url.len = c->headers.len = c->body.len = 0;
  c->header_bytes = 0;
  c->nheaders = c->in_value = 0;
  c->reject = 0;
  hs_conn_timer(c, T_READ, c->srv->cfg.read_timeout);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  if (count_header_bytes(c, len))
    return fail(c, 414);
  return hs_sbuf_add(&c->url, at, len) ? fail(c, 503) : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  if (count_header_bytes(c, len))
    return fail(c, 431);
  if (c->in_value || c->nheaders == 0) { /* a new name: terminate the previous value */
    if (c->nheaders > 0 && hs_sbuf_add(&c->headers, "", 1))
      return fail(c, 503);
    if (++c->nheaders > MAX_HEADERS)
      return fail(c, 431);
    c->in_value = 0;
  }
  size_t start = c->headers.len;
  if (hs_sbuf_add(&c->headers, at, len))
    return fail(c, 503);
  for (size_t i = start; i < c->headers.len; i++)
    if (c->headers.data[i] >= 'A' && c->headers.data[i] <= 'Z')
      c->headers.data[i] = (char)(c->headers.data[i] + 32);
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  if (count_header_bytes(c, len))
    return fail(c, 431);
  if (!c->in_value) { /* terminate the name */
    if (hs_sbuf_add(&c->headers, "", 1))
      return fail(c, 503);
    c->in_value = 1;
  }
  return hs_sbuf_add(&c->headers, at, len) ? fail(c, 503) : 0;
}

static const char *find_header(const http_conn *c, const char *name) {
  const char *q = c->headers.data, *end = q + c->headers.len;
  while (q && q < end) {
    const char *value = q + strlen(q) + 1;
    if (value >= end)
      break;
    if (strcmp(q, name) == 0)
      return value;
    q = value + strlen(value) + 1;
  }
  return NULL;
}

static int on_headers_complete(http_parser *p) {
  http_conn *c = p->data;
  if (c->nheaders > 0 && !c->in_value && hs_sbuf_add(&c->headers, "", 1))
    return fail(c, 503); /* a name whose value never came */
  if (c->nheaders > 0 && hs_sbuf_add(&c->headers, "", 1))
    return fail(c, 503);
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->srv->cfg.max_body)
    return fail(c, 413);
  const char *expect = find_header(c, "expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && !c->qhead) {
    char *cont = strdup("HTTP/1.1 100 Continue\r\n\r\n");
    if (cont)
      hs_conn_write(c, cont, strlen(cont));
  }
  return c->closing ? -1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  http_conn *c = p->data;
  if (c->body.len + len > c->srv->cfg.max_body)
    return fail(c, 413);
  return hs_sbuf_add(&c->body, at, len) ? fail(c, 503) : 0;
}

static int on_message_complete(http_parser *p) {
  http_conn *c = p->data;
  http_server *s = c->srv;
  c->in_message = 0;
  if (c->tmode == T_READ)
    hs_conn_timer(c, T_NONE, 0);
  http_exchange *ex = hs_exchange_new(c);
  if (!ex)
    return fail(c, 503);
  ex->head = p->method == HTTP_HEAD;
  ex->keep_open = http_should_keep_alive(p) && !p->upgrade;
  ex->http10 = p->http_major == 1 && p->http_minor == 0;
  if (!ex->keep_open)
    c->no_more = 1;
  s->stats.requests++;
  http_request req = {http_method_str((enum http_method)p->method),
                      c->url.data ? c->url.data : "",
                      c->headers.data ? c->headers.data : "",
                      c->headers.len,
                      c->body.data ? c->body.data : "",
                      c->body.len,
                      c->remote,
                      p->http_major,
                      p->http_minor};
  s->cfg.on_request(s, ex, &req, s->cfg.userdata);
  if (c->closing)
    return -1;
  if (c->no_more || c->qlen >= HTTP_SERVER_MAX_QUEUE)
    http_parser_pause(p, 1); /* stop here; the rest waits (or is discarded when no_more) */
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void hs_conn_parse(http_conn *c, const char *data, size_t len) {
  size_t done = http_parser_execute(&c->parser, &parser_settings, data, len);
  if (c->closing || c->no_more)
    return;
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (err == HPE_PAUSED) { /* too many answers outstanding: keep the rest for later */
    if (hs_sbuf_add(&c->stash, data + done, len - done)) {
      hs_conn_close(c);
      return;
    }
    c->paused = 1;
    if (c->reading)
      uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    return;
  }
  if (err == HPE_HEADER_OVERFLOW)
    hs_conn_reject(c, 431);
  else if (err != HPE_OK)
    hs_conn_reject(c, c->reject ? c->reject : 400);
  else if (c->parser.upgrade) /* we do not switch protocols: the rest is not HTTP/1.1 */
    hs_conn_reject(c, 400);
}
