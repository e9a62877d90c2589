/* Incremental HTTP/1.x request parsing over http-parser, with the server's
 * limits: URL length, header bytes and count, body size. Pure (no sockets),
 * so the fuzzer and unit tests drive it directly.
 *
 * One srv_http_in parses one request at a time: feed bytes until the state
 * is SRV_IN_DONE (a whole request; bytes after it are left unconsumed for the
 * next request, i.e. pipelining) or SRV_IN_ERROR (err_status and err_msg say
 * what to answer; the connection must close). srv_http_in_reset prepares the
 * next request on the same connection. */
#ifndef VKPT_SERVER_HTTP_PARSE_H
#define VKPT_SERVER_HTTP_PARSE_H

#include "util.h"

#include <http_parser.h>

typedef struct srv_http_limits {
    size_t max_url;          /* bytes of the request target (414 past it) */
    size_t max_header_bytes; /* bytes of all header names and values (431) */
    size_t max_headers;      /* header count (431) */
    size_t max_body;         /* body bytes, Content-Length or chunked (413) */
} srv_http_limits;

enum srv_in_state {
    SRV_IN_IDLE = 0, /* nothing of the next request received yet */
    SRV_IN_HEADERS,  /* request line or headers in progress */
    SRV_IN_BODY,     /* headers complete, body in progress */
    SRV_IN_DONE,     /* a whole request is in `req` */
    SRV_IN_ERROR,
};

typedef struct srv_http_header {
    size_t name, value; /* offsets into srv_http_req.hbuf; names are lower-cased */
} srv_http_header;

#define SRV_MAX_HEADERS_HARD 256

typedef struct srv_http_req {
    int method; /* enum http_method */
    unsigned short major, minor;
    bool keep_alive;            /* the client allows another request after this one */
    bool expect_continue;       /* "Expect: 100-continue" */
    size_t path_len, query_off; /* path = hbuf.p[0..path_len); query at query_off (or 0) */
    srv_buf hbuf;               /* target NUL, then per header: name NUL value NUL */
    srv_http_header *headers;
    size_t n_headers, cap_headers;
    srv_buf body;
} srv_http_req;

typedef struct srv_http_in {
    http_parser p;
    srv_http_limits lim;
    srv_http_req req;
    int state;           /* enum srv_in_state */
    int err_status;      /* HTTP status to answer when state == SRV_IN_ERROR */
    const char *err_msg; /* static text */
    size_t target_len;   /* bytes of the request target so far */
    size_t header_bytes;
    bool in_value; /* last header callback was a value */
} srv_http_in;

void srv_http_in_init(srv_http_in *in, const srv_http_limits *lim);
void srv_http_in_free(srv_http_in *in);
/* Forget the finished request; keep buffers for reuse. */
void srv_http_in_reset(srv_http_in *in);
/* Parse up to n bytes; returns how many were consumed (less than n when a
 * request completed or on error). */
size_t srv_http_in_feed(srv_http_in *in, const char *data, size_t n);

/* The request's path (without the query), NUL-terminated. */
static inline const char *srv_http_path(const srv_http_req *r)
{
    return r->hbuf.p ? r->hbuf.p : "";
}
/* The value of header `name` (lower-case), or NULL. */
const char *srv_http_header_get(const srv_http_req *r, const char *name);

#endif
