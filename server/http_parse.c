/* HTTP/1.x request parsing with limits, over http-parser. Invariant: while
 * headers arrive, hbuf holds the request target, then (name NUL value NUL)
 * pairs; a name or value is terminated when the next callback of the other
 * kind (or the end of the headers) arrives, since http-parser may split both
 * across reads. */
#include "http_parse.h"

#include <ctype.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

static srv_http_in *IN(http_parser *p)
{
    return p->data;
}

static int fail(srv_http_in *in, int status, const char *msg)
{
    in->state = SRV_IN_ERROR;
    in->err_status = status;
    in->err_msg = msg;
    return -1;
}

static int oom(srv_http_in *in)
{
    return fail(in, 500, "out of memory while reading the request");
}

static int on_message_begin(http_parser *p)
{
    srv_http_in *in = IN(p);
    in->state = SRV_IN_HEADERS;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    srv_http_in *in = IN(p);
    in->target_len += n;
    if (in->target_len > in->lim.max_url)
        return fail(in, 414, "the request target (URL) is too long");
    srv_buf_append(&in->req.hbuf, at, n);
    return srv_buf_ok(&in->req.hbuf) ? 0 : oom(in);
}

/* The target ends where the first header starts: NUL-terminate it once. */
static bool target_open(const srv_http_in *in)
{
    return in->req.n_headers == 0 && in->req.hbuf.n == in->target_len;
}

static int finish_value(srv_http_in *in)
{
    srv_buf_append(&in->req.hbuf, "", 1);
    return srv_buf_ok(&in->req.hbuf) ? 0 : oom(in);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    srv_http_in *in = IN(p);
    srv_http_req *r = &in->req;
    if (target_open(in)) {
        srv_buf_append(&r->hbuf, "", 1);
        if (!srv_buf_ok(&r->hbuf)) return oom(in);
    }
    bool new_header = in->in_value || r->n_headers == 0;
    if (in->in_value && finish_value(in)) return -1;
    in->header_bytes += n;
    if (in->header_bytes > in->lim.max_header_bytes)
        return fail(in, 431, "the request headers are too large");
    if (new_header) {
        if (r->n_headers >= in->lim.max_headers || r->n_headers >= SRV_MAX_HEADERS_HARD)
            return fail(in, 431, "the request has too many headers");
        if (r->n_headers == r->cap_headers) {
            size_t cap = r->cap_headers ? r->cap_headers * 2 : 16;
            srv_http_header *h = vkpt_realloc(r->headers, cap * sizeof *h);
            if (!h) return oom(in);
            r->headers = h;
            r->cap_headers = cap;
        }
        r->headers[r->n_headers].name = r->hbuf.n;
        r->headers[r->n_headers].value = SIZE_MAX;
        r->n_headers++;
    }
    in->in_value = false;
    if (srv_buf_reserve(&r->hbuf, n)) return oom(in);
    for (size_t i = 0; i < n; i++) r->hbuf.p[r->hbuf.n + i] = (char)tolower((unsigned char)at[i]);
    r->hbuf.n += n;
    r->hbuf.p[r->hbuf.n] = 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    srv_http_in *in = IN(p);
    srv_http_req *r = &in->req;
    if (!r->n_headers) return fail(in, 400, "a header value without a name");
    if (!in->in_value) {
        if (finish_value(in)) return -1; /* terminates the name */
        r->headers[r->n_headers - 1].value = r->hbuf.n;
        in->in_value = true;
    }
    in->header_bytes += n;
    if (in->header_bytes > in->lim.max_header_bytes)
        return fail(in, 431, "the request headers are too large");
    srv_buf_append(&r->hbuf, at, n);
    return srv_buf_ok(&r->hbuf) ? 0 : oom(in);
}

