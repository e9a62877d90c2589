/* HTTP/1.1 connections: accept, read under timeouts, parse, dispatch,
 * respond, keep-alive, close.
 *
 * Invariants: a connection answers one request at a time (state BUSY from
 * dispatch until the last byte of the answer is queued); writes go out in
 * order through uv_try_write or, when the socket is not ready, uv_write with
 * a heap copy; the two handles (tcp, timer) close together and the
 * connection is freed in the last close callback. */
#include "server_int.h"

#include "embeddings.h"
#include "request.h"
#include "router.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Stop reading a busy connection once this much of a next request is
 * buffered; reading resumes when the current answer is done. */
#define PIPELINE_BUFFER_MAX (256 * 1024)
/* How long a closing connection waits for the client's FIN. */
#define LINGER_MS           2000

typedef struct srv_write {
    uv_write_t req;
    srv_conn *c;
    size_t n;
    char data[];
} srv_write;

static void conn_process(srv_conn *c);
static void conn_close(srv_conn *c);
static void conn_arm_timer(srv_conn *c);
static void conn_log(srv_conn *c);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static srv_http_limits conn_limits(const vkpt_server *s)
{
    return (srv_http_limits){.max_url = 8 * 1024,
                             .max_header_bytes = 32 * 1024,
                             .max_headers = 100,
                             .max_body = s->o.max_body_bytes};
}

/* ---- closing -------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    srv_conn *c = h->data;
    if (--c->handles_open > 0) return;
    vkpt_server *s = c->srv;
    srv_list_remove(&c->link);
    s->n_conns--;
    srv_http_in_free(&c->in);
    srv_buf_free(&c->pending);
    vkpt_free(c);
    srv_maybe_finish_drain(s);
}

/* Close both handles now; pending writes are canceled. */
static void conn_close(srv_conn *c)
{
    if (c->handles_open == 0 || c->state == SRV_CONN_CLOSING) return;
    if (c->state == SRV_CONN_BUSY) {
        /* the client left before its answer was complete */
        c->status = 499;
        conn_log(c);
    }
    c->state = SRV_CONN_CLOSING;
    if (c->gen) {
        srv_gen_detach(c->gen);
        c->gen = NULL;
    }
    if (c->embed) {
        srv_embed_detach(c->embed);
        c->embed = NULL;
    }
    if (c->detach) {
        c->detach(c->detach_ud);
        c->detach = NULL;
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

/* The answer is written and the connection ends: send FIN, then read and
 * drop what the client still sends until it closes (or a short timeout).
 * Closing at once with unread input would make the kernel send a reset,
 * which can destroy the answer (a 413 while the client still uploads)
 * before the client reads it. */
static void conn_linger(srv_conn *c)
{
    if (c->lingering || c->state == SRV_CONN_CLOSING) return;
    c->lingering = true;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown)) {
        conn_close(c);
        return;
    }
    if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
    uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
}

/* Close once everything queued is written. */
static void conn_close_after_flush(srv_conn *c)
{
    c->close_after_flush = true;
    uv_timer_stop(&c->timer);
    if (c->writes_pending == 0) conn_linger(c);
}

