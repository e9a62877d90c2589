/* vkpt loadgen: size an OpenAI-compatible endpoint. For each concurrency
 * level it keeps that many streaming requests in flight for a duration and
 * reports throughput (output and total tokens/s, requests/s), time to first
 * token and time per output token (p50/p90/p99), as a table or JSON.
 *
 * Requests ask for exactly --output-tokens tokens ("ignore_eos": true, a
 * vLLM/vkpt extension; servers without it may stop early, which the report
 * shows in the measured output length). Prompts are calibrated against the
 * server's own usage.prompt_tokens to --input-tokens, and each request gets
 * a distinct first line (a per-run number and a sequence number) so prefix
 * caching does not flatter the numbers.
 *
 * One libuv loop, one keep-alive connection per concurrent stream,
 * http-parser for responses, SSE parsed incrementally. */
#define _GNU_SOURCE
#include "cmd.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <http_parser.h>
#include <math.h>
#include <stdarg.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <uv.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vkpt loadgen --url URL [options]\n\n"
            "Sends streaming chat (or completions) requests at fixed concurrency and reports\n"
            "throughput, time to first token (TTFT) and time per output token (TPOT).\n\n"
            "  --url URL              the server, e.g. http://127.0.0.1:8080 (a /v1 suffix is ok)\n"
            "  --concurrency LIST     comma-separated levels (default 1,8,32,64)\n"
            "  --input-tokens N       prompt length in tokens (default 128)\n"
            "  --output-tokens M      tokens to generate per request (default 128)\n"
            "  --duration S           seconds per level (default 30)\n"
            "  --api chat|completions the API to drive (default chat)\n"
            "  --model NAME           model id (default: the first of GET /v1/models)\n"
            "  --api-key KEY          sent as Authorization: Bearer KEY\n"
            "  --temperature T        sampling temperature (default 1)\n"
            "  --json                 print JSON instead of a table\n");
}

/* ---- a tiny HTTP/1.1 client on libuv --------------------------------------------- */

typedef struct lg lg;

typedef struct lg_buf {
    char *p;
    size_t n, cap;
} lg_buf;

static void buf_add(lg_buf *b, const char *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            fprintf(stderr, "vkpt loadgen: out of memory\n");
            exit(1);
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
}

typedef struct lg_result {
    bool ok;
    int status;
    double ttft_s, tpot_s, e2e_s;
    uint32_t prompt_tokens, completion_tokens, cached_tokens, chunks;
    char err[160];
} lg_result;

/* One connection carrying one request at a time. */
typedef struct lg_conn {
    lg *g;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t retry;
    http_parser p;
    bool open, connected, busy, closing, keep_alive;
    bool reopen; /* a request waits for the old socket to finish closing */
    lg_buf req;  /* the request being sent */
    lg_buf body; /* response body (non-streaming) or SSE remainder */
    bool stream;
    uint64_t t_send, t_first, t_last;
    lg_result r;
    void (*done)(struct lg_conn *c); /* called once per request */
} lg_conn;

struct lg {
    uv_loop_t loop;
    struct sockaddr_storage addr;
    char host[256];
    int port;
    char prefix[64]; /* "" or "/v1" already in the URL */
    const char *api_key;
    const char *model;
    bool chat;
    double temperature;
    /* run state */
    uint64_t deadline_ns;
    uint64_t seq;
    lg_conn *conns;
    uint32_t n_conns, in_flight;
    lg_result *results;
    size_t n_results, cap_results;
    char *prompt_body; /* filler text; each request prepends its number */
    uint32_t output_tokens;
    uint64_t last_done_ns;
    uint32_t nonce; /* per run, so a server's prefix cache from an earlier run cannot help */
};

static void conn_send(lg_conn *c);
static void conn_open(lg_conn *c);

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void finish(lg_conn *c, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void finish(lg_conn *c, bool ok, const char *fmt, ...)
{
    if (!c->busy) return;
    c->busy = false;
    c->r.ok = ok;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->r.err, sizeof c->r.err, fmt, ap);
        va_end(ap);
    }
    uint64_t end = c->t_last ? c->t_last : now_ns();
    c->r.e2e_s = (double)(end - c->t_send) / 1e9;
    if (c->t_first) c->r.ttft_s = (double)(c->t_first - c->t_send) / 1e9;
    if (c->r.completion_tokens > 1 && c->t_first)
        c->r.tpot_s = (double)(c->t_last - c->t_first) / 1e9 / (c->r.completion_tokens - 1);
    c->done(c);
}

