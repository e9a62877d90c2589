/* HTTP/1.1 connections on the server's libuv loop: accept, read and parse
 * (http_parse.h) under the timeouts, dispatch each complete request to the
 * router, write responses (whole or chunked/streamed), keep-alive and
 * pipelining, close.
 *
 * A connection serves one request at a time. While a response is in
 * progress it keeps reading, so a client that goes away is noticed at once
 * (its generation is canceled through srv_gen_detach); bytes of a pipelined
 * next request are buffered (up to a bound) and parsed after the response.
 * Everything here runs on the loop thread. */
#ifndef VKPT_SERVER_HTTP_H
#define VKPT_SERVER_HTTP_H

#include "http_parse.h"

#include <uv.h>

typedef struct vkpt_server vkpt_server;
struct srv_gen;
struct srv_embed;

enum srv_conn_state {
    SRV_CONN_READ = 0, /* reading a request */
    SRV_CONN_BUSY,     /* a request is being answered */
    SRV_CONN_CLOSING,  /* handles closing; nothing more is written */
};

typedef struct srv_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    vkpt_server *srv;
    srv_list link; /* srv->conns */
    srv_http_in in;
    srv_buf pending; /* received, not yet parsed */
    int state;       /* enum srv_conn_state */
    int handles_open;
    bool reading;
    bool processing; /* inside conn_process */
    bool continue_sent;
    bool resp_started, resp_chunked, resp_keep_alive;
    bool close_after_flush; /* close once the queued writes are done */
    bool lingering;         /* FIN sent; dropping input until the client closes */
    size_t writes_pending;
    struct srv_gen *gen;     /* the generation answering the current request */
    struct srv_embed *embed; /* or the embeddings request (embeddings.c) */
    /* or another answer in progress (endpoints.c): told when the connection
     * closes before it answered */
    void (*detach)(void *ud);
    void *detach_ud;
    uint64_t t_first_byte_ns, t_headers_ns, t_req_ns;
    /* for the request log line and metrics */
    int status;
    int route; /* index in the route table, -1 when none matched */
    uint32_t log_prompt_tokens, log_completion_tokens;
    char peer[64];
} srv_conn;

/* Bind and listen on opts.host:port (loop thread not yet running). */
int srv_http_listen(vkpt_server *s);
/* Stop accepting; close connections that have no request in progress. */
void srv_http_stop_accepting(vkpt_server *s);
/* Close every connection (the end of a drain), except those still writing
 * a final answer, which close once it is written. */
void srv_http_close_all(vkpt_server *s);

/* A whole response. `extra_headers` is NULL or "Name: value\r\n" lines.
 * Ends the request: the connection goes on to the next one or closes. */
void srv_conn_respond(srv_conn *c, int status, const char *ctype, const char *extra_headers,
                      const char *body, size_t len);
/* An OpenAI-shaped error: {"error": {"message", "type", "param", "code"}}
 * (param and code may be NULL). Ends the request. */
void srv_conn_error(srv_conn *c, int status, const char *param, const char *code, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));
/* The error object's JSON into `b`. */
void srv_error_json(srv_buf *b, int status, const char *param, const char *code, const char *msg);
/* A streamed response: headers now (chunked transfer encoding, or
 * close-delimited for HTTP/1.0), then srv_conn_stream_send per piece, then
 * srv_conn_stream_end, which ends the request. */
void srv_conn_stream_begin(srv_conn *c, int status, const char *ctype, const char *extra_headers);
void srv_conn_stream_send(srv_conn *c, const char *data, size_t n);
void srv_conn_stream_end(srv_conn *c);
/* Bytes queued on the socket and not yet written (a slow reader's backlog). */
size_t srv_conn_backlog(const srv_conn *c);
/* Close now (its generation, if any, is canceled), logging why. */
void srv_conn_abort(srv_conn *c, const char *why);

#endif