/* ---- writing -------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    srv_write *w = (srv_write *)req;
    srv_conn *c = w->c;
    vkpt_free(w);
    c->writes_pending--;
    if (c->state == SRV_CONN_CLOSING) return;
    if (status < 0) {
        VKPT_LOGD("server: %s: write failed: %s", c->peer, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->close_after_flush && c->writes_pending == 0) conn_linger(c);
}

static void conn_write(srv_conn *c, const char *data, size_t n)
{
    if (c->state == SRV_CONN_CLOSING || n == 0) return;
    if (c->writes_pending == 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
        int k = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (k == (int)n) return;
        if (k > 0) {
            data += k;
            n -= (size_t)k;
        } else if (k != UV_EAGAIN && k != UV_ENOSYS) {
            conn_close(c);
            return;
        }
    }
    srv_write *w = vkpt_malloc(sizeof *w + n);
    if (!w) {
        VKPT_LOGE("server: out of memory writing to %s; closing it", c->peer);
        conn_close(c);
        return;
    }
    w->c = c;
    w->n = n;
    memcpy(w->data, data, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int err = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (err) {
        vkpt_free(w);
        conn_close(c);
        return;
    }
    c->writes_pending++;
}

void srv_conn_abort(srv_conn *c, const char *why)
{
    if (c->state == SRV_CONN_CLOSING) return;
    VKPT_LOGW("server: %s: closing the connection: %s", c->peer, why);
    conn_close(c);
}

size_t srv_conn_backlog(const srv_conn *c)
{
    if (c->state == SRV_CONN_CLOSING) return 0;
    return uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

static const char *status_text(int status)
{
    switch (status) {
    case 499: return "Client Closed Request";
    default: {
        const char *t = http_status_str((enum http_status)status);
        return t && strcmp(t, "<unknown>") ? t : "Unknown";
    }
    }
}

/* The status line and headers common to every answer. */
static void head(srv_conn *c, srv_buf *b, int status, const char *ctype, const char *extra)
{
    c->status = status;
    c->resp_started = true;
    if (c->srv->state != SRV_RUNNING) c->resp_keep_alive = false;
    srv_buf_printf(b, "HTTP/1.1 %d %s\r\nServer: vkpt/" VKPT_VERSION_STRING "\r\n", status,
                   status_text(status));
    if (ctype) srv_buf_printf(b, "Content-Type: %s\r\n", ctype);
    srv_buf_printf(b, "Connection: %s\r\n", c->resp_keep_alive ? "keep-alive" : "close");
    if (extra) srv_buf_puts(b, extra);
}

/* The request log line and the HTTP metrics, once per request. */
static void conn_log(srv_conn *c)
{
    vkpt_server *s = c->srv;
    const srv_http_req *r = &c->in.req;
    double ms = (double)(vkpt_now_ns() - c->t_req_ns) / 1e6;
    srv_http_metrics_add(&s->http_metrics, c->route, c->status);
    if (s->o.quiet) return;
    const char *method = r->method || c->in.state == SRV_IN_DONE
                             ? http_method_str((enum http_method)r->method)
                             : "-";
    if (c->log_prompt_tokens || c->log_completion_tokens)
        VKPT_LOGI("%s %s %s %d prompt_tokens=%u completion_tokens=%u %.1f ms", c->peer, method,
                  srv_http_path(r), c->status, c->log_prompt_tokens, c->log_completion_tokens, ms);
    else
        VKPT_LOGI("%s %s %s %d %.1f ms", c->peer, method, srv_http_path(r), c->status, ms);
}

/* The answer to the current request is complete (all of it queued). */
static void conn_response_done(srv_conn *c)
{
    vkpt_server *s = c->srv;
    conn_log(c);
    c->gen = NULL;
    c->embed = NULL;
    c->detach = NULL;
    bool keep = c->resp_keep_alive && c->in.state == SRV_IN_DONE && s->state == SRV_RUNNING;
    srv_http_in_reset(&c->in);
    c->resp_started = c->resp_chunked = false;
    c->continue_sent = false;
    c->log_prompt_tokens = c->log_completion_tokens = 0;
    if (!keep) {
        c->state = SRV_CONN_READ;
        conn_close_after_flush(c);
        return;
    }
    c->state = SRV_CONN_READ;
    c->t_first_byte_ns = 0;
    conn_process(c);
}