static void on_closed(uv_handle_t *h)
{
    lg_conn *c = h->data;
    c->open = c->connected = c->closing = false;
    if (c->reopen) {
        c->reopen = false;
        conn_open(c);
    }
}

static void conn_close(lg_conn *c)
{
    if (c->open && !c->closing) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
}

/* One SSE event's data. */
static void sse_data(lg_conn *c, const char *d, size_t n)
{
    if (n == 6 && !memcmp(d, "[DONE]", 6)) return;
    cJSON *j = cJSON_ParseWithLength(d, n);
    if (!j) return;
    cJSON *err = cJSON_GetObjectItem(j, "error");
    if (err) {
        cJSON *m = cJSON_GetObjectItem(err, "message");
        snprintf(c->r.err, sizeof c->r.err, "%s",
                 cJSON_IsString(m) ? m->valuestring : "error event in the stream");
        c->r.status = -1;
    }
    cJSON *choices = cJSON_GetObjectItem(j, "choices");
    cJSON *ch0 = cJSON_IsArray(choices) ? choices->child : NULL;
    if (ch0) {
        cJSON *text = cJSON_GetObjectItem(ch0, "text");
        if (!text) text = cJSON_GetObjectItem(cJSON_GetObjectItem(ch0, "delta"), "content");
        if (cJSON_IsString(text) && text->valuestring[0]) {
            uint64_t t = now_ns();
            if (!c->t_first) c->t_first = t;
            c->t_last = t;
            c->r.chunks++;
        }
    }
    cJSON *u = cJSON_GetObjectItem(j, "usage");
    if (cJSON_IsObject(u)) {
        cJSON *pt = cJSON_GetObjectItem(u, "prompt_tokens");
        cJSON *ct = cJSON_GetObjectItem(u, "completion_tokens");
        cJSON *cached =
            cJSON_GetObjectItem(cJSON_GetObjectItem(u, "prompt_tokens_details"), "cached_tokens");
        if (cJSON_IsNumber(pt)) c->r.prompt_tokens = (uint32_t)pt->valuedouble;
        if (cJSON_IsNumber(ct)) c->r.completion_tokens = (uint32_t)ct->valuedouble;
        if (cJSON_IsNumber(cached)) c->r.cached_tokens = (uint32_t)cached->valuedouble;
    }
    cJSON_Delete(j);
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    lg_conn *c = p->data;
    buf_add(&c->body, at, n);
    if (!c->stream || c->r.status != 200) return 0;
    /* events end with a blank line */
    size_t start = 0;
    for (;;) {
        char *e = c->body.n > start ? strstr(c->body.p + start, "\n\n") : NULL;
        if (!e) break;
        size_t end = (size_t)(e - c->body.p);
        for (size_t ls = start; ls < end;) {
            char *nl = memchr(c->body.p + ls, '\n', end - ls);
            size_t le = nl ? (size_t)(nl - c->body.p) : end;
            if (le - ls >= 5 && !memcmp(c->body.p + ls, "data:", 5)) {
                size_t ds = ls + 5;
                if (ds < le && c->body.p[ds] == ' ') ds++;
                sse_data(c, c->body.p + ds, le - ds);
            }
            ls = le + 1;
        }
        start = end + 2;
    }
    memmove(c->body.p, c->body.p + start, c->body.n - start);
    c->body.n -= start;
    c->body.p[c->body.n] = 0;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    lg_conn *c = p->data;
    c->r.status = p->status_code;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    lg_conn *c = p->data;
    c->keep_alive = http_should_keep_alive(p);
    if (c->r.status == -1) {
        finish(c, false, "%s", c->r.err);
    } else if (c->r.status != 200) {
        cJSON *j = cJSON_ParseWithLength(c->body.p ? c->body.p : "", c->body.n);
        cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message");
        finish(c, false, "HTTP %d: %s", c->r.status,
               cJSON_IsString(m) ? m->valuestring : "(no error message)");
        cJSON_Delete(j);
    } else if (!c->stream) {
        /* calibration/probe: a non-streaming answer */
        cJSON *j = cJSON_ParseWithLength(c->body.p ? c->body.p : "", c->body.n);
        cJSON *u = cJSON_GetObjectItem(j, "usage");
        cJSON *pt = cJSON_GetObjectItem(u, "prompt_tokens");
        cJSON *ct = cJSON_GetObjectItem(u, "completion_tokens");
        if (cJSON_IsNumber(pt)) c->r.prompt_tokens = (uint32_t)pt->valuedouble;
        if (cJSON_IsNumber(ct)) c->r.completion_tokens = (uint32_t)ct->valuedouble;
        c->t_last = now_ns();
        finish(c, j != NULL, j ? NULL : "the answer is not JSON");
        cJSON_Delete(j);
    } else {
        finish(c, c->r.completion_tokens > 0, c->r.completion_tokens ? NULL : "no usage in stream");
    }
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static char readbuf[65536];

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    *b = uv_buf_init(readbuf, sizeof readbuf);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    lg_conn *c = st->data;
    if (n == 0) return;
    if (n < 0) {
        conn_close(c);
        finish(c, false, "connection closed: %s", uv_strerror((int)n));
        return;
    }
    if (!c->busy) return;
    size_t k = http_parser_execute(&c->p, &parser_settings, b->base, (size_t)n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
    if (e != HPE_OK && e != HPE_PAUSED) {
        conn_close(c);
        finish(c, false, "bad HTTP response: %s", http_errno_description(e));
        return;
    }
    (void)k;
    if (!c->busy && !c->keep_alive) conn_close(c);
}

static void on_written(uv_write_t *w, int status)
{
    lg_conn *c = w->data;
    if (status < 0) {
        conn_close(c);
        finish(c, false, "write failed: %s", uv_strerror(status));
    }
}

static void conn_send(lg_conn *c)
{
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = c;
    c->body.n = 0;
    c->t_send = now_ns();
    uv_buf_t b = uv_buf_init(c->req.p, (unsigned)c->req.n);
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
        conn_close(c);
        finish(c, false, "write failed");
    }
}