static int on_headers_complete(http_parser *p)
{
    srv_http_in *in = IN(p);
    srv_http_req *r = &in->req;
    if (target_open(in)) {
        srv_buf_append(&r->hbuf, "", 1);
        if (!srv_buf_ok(&r->hbuf)) return oom(in);
    }
    if (r->n_headers) {
        srv_http_header *h = &r->headers[r->n_headers - 1];
        if (h->value == SIZE_MAX) {
            /* a name without a value: terminate the name, then an empty value */
            if (finish_value(in)) return -1;
            h->value = r->hbuf.n;
        }
        if (finish_value(in)) return -1;
    }
    in->in_value = false;
    /* split the query off the path */
    char *q = memchr(r->hbuf.p, '?', in->target_len);
    if (q) {
        *q = 0;
        r->path_len = (size_t)(q - r->hbuf.p);
        r->query_off = r->path_len + 1;
    } else {
        r->path_len = in->target_len;
        r->query_off = 0;
    }
    r->method = p->method;
    r->major = p->http_major;
    r->minor = p->http_minor;
    if (p->content_length != ULLONG_MAX && p->content_length > in->lim.max_body)
        return fail(in, 413, "the request body is too large");
    const char *ex = srv_http_header_get(r, "expect");
    if (ex) {
        if (strcasecmp(ex, "100-continue")) return fail(in, 417, "unsupported Expect header");
        r->expect_continue = true;
    }
    in->state = SRV_IN_BODY;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    srv_http_in *in = IN(p);
    if (in->req.body.n + n > in->lim.max_body)
        return fail(in, 413, "the request body is too large");
    srv_buf_append(&in->req.body, at, n);
    return srv_buf_ok(&in->req.body) ? 0 : oom(in);
}

static int on_message_complete(http_parser *p)
{
    srv_http_in *in = IN(p);
    in->req.keep_alive = http_should_keep_alive(p) != 0;
    in->state = SRV_IN_DONE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void srv_http_in_init(srv_http_in *in, const srv_http_limits *lim)
{
    memset(in, 0, sizeof *in);
    in->lim = *lim;
    http_parser_init(&in->p, HTTP_REQUEST);
    in->p.data = in;
}

void srv_http_in_free(srv_http_in *in)
{
    srv_buf_free(&in->req.hbuf);
    srv_buf_free(&in->req.body);
    vkpt_free(in->req.headers);
    memset(&in->req, 0, sizeof in->req);
}

void srv_http_in_reset(srv_http_in *in)
{
    srv_http_req *r = &in->req;
    srv_buf_reset(&r->hbuf);
    srv_buf_reset(&r->body);
    r->n_headers = 0;
    r->path_len = r->query_off = 0;
    r->method = 0;
    r->major = r->minor = 0;
    r->keep_alive = r->expect_continue = false;
    in->state = SRV_IN_IDLE;
    in->err_status = 0;
    in->err_msg = NULL;
    in->target_len = in->header_bytes = 0;
    in->in_value = false;
    http_parser_init(&in->p, HTTP_REQUEST);
    in->p.data = in;
}

size_t srv_http_in_feed(srv_http_in *in, const char *data, size_t n)
{
    if (in->state == SRV_IN_DONE || in->state == SRV_IN_ERROR || n == 0) return 0;
    size_t k = http_parser_execute(&in->p, &settings, data, n);
    if (in->state == SRV_IN_ERROR || in->state == SRV_IN_DONE) return k;
    enum http_errno e = HTTP_PARSER_ERRNO(&in->p);
    if (e != HPE_OK) {
        if (e == HPE_HEADER_OVERFLOW)
            fail(in, 431, "the request headers are too large");
        else
            fail(in, 400, http_errno_description(e));
        return k;
    }
    return k;
}

const char *srv_http_header_get(const srv_http_req *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (r->headers[i].value != SIZE_MAX && !strcmp(r->hbuf.p + r->headers[i].name, name))
            return r->hbuf.p + r->headers[i].value;
    return NULL;
}