void srv_conn_respond(srv_conn *c, int status, const char *ctype, const char *extra_headers,
                      const char *body, size_t len)
{
    if (c->state != SRV_CONN_BUSY) return;
    srv_buf b = {0};
    head(c, &b, status, ctype, extra_headers);
    srv_buf_printf(&b, "Content-Length: %zu\r\n\r\n", len);
    srv_buf_append(&b, body, len);
    if (srv_buf_ok(&b))
        conn_write(c, b.p, b.n);
    else
        c->resp_keep_alive = false;
    srv_buf_free(&b);
    if (c->state == SRV_CONN_BUSY) conn_response_done(c);
}

/* OpenAI's error types: client errors are invalid_request_error (401 and
 * 404 included), server errors server_error. */
static const char *error_type(int status)
{
    if (status == 429) return "rate_limit_error";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

void srv_error_json(srv_buf *b, int status, const char *param, const char *code, const char *msg)
{
    srv_buf_puts(b, "{\"error\":{\"message\":");
    srv_buf_json_str(b, msg, strlen(msg));
    srv_buf_puts(b, ",\"type\":");
    srv_buf_json_str(b, error_type(status), strlen(error_type(status)));
    srv_buf_puts(b, ",\"param\":");
    if (param)
        srv_buf_json_str(b, param, strlen(param));
    else
        srv_buf_puts(b, "null");
    srv_buf_puts(b, ",\"code\":");
    if (code)
        srv_buf_json_str(b, code, strlen(code));
    else
        srv_buf_puts(b, "null");
    srv_buf_puts(b, "}}");
}

void srv_conn_error(srv_conn *c, int status, const char *param, const char *code, const char *fmt,
                    ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_buf b = {0};
    srv_error_json(&b, status, param, code, msg);
    const char *extra = NULL;
    if (status == 401) extra = "WWW-Authenticate: Bearer\r\n";
    if (status == 503) extra = "Retry-After: 1\r\n";
    if (!srv_buf_ok(&b)) {
        srv_buf_free(&b);
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"server_error\",\"param\":null,\"code\":null}}";
        srv_conn_respond(c, 500, "application/json", NULL, oom, sizeof oom - 1);
        return;
    }
    srv_conn_respond(c, status, "application/json", extra, b.p, b.n);
    srv_buf_free(&b);
}

void srv_conn_stream_begin(srv_conn *c, int status, const char *ctype, const char *extra)
{
    if (c->state != SRV_CONN_BUSY) return;
    srv_buf b = {0};
    /* HTTP/1.0 has no chunked encoding: the body ends when the connection does. */
    c->resp_chunked = c->in.req.major > 1 || (c->in.req.major == 1 && c->in.req.minor >= 1);
    if (!c->resp_chunked) c->resp_keep_alive = false;
    head(c, &b, status, ctype, extra);
    if (c->resp_chunked) srv_buf_puts(&b, "Transfer-Encoding: chunked\r\n");
    srv_buf_puts(&b, "\r\n");
    if (srv_buf_ok(&b)) conn_write(c, b.p, b.n);
    srv_buf_free(&b);
}

void srv_conn_stream_send(srv_conn *c, const char *data, size_t n)
{
    if (c->state != SRV_CONN_BUSY || !c->resp_started || n == 0) return;
    if (!c->resp_chunked) {
        conn_write(c, data, n);
        return;
    }
    srv_buf b = {0};
    srv_buf_printf(&b, "%zx\r\n", n);
    srv_buf_append(&b, data, n);
    srv_buf_puts(&b, "\r\n");
    if (srv_buf_ok(&b))
        conn_write(c, b.p, b.n);
    else
        conn_close(c);
    srv_buf_free(&b);
}

void srv_conn_stream_end(srv_conn *c)
{
    if (c->state != SRV_CONN_BUSY) return;
    if (c->resp_chunked) conn_write(c, "0\r\n\r\n", 5);
    if (c->state == SRV_CONN_BUSY) conn_response_done(c);
}

/* ---- reading -------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    srv_conn *c = h->data;
    /* One buffer per loop: read callbacks consume it before the next read. */
    *buf = uv_buf_init(c->srv->readbuf, sizeof c->srv->readbuf);
}