static void on_connect(uv_connect_t *r, int status)
{
    lg_conn *c = r->data;
    if (status < 0) {
        conn_close(c);
        finish(c, false, "cannot connect to %s:%d: %s", c->g->host, c->g->port,
               uv_strerror(status));
        return;
    }
    c->connected = true;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    conn_send(c);
}

static void conn_open(lg_conn *c)
{
    uv_tcp_init(&c->g->loop, &c->tcp);
    c->tcp.data = c;
    c->open = true;
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect.data = c;
    c->t_send = now_ns();
    int err = uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&c->g->addr, on_connect);
    if (err) {
        conn_close(c);
        finish(c, false, "cannot connect: %s", uv_strerror(err));
    }
}

/* Send c->req on the connection (opening it when needed). */
static void conn_request(lg_conn *c)
{
    memset(&c->r, 0, sizeof c->r);
    c->t_first = c->t_last = 0;
    c->busy = true;
    c->keep_alive = true;
    if (c->connected && c->open && !c->closing)
        conn_send(c);
    else if (c->closing)
        c->reopen = true;
    else
        conn_open(c);
}

static void build_request(lg_conn *c, const char *method, const char *path, const char *json)
{
    lg *g = c->g;
    c->req.n = 0;
    char head[1024];
    int k =
        snprintf(head, sizeof head,
                 "%s %s%s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: vkpt-loadgen/" VKPT_VERSION_STRING
                 "\r\nAccept: */*\r\n",
                 method, g->prefix, path, g->host, g->port);
    buf_add(&c->req, head, (size_t)k);
    if (g->api_key) {
        buf_add(&c->req, "Authorization: Bearer ", 22);
        buf_add(&c->req, g->api_key, strlen(g->api_key));
        buf_add(&c->req, "\r\n", 2);
    }
    if (json) {
        k = snprintf(head, sizeof head,
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", strlen(json));
        buf_add(&c->req, head, (size_t)k);
        buf_add(&c->req, json, strlen(json));
    } else {
        buf_add(&c->req, "\r\n", 2);
    }
}

/* The JSON of a generation request: `words` filler words after a distinct
 * first line. */
static char *gen_json(lg *g, uint64_t seq, bool stream, uint32_t max_tokens)
{
    cJSON *o = cJSON_CreateObject();
    if (g->model) cJSON_AddStringToObject(o, "model", g->model);
    char line[48];
    snprintf(line, sizeof line, "Request %06u-%06llu.\n", g->nonce,
             (unsigned long long)(seq % 1000000));
    size_t n = strlen(line) + strlen(g->prompt_body) + 1;
    char *text = malloc(n);
    snprintf(text, n, "%s%s", line, g->prompt_body);
    if (g->chat) {
        cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", text);
        cJSON_AddItemToArray(msgs, m);
    } else {
        cJSON_AddStringToObject(o, "prompt", text);
    }
    free(text);
    cJSON_AddNumberToObject(o, "max_tokens", max_tokens);
    cJSON_AddNumberToObject(o, "temperature", g->temperature);
    cJSON_AddNumberToObject(o, "seed", (double)(seq & 0xFFFFFFFF));
    cJSON_AddBoolToObject(o, "ignore_eos", true);
    if (stream) {
        cJSON_AddBoolToObject(o, "stream", true);
        cJSON *so = cJSON_AddObjectToObject(o, "stream_options");
        cJSON_AddBoolToObject(so, "include_usage", true);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* ---- one request, synchronously (setup and calibration) ----------------------------- */

static void sync_done(lg_conn *c)
{
    uv_stop(&c->g->loop);
}

static lg_result run_one(lg *g, const char *method, const char *path, const char *json, bool stream,
                         lg_buf *body_out)
{
    lg_conn c;
    memset(&c, 0, sizeof c);
    c.g = g;
    c.stream = stream;
    c.done = sync_done;
    uv_timer_init(&g->loop, &c.retry);
    c.retry.data = &c;
    build_request(&c, method, path, json);
    conn_request(&c);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    lg_result r = c.r;
    if (body_out) {
        body_out->n = 0;
        if (c.body.n) buf_add(body_out, c.body.p, c.body.n);
    }
    conn_close(&c);
    uv_close((uv_handle_t *)&c.retry, NULL);
    uv_run(&g->loop, UV_RUN_DEFAULT);
    free(c.req.p);
    free(c.body.p);
    return r;
}

/* ---- a concurrency level ------------------------------------------------------------------ */

static void conn_start_request(lg_conn *c)
{
    lg *g = c->g;
    if (now_ns() >= g->deadline_ns) {
        conn_close(c);
        return;
    }
    char *json = gen_json(g, ++g->seq, true, g->output_tokens);
    build_request(c, "POST", g->chat ? "/chat/completions" : "/completions", json);
    free(json);
    g->in_flight++;
    conn_request(c);
}

static void on_retry(uv_timer_t *t)
{
    conn_start_request(t->data);
}

static void level_done(lg_conn *c)
{
    lg *g = c->g;
    g->in_flight--;
    g->last_done_ns = now_ns();
    if (g->n_results == g->cap_results) {
        g->cap_results = g->cap_results ? g->cap_results * 2 : 256;
        g->results = realloc(g->results, g->cap_results * sizeof *g->results);
        if (!g->results) {
            fprintf(stderr, "vkpt loadgen: out of memory\n");
            exit(1);
        }
    }
    g->results[g->n_results++] = c->r;
    if (!c->r.ok) {
        /* back off a little so a failing server is not hammered */
        conn_close(c);
        uv_timer_start(&c->retry, on_retry, 100, 0);
        return;
    }
    if (!c->keep_alive) conn_close(c);
    /* start the next request from the loop, not from inside the parser */
    uv_timer_start(&c->retry, on_retry, 0, 0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (!n) return NAN;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    if (k < 1) k = 1;
    return v[k - 1];
}

typedef struct lg_level {
    uint32_t concurrency;
    size_t requests, errors;
    double wall_s, req_s, out_tok_s, total_tok_s;
    double mean_in, mean_out, mean_cached;
    double ttft[3], tpot[3]; /* p50 p90 p99, seconds */
    char first_error[160];
} lg_level;

static void run_level(lg *g, uint32_t conc, double duration_s, lg_level *out)
{
    memset(out, 0, sizeof *out);
    out->concurrency = conc;
    g->n_results = 0;
    g->in_flight = 0;
    g->conns = calloc(conc, sizeof *g->conns);
    uint64_t t0 = now_ns();
    g->deadline_ns = t0 + (uint64_t)(duration_s * 1e9);
    g->last_done_ns = t0;
    for (uint32_t i = 0; i < conc; i++) {
        lg_conn *c = &g->conns[i];
        c->g = g;
        c->stream = true;
        c->done = level_done;
        uv_timer_init(&g->loop, &c->retry);
        c->retry.data = c;
        conn_start_request(c);
    }
    uv_run(&g->loop, UV_RUN_DEFAULT); /* ends when every connection is closed */
    for (uint32_t i = 0; i < conc; i++) {
        uv_close((uv_handle_t *)&g->conns[i].retry, NULL);
        conn_close(&g->conns[i]);
    }
    uv_run(&g->loop, UV_RUN_DEFAULT);
    double wall = (double)(g->last_done_ns - t0) / 1e9;
    double *ttft = malloc((g->n_results + 1) * sizeof(double));
    double *tpot = malloc((g->n_results + 1) * sizeof(double));
    size_t n_ok = 0, n_tpot = 0;
    uint64_t in = 0, outt = 0, cached = 0;
    for (size_t i = 0; i < g->n_results; i++) {
        lg_result *r = &g->results[i];
        if (!r->ok) {
            if (!out->errors++) snprintf(out->first_error, sizeof out->first_error, "%s", r->err);
            continue;
        }
        ttft[n_ok++] = r->ttft_s;
        if (r->completion_tokens > 1) tpot[n_tpot++] = r->tpot_s;
        in += r->prompt_tokens;
        outt += r->completion_tokens;
        cached += r->cached_tokens;
    }
    qsort(ttft, n_ok, sizeof *ttft, cmp_double);
    qsort(tpot, n_tpot, sizeof *tpot, cmp_double);
    static const double ps[3] = {50, 90, 99};
    for (int k = 0; k < 3; k++) {
        out->ttft[k] = pct(ttft, n_ok, ps[k]);
        out->tpot[k] = pct(tpot, n_tpot, ps[k]);
    }
    out->requests = n_ok;
    out->wall_s = wall;
    out->req_s = wall > 0 ? n_ok / wall : 0;
    out->out_tok_s = wall > 0 ? outt / wall : 0;
    out->total_tok_s = wall > 0 ? (in + outt) / wall : 0;
    out->mean_in = n_ok ? (double)in / n_ok : 0;
    out->mean_out = n_ok ? (double)outt / n_ok : 0;
    out->mean_cached = n_ok ? (double)cached / n_ok : 0;
    for (uint32_t i = 0; i < conc; i++) {
        free(g->conns[i].req.p);
        free(g->conns[i].body.p);
    }
    free(g->conns);
    g->conns = NULL;
    free(ttft);
    free(tpot);
}

/* ---- setup ---------------------------------------------------------------------------------- */

static int parse_url(lg *g, const char *url)
{
    const char *p = url;
    if (!strncmp(p, "http://", 7))
        p += 7;
    else if (strstr(p, "://"))
        return vkpt_fail(VKPT_EINVAL, "--url: only http:// URLs are supported");
    const char *hs = p, *he;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(p, ']');
        if (!he) return vkpt_fail(VKPT_EINVAL, "--url: unclosed '[' in %s", url);
        p = he + 1;
    } else {
        he = p + strcspn(p, ":/");
        p = he;
    }
    if ((size_t)(he - hs) >= sizeof g->host || he == hs)
        return vkpt_fail(VKPT_EINVAL, "--url: no host in %s", url);
    memcpy(g->host, hs, (size_t)(he - hs));
    g->host[he - hs] = 0;
    g->port = 80;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (port < 1 || port > 65535) return vkpt_fail(VKPT_EINVAL, "--url: bad port in %s", url);
        g->port = (int)port;
        p = end;
    }
    /* keep a path prefix such as /v1; our paths are relative to /v1 */
    size_t n = strlen(p);
    while (n && p[n - 1] == '/') n--;
    if (n >= sizeof g->prefix) return vkpt_fail(VKPT_EINVAL, "--url: path too long");
    memcpy(g->prefix, p, n);
    g->prefix[n] = 0;
    if (!strstr(g->prefix, "/v1")) {
        if (strlen(g->prefix) + 3 >= sizeof g->prefix)
            return vkpt_fail(VKPT_EINVAL, "--url: path too long");
        strcat(g->prefix, "/v1");
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", g->port);
    int e = getaddrinfo(g->host, port, &hints, &res);
    if (e || !res) return vkpt_fail(VKPT_EIO, "cannot resolve %s: %s", g->host, gai_strerror(e));
    memcpy(&g->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static const char *const filler_words[] = {
    "the",    "little", "dog", "ran",  "to",    "the",  "park", "and",   "saw",
    "a",      "big",    "red", "ball", "under", "a",    "tree", "with",  "green",
    "leaves", "while",  "the", "sun",  "was",   "warm", "and",  "happy", "birds",
    "sang",   "in",     "the", "sky",  "above", "them", "all",  "day",   "long",
};

static void make_filler(lg *g, uint32_t words)
{
    lg_buf b = {0};
    size_t nw = sizeof filler_words / sizeof filler_words[0];
    for (uint32_t i = 0; i < words; i++) {
        if (i) buf_add(&b, " ", 1);
        const char *w = filler_words[i % nw];
        buf_add(&b, w, strlen(w));
    }
    if (!b.p) buf_add(&b, "", 0);
    free(g->prompt_body);
    g->prompt_body = b.p;
}

/* Choose the filler length whose prompt is `target` tokens (as the server
 * counts them, template included): measure, scale, refine. */
static int calibrate(lg *g, uint32_t target, uint32_t *got)
{
    uint32_t words = target, best_w = 0, best_t = 0;
    int best_d = INT32_MAX;
    for (int it = 0; it < 8; it++) {
        make_filler(g, words);
        char *json = gen_json(g, 0, false, 1);
        lg_result r =
            run_one(g, "POST", g->chat ? "/chat/completions" : "/completions", json, false, NULL);
        free(json);
        if (!r.ok) return vkpt_fail(VKPT_EIO, "calibration request failed: %s", r.err);
        int d = (int)r.prompt_tokens - (int)target;
        if (abs(d) < abs(best_d) || (abs(d) == abs(best_d) && d < 0)) {
            best_d = d;
            best_w = words;
            best_t = r.prompt_tokens;
        }
        if (d == 0 || r.prompt_tokens == 0) break;
        double per_word = words ? (double)r.prompt_tokens / words : 1.0;
        long next = (long)words - lround(d / (per_word > 0.5 ? per_word : 1.0));
        if (next == (long)words) next += d > 0 ? -1 : 1;
        if (next < 0) break; /* the template alone is longer than the target */
        words = (uint32_t)next;
    }
    make_filler(g, best_w);
    *got = best_t;
    return 0;
}

static int first_model(lg *g, char **out)
{
    lg_buf body = {0};
    lg_result r = run_one(g, "GET", "/models", NULL, false, &body);
    int err = 0;
    cJSON *j = r.ok ? cJSON_ParseWithLength(body.p ? body.p : "", body.n) : NULL;
    cJSON *id = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "id");
    if (!r.ok)
        err = vkpt_fail(VKPT_EIO, "GET %s/models failed: %s", g->prefix, r.err);
    else if (!cJSON_IsString(id))
        err = vkpt_fail(VKPT_EFORMAT, "GET %s/models lists no model", g->prefix);
    else
        *out = strdup(id->valuestring);
    cJSON_Delete(j);
    free(body.p);
    return err;
}

static int parse_levels(const char *s, uint32_t *lv, size_t *n, size_t cap)
{
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096 || *n == cap)
            return vkpt_fail(
                VKPT_EINVAL,
                "--concurrency takes a list like 1,8,32,64 (each 1..4096, at most %zu)", cap);
        lv[(*n)++] = (uint32_t)v;
        s = end;
        if (*s == ',') s++;
    }
    return *n ? 0 : vkpt_fail(VKPT_EINVAL, "--concurrency is empty");
}

static void print_ms(double s)
{
    if (isnan(s))
        printf(" %8s", "-");
    else
        printf(" %8.1f", s * 1e3);
}

int cmd_loadgen(int argc, char **argv)
{
    enum { O_URL = 256, O_CONC, O_IN, O_OUT, O_DUR, O_API, O_MODEL, O_KEY, O_TEMP, O_JSON };
    static const struct option opts[] = {{"url", required_argument, 0, O_URL},
                                         {"concurrency", required_argument, 0, O_CONC},
                                         {"input-tokens", required_argument, 0, O_IN},
                                         {"output-tokens", required_argument, 0, O_OUT},
                                         {"duration", required_argument, 0, O_DUR},
                                         {"api", required_argument, 0, O_API},
                                         {"model", required_argument, 0, O_MODEL},
                                         {"api-key", required_argument, 0, O_KEY},
                                         {"temperature", required_argument, 0, O_TEMP},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *url = NULL, *conc_s = "1,8,32,64", *api = "chat", *model = NULL, *key = NULL;
    long in_tokens = 128, out_tokens = 128;
    double duration = 30, temperature = 1.0;
    bool json = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case O_URL: url = optarg; break;
        case O_CONC: conc_s = optarg; break;
        case O_IN: in_tokens = strtol(optarg, NULL, 10); break;
        case O_OUT: out_tokens = strtol(optarg, NULL, 10); break;
        case O_DUR: duration = strtod(optarg, NULL); break;
        case O_API: api = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_KEY: key = optarg; break;
        case O_TEMP: temperature = strtod(optarg, NULL); break;
        case O_JSON: json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!url || optind < argc) {
        fprintf(stderr, "vkpt loadgen: --url is required\n");
        usage(stderr);
        return 2;
    }
    if (in_tokens < 1 || in_tokens > 1 << 20 || out_tokens < 1 || out_tokens > 1 << 20 ||
        !(duration > 0) || temperature < 0 || (strcmp(api, "chat") && strcmp(api, "completions"))) {
        fprintf(stderr, "vkpt loadgen: --input-tokens and --output-tokens must be >= 1, --duration "
                        "> 0, --temperature >= 0, --api chat or completions\n");
        return 2;
    }
    uint32_t levels[32];
    size_t n_levels;
    lg g;
    memset(&g, 0, sizeof g);
    int err = parse_levels(conc_s, levels, &n_levels, 32);
    if (!err) err = parse_url(&g, url);
    if (err) {
        fprintf(stderr, "vkpt loadgen: %s\n", vkpt_errmsg(err));
        return 2;
    }
    g.api_key = key;
    g.nonce = (uint32_t)((uv_hrtime() / 1000) ^ (uint64_t)getpid() * 7919u) % 1000000;
    g.chat = !strcmp(api, "chat");
    g.temperature = temperature;
    g.output_tokens = (uint32_t)out_tokens;
    uv_loop_init(&g.loop);
    char *model_owned = NULL;
    uint32_t prompt_tokens = 0;
    if (!model && !(err = first_model(&g, &model_owned))) model = model_owned;
    g.model = model;
    if (!err) err = calibrate(&g, (uint32_t)in_tokens, &prompt_tokens);
    if (err) {
        fprintf(stderr, "vkpt loadgen: %s\n", vkpt_errmsg(err));
        uv_loop_close(&g.loop);
        free(model_owned);
        free(g.prompt_body);
        return 1;
    }
    if (!json)
        fprintf(stderr,
                "vkpt loadgen: %s:%d%s model \"%s\", %s API, prompts of %u tokens (asked %ld), "
                "%ld output tokens, %.0f s per level\n",
                g.host, g.port, g.prefix, model, api, prompt_tokens, in_tokens, out_tokens,
                duration);
    lg_level res[32];
    for (size_t i = 0; i < n_levels; i++) {
        run_level(&g, levels[i], duration, &res[i]);
        if (!json)
            fprintf(stderr, "vkpt loadgen: concurrency %u: %zu requests, %zu errors%s%s\n",
                    levels[i], res[i].requests, res[i].errors, res[i].errors ? ": " : "",
                    res[i].first_error);
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        char full[512];
        snprintf(full, sizeof full, "http://%s:%d%s", g.host, g.port, g.prefix);
        cJSON_AddStringToObject(o, "url", full);
        cJSON_AddStringToObject(o, "model", model);
        cJSON_AddStringToObject(o, "api", api);
        cJSON_AddNumberToObject(o, "input_tokens", prompt_tokens);
        cJSON_AddNumberToObject(o, "output_tokens", (double)out_tokens);
        cJSON_AddNumberToObject(o, "duration_s", duration);
        cJSON *arr = cJSON_AddArrayToObject(o, "levels");
        for (size_t i = 0; i < n_levels; i++) {
            lg_level *l = &res[i];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "concurrency", l->concurrency);
            cJSON_AddNumberToObject(x, "requests", (double)l->requests);
            cJSON_AddNumberToObject(x, "errors", (double)l->errors);
            cJSON_AddNumberToObject(x, "wall_s", l->wall_s);
            cJSON_AddNumberToObject(x, "requests_per_s", l->req_s);
            cJSON_AddNumberToObject(x, "output_tokens_per_s", l->out_tok_s);
            cJSON_AddNumberToObject(x, "total_tokens_per_s", l->total_tok_s);
            cJSON_AddNumberToObject(x, "mean_input_tokens", l->mean_in);
            cJSON_AddNumberToObject(x, "mean_output_tokens", l->mean_out);
            cJSON_AddNumberToObject(x, "mean_cached_prompt_tokens", l->mean_cached);
            const char *names[3] = {"p50", "p90", "p99"};
            cJSON *tt = cJSON_AddObjectToObject(x, "ttft_ms");
            cJSON *tp = cJSON_AddObjectToObject(x, "tpot_ms");
            for (int k = 0; k < 3; k++) {
                if (isnan(l->ttft[k]))
                    cJSON_AddNullToObject(tt, names[k]);
                else
                    cJSON_AddNumberToObject(tt, names[k], l->ttft[k] * 1e3);
                if (isnan(l->tpot[k]))
                    cJSON_AddNullToObject(tp, names[k]);
                else
                    cJSON_AddNumberToObject(tp, names[k], l->tpot[k] * 1e3);
            }
            if (l->errors) cJSON_AddStringToObject(x, "first_error", l->first_error);
            cJSON_AddItemToArray(arr, x);
        }
        char *s = cJSON_Print(o);
        puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("%11s %8s %6s %8s %8s %7s %10s %11s %8s %8s %8s %8s %8s %8s\n", "concurrency",
               "requests", "errors", "in_tok", "out_tok", "req/s", "out_tok/s", "total_tok/s",
               "ttft_p50", "ttft_p90", "ttft_p99", "tpot_p50", "tpot_p90", "tpot_p99");
        for (size_t i = 0; i < n_levels; i++) {
            lg_level *l = &res[i];
            printf("%11u %8zu %6zu %8.1f %8.1f %7.2f %10.1f %11.1f", l->concurrency, l->requests,
                   l->errors, l->mean_in, l->mean_out, l->req_s, l->out_tok_s, l->total_tok_s);
            for (int k = 0; k < 3; k++) print_ms(l->ttft[k]);
            for (int k = 0; k < 3; k++) print_ms(l->tpot[k]);
            printf("\n");
        }
        printf("(times in ms; tpot = time per output token after the first)\n");
    }
    uv_loop_close(&g.loop);
    free(g.results);
    free(g.prompt_body);
    free(model_owned);
    size_t errors = 0, ok = 0;
    for (size_t i = 0; i < n_levels; i++) errors += res[i].errors, ok += res[i].requests;
    return ok == 0 && errors ? 1 : 0;
}
