/*
 * http_server_internal.h: what http_server.c (connections, queue, writes) and
 * http_server_parse.c (http-parser callbacks) share. Not for other modules.
 */
#ifndef SCIMRUN_HTTP_SERVER_INTERNAL_H
#define SCIMRUN_HTTP_SERVER_INTERNAL_H

#include <http_parser.h>
#include <uv.h>

#include "http_server.h"

typedef struct {
  char *data;
  size_t len, cap;
} sbuf;

typedef struct http_conn http_conn;

struct http_exchange {
  http_exchange *next;          /* connection queue, request order */
  http_exchange *gprev, *gnext; /* unanswered exchanges of every server */
  http_conn *conn;              /* NULL once the connection is gone */
  int answered, drop, keep_open, head, http10;
  char *out;
  size_t out_len;
};

enum timer_mode { T_NONE, T_IDLE, T_READ, T_LINGER };

struct http_conn {
  http_server *srv; /* first, so tcp is not: sched_shutdown frees handles with data == self */
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown;
  http_parser parser;
  http_conn *prev, *next;
  http_exchange *qhead, *qtail;
  int qlen;
  int open_handles; /* libuv close callbacks still to come */
  int closing, shutting, no_more, peer_eof, paused, reading, in_message, reject;
  enum timer_mode tmode;
  sbuf url, headers, body, stash;
  size_t header_bytes;
  int nheaders, in_value;
  char remote[64];
};

struct http_server {
  http_server_config cfg;
  uv_tcp_t tcp;
  int port, closed, tcp_open;
  int nconns; /* allocated, including closing ones */
  http_server_stats stats;
  http_conn *conns;
  http_server *prev, *next; /* every server not yet freed */
};

int hs_sbuf_add(sbuf *b, const char *p, size_t n);
/* Appends an exchange at the tail of c's queue (and to the unanswered list). */
http_exchange *hs_exchange_new(http_conn *c);
void hs_conn_timer(http_conn *c, enum timer_mode mode, double seconds);
/* Takes ownership of data (malloc'd). */
void hs_conn_write(http_conn *c, char *data, size_t len);
/* Answers `status` after the queued answers, then closes: for requests we will not parse. */
void hs_conn_reject(http_conn *c, int status);
void hs_conn_close(http_conn *c);
/* Feeds bytes to c's parser; pauses (stashing the rest) when too many answers are pending. */
void hs_conn_parse(http_conn *c, const char *data, size_t len);

#endif