static void conn_start_reading(srv_conn *c)
{
    if (c->reading || c->state == SRV_CONN_CLOSING || c->close_after_flush) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
}

static void conn_fail_request(srv_conn *c, int status, const char *msg)
{
    c->state = SRV_CONN_BUSY;
    c->t_req_ns = vkpt_now_ns();
    c->route = -1;
    c->resp_keep_alive = false;
    uv_timer_stop(&c->timer);
    srv_conn_error(c, status, NULL, status == 413 ? "request_too_large" : NULL, "%s", msg);
}

static void conn_dispatch(srv_conn *c)
{
    c->state = SRV_CONN_BUSY;
    c->t_req_ns = vkpt_now_ns();
    c->route = -1;
    c->status = 0;
    c->resp_keep_alive = c->in.req.keep_alive;
    uv_timer_stop(&c->timer);
    srv_dispatch(c);
}

/* Parse what is buffered and act on it, until more input is needed or a
 * request is being answered asynchronously. */
static void conn_process(srv_conn *c)
{
    /* An answer completed inside this loop (a synchronous error, say) must
     * not recurse into it: the loop below goes on with the next request, so
     * many pipelined requests cost no stack. */
    if (c->processing) return;
    c->processing = true;
    while (c->state == SRV_CONN_READ && !c->close_after_flush) {
        int before = c->in.state;
        size_t k = srv_http_in_feed(&c->in, c->pending.p, c->pending.n);
        srv_buf_consume(&c->pending, k);
        if (before == SRV_IN_IDLE && c->in.state != SRV_IN_IDLE) c->t_first_byte_ns = vkpt_now_ns();
        if (before < SRV_IN_BODY && c->in.state >= SRV_IN_BODY) c->t_headers_ns = vkpt_now_ns();
        if (c->in.state == SRV_IN_DONE) {
            conn_dispatch(c);
            continue;
        }
        if (c->in.state == SRV_IN_ERROR) {
            conn_fail_request(c, c->in.err_status, c->in.err_msg);
            return;
        }
        if (c->in.state == SRV_IN_BODY && c->in.req.expect_continue && !c->continue_sent) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            c->continue_sent = true;
            conn_write(c, cont, sizeof cont - 1);
        }
        break;
    }
    c->processing = false;
    if (c->state == SRV_CONN_READ && !c->close_after_flush) {
        conn_start_reading(c);
        conn_arm_timer(c);
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    srv_conn *c = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        /* EOF or reset: the client is gone (a half-close counts too: clients
         * that do it have given up on the answer). */
        conn_close(c);
        return;
    }
    if (c->state == SRV_CONN_CLOSING || c->close_after_flush) return;
    srv_buf_append(&c->pending, buf->base, (size_t)nread);
    if (!srv_buf_ok(&c->pending)) {
        conn_close(c);
        return;
    }
    if (c->state == SRV_CONN_BUSY) {
        if (c->pending.n > PIPELINE_BUFFER_MAX) {
            uv_read_stop(st);
            c->reading = false;
        }
        return;
    }
    conn_process(c);
}

/* ---- timeouts ------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    srv_conn *c = t->data;
    if (c->state != SRV_CONN_READ || c->close_after_flush || c->lingering) return;
    if (c->in.state == SRV_IN_IDLE) {
        conn_close(c); /* an idle keep-alive connection: nothing to answer */
        return;
    }
    const char *what = c->in.state == SRV_IN_BODY ? "the request body" : "the request headers";
    c->state = SRV_CONN_BUSY;
    c->t_req_ns = vkpt_now_ns();
    c->route = -1;
    c->resp_keep_alive = false;
    srv_conn_error(c, 408, NULL, "request_timeout", "%s did not arrive in time", what);
}

static void conn_arm_timer(srv_conn *c)
{
    const vkpt_server *s = c->srv;
    uint64_t now = vkpt_now_ns(), start, limit_ms;
    switch (c->in.state) {
    case SRV_IN_IDLE:
        start = now;
        limit_ms = s->o.idle_timeout_ms;
        break;
    case SRV_IN_HEADERS:
        start = c->t_first_byte_ns;
        limit_ms = s->o.header_timeout_ms;
        break;
    case SRV_IN_BODY:
        start = c->t_headers_ns;
        limit_ms = s->o.body_timeout_ms;
        break;
    default: uv_timer_stop(&c->timer); return;
    }
    uint64_t end_ns = start + limit_ms * 1000000ull;
    uint64_t left_ms = end_ns > now ? (end_ns - now + 999999) / 1000000 : 0;
    uv_timer_start(&c->timer, on_timer, left_ms, 0);
}

/* ---- accepting ------------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status)
{
    vkpt_server *s = listener->data;
    if (status < 0) {
        VKPT_LOGW("server: accept failed: %s", uv_strerror(status));
        return;
    }
    srv_conn *c = vkpt_calloc(1, sizeof *c);
    if (!c) {
        VKPT_LOGE("server: out of memory accepting a connection");
        return;
    }
    c->srv = s;
    srv_list_init(&c->link);
    uv_tcp_init(&s->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(&s->loop, &c->timer);
    c->timer.data = c;
    c->handles_open = 2;
    srv_list_push(&s->conns, &c->link);
    s->n_conns++;
    srv_http_limits lim = conn_limits(s);
    srv_http_in_init(&c->in, &lim);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int len = sizeof sa;
    snprintf(c->peer, sizeof c->peer, "?");
    if (!uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len)) {
        char ip[48] = "?";
        int port = 0;
        if (sa.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
            snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
        } else if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
            snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, port);
        }
    }
    if (s->n_conns > s->o.max_connections) {
        c->state = SRV_CONN_BUSY;
        c->t_req_ns = vkpt_now_ns();
        c->route = -1;
        c->resp_keep_alive = false;
        srv_conn_error(c, 503, NULL, "too_many_connections",
                       "the server has %u connections open, its limit; retry later",
                       s->o.max_connections);
        return;
    }
    /* A new connection must send its first request within the header timeout. */
    c->state = SRV_CONN_READ;
    conn_start_reading(c);
    uv_timer_start(&c->timer, on_timer, s->o.header_timeout_ms, 0);
}

int srv_http_listen(vkpt_server *s)
{
    struct sockaddr_storage sa;
    int err = uv_ip4_addr(s->host, s->o.port, (struct sockaddr_in *)&sa);
    if (err) err = uv_ip6_addr(s->host, s->o.port, (struct sockaddr_in6 *)&sa);
    if (err) return vkpt_fail(VKPT_EINVAL, "--host %s is not an IPv4 or IPv6 address", s->host);
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    s->listening = true;
    err = uv_tcp_bind(&s->listener, (struct sockaddr *)&sa, 0);
    if (!err) err = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (err)
        return vkpt_fail(VKPT_EIO, "cannot listen on %s:%d: %s", s->host, s->o.port,
                         uv_strerror(err));
    int len = sizeof sa;
    if (!uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sa, &len))
        s->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
    return 0;
}

void srv_http_stop_accepting(vkpt_server *s)
{
    if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener)) {
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    srv_list *n = s->conns.next;
    while (n != &s->conns) {
        srv_conn *c = srv_container_of(n, srv_conn, link);
        n = n->next;
        if (c->state == SRV_CONN_READ && c->in.state == SRV_IN_IDLE) conn_close(c);
    }
}

void srv_http_close_all(vkpt_server *s)
{
    srv_list *n = s->conns.next;
    while (n != &s->conns) {
        srv_conn *c = srv_container_of(n, srv_conn, link);
        n = n->next;
        /* a final answer still being written closes itself when done */
        if (!(c->close_after_flush && c->writes_pending)) conn_close(c);
    }
}
