/* POST /v1/embeddings (see embeddings.h for the state machine and the
 * threading rules). */
#include "embeddings.h"

#include "endpoints.h"
#include "server_int.h"
#include "vkpt/embed.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bodies with more text than this are tokenized on the thread pool so the
 * loop stays responsive. */
#define INLINE_TEXT_BYTES 4096

enum { EMB_PARSE = 0, EMB_QUEUED, EMB_DONE, EMB_CLOSED };

typedef struct emb_slot {
    srv_embed *e;
    uint32_t i;
} emb_slot;

struct srv_embed {
    srv_list link; /* srv->embeds */
    vkpt_server *srv;
    srv_model *model;
    srv_conn *conn; /* NULL once the client is gone */
    int state;
    bool canceled;  /* client gone: no answer is written */
    bool db_errors; /* Databricks-shaped errors (the invocations route) */
    srv_embed_spec spec;
    vkpt_embedder *emb; /* the model's, or the replica admission chose */
    /* a provisioned endpoint's request (model->adm, endpoints.h) */
    bool adm_started; /* model->adm->embed_start was called; finish is due */
    bool parked;      /* waiting for a replica (cold start): in no embedder yet */
    srv_embed_adm adm;
    uint32_t dims;
    uint32_t prompt_tokens;
    uint64_t t_arrival_ns;
    /* tokenizing on the pool */
    uv_work_t work;
    bool work_pending;
    int work_err;
    uint32_t work_at; /* the input that failed */
    /* embedder -> loop hand-off; `mu` guards pending, err, vecs */
    uv_async_t async;
    uv_mutex_t mu;
    uint32_t submitted, pending;
    int err; /* first error of a callback */
    bool any_canceled;
    uint32_t tokens_done; /* of the inputs embedded */
    uint64_t queue_ns;    /* the longest time an input waited for its step */
    float *vecs;          /* [n_inputs][dims] */
    vkpt_embed_request **rq;
    emb_slot *slots;
};

/* ---- parsing ---------------------------------------------------------------------- */

void srv_embed_spec_free(srv_embed_spec *s)
{
    for (uint32_t i = 0; i < s->n_inputs; i++) {
        if (s->texts) vkpt_free(s->texts[i]);
        if (s->ids) vkpt_free(s->ids[i]);
    }
    vkpt_free(s->texts);
    vkpt_free(s->text_lens);
    vkpt_free(s->ids);
    vkpt_free(s->n_ids);
    vkpt_free(s->model);
    memset(s, 0, sizeof *s);
}

typedef struct perr {
    int *status;
    char *param;
    size_t param_cap;
    const char **code;
    char *msg;
    size_t msg_cap;
} perr;

static int bad(perr *p, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bad(perr *p, int status, const char *param, const char *code, const char *fmt, ...)
{
    *p->status = status;
    snprintf(p->param, p->param_cap, "%s", param ? param : "");
    *p->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, p->msg_cap, fmt, ap);
    va_end(ap);
    return VKPT_EINVAL;
}

/* A JSON number that is an integer in [lo, hi]. */
static bool int_in(const cJSON *v, double lo, double hi, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return false;
    *out = (int64_t)d;
    return true;
}

/* token ids from a JSON array of integers (non-empty) */
static int token_list(perr *p, const cJSON *a, const char *param, int32_t **ids, uint32_t *n)
{
    int cnt = cJSON_GetArraySize(a);
    if (cnt <= 0) return bad(p, 400, param, "invalid_value", "%s is an empty token list", param);
    int32_t *v = vkpt_malloc((size_t)cnt * sizeof *v);
    if (!v) return bad(p, 500, NULL, NULL, "out of memory");
    int k = 0;
    for (const cJSON *e = a->child; e; e = e->next, k++) {
        int64_t x;
        if (!int_in(e, 0, 2147483647.0, &x)) {
            vkpt_free(v);
            return bad(p, 400, param, "invalid_type", "%s[%d] must be a token id (an integer >= 0)",
                       param, k);
        }
        v[k] = (int32_t)x;
    }
    *ids = v;
    *n = (uint32_t)cnt;
    return 0;
}

static int parse_input(perr *p, const cJSON *in, srv_embed_spec *s)
{
    const char *wrong = "input must be a string, an array of strings, an array of token ids or "
                        "an array of token-id arrays";
    if (cJSON_IsString(in)) {
        size_t n = strlen(in->valuestring);
        if (!n) return bad(p, 400, "input", "invalid_value", "input must not be empty");
        s->n_inputs = 1;
        s->texts = vkpt_calloc(1, sizeof *s->texts);
        s->text_lens = vkpt_calloc(1, sizeof *s->text_lens);
        if (!s->texts || !s->text_lens || !(s->texts[0] = vkpt_strdup(in->valuestring)))
            return bad(p, 500, NULL, NULL, "out of memory");
        s->text_lens[0] = n;
        return 0;
    }
    if (!cJSON_IsArray(in)) return bad(p, 400, "input", "invalid_type", "%s", wrong);
    int cnt = cJSON_GetArraySize(in);
    if (cnt <= 0) return bad(p, 400, "input", "invalid_value", "input must not be empty");
    const cJSON *first = in->child;
    if (cJSON_IsNumber(first)) { /* one input of token ids */
        s->n_inputs = 1;
        s->ids = vkpt_calloc(1, sizeof *s->ids);
        s->n_ids = vkpt_calloc(1, sizeof *s->n_ids);
        if (!s->ids || !s->n_ids) return bad(p, 500, NULL, NULL, "out of memory");
        return token_list(p, in, "input", &s->ids[0], &s->n_ids[0]);
    }
    if (cnt > SRV_EMBED_MAX_INPUTS)
        return bad(p, 400, "input", "invalid_value", "input has %d items; at most %d", cnt,
                   SRV_EMBED_MAX_INPUTS);
    bool strings = cJSON_IsString(first);
    if (!strings && !cJSON_IsArray(first)) return bad(p, 400, "input", "invalid_type", "%s", wrong);
    s->n_inputs = (uint32_t)cnt;
    if (strings) {
        s->texts = vkpt_calloc((size_t)cnt, sizeof *s->texts);
        s->text_lens = vkpt_calloc((size_t)cnt, sizeof *s->text_lens);
    } else {
        s->ids = vkpt_calloc((size_t)cnt, sizeof *s->ids);
        s->n_ids = vkpt_calloc((size_t)cnt, sizeof *s->n_ids);
    }
    if (strings ? !s->texts || !s->text_lens : !s->ids || !s->n_ids)
        return bad(p, 500, NULL, NULL, "out of memory");
    int k = 0;
    for (const cJSON *e = in->child; e; e = e->next, k++) {
        char param[32];
        snprintf(param, sizeof param, "input[%d]", k);
        if (strings) {
            if (!cJSON_IsString(e))
                return bad(p, 400, param, "invalid_type",
                           "%s must be a string like the other inputs", param);
            size_t n = strlen(e->valuestring);
            if (!n) return bad(p, 400, param, "invalid_value", "%s must not be empty", param);
            if (!(s->texts[k] = vkpt_strdup(e->valuestring)))
                return bad(p, 500, NULL, NULL, "out of memory");
            s->text_lens[k] = n;
        } else {
            if (!cJSON_IsArray(e))
                return bad(p, 400, param, "invalid_type",
                           "%s must be an array of token ids like the other inputs", param);
            int err = token_list(p, e, param, &s->ids[k], &s->n_ids[k]);
            if (err) return err;
        }
    }
    return 0;
}

int srv_embed_parse(const char *body, size_t n, srv_embed_spec *out, int *status, char *param,
                    size_t param_cap, const char **code, char *msg, size_t msg_cap)
{
    perr p = {status, param, param_cap, code, msg, msg_cap};
    memset(out, 0, sizeof *out);
    cJSON *root = n ? cJSON_ParseWithLength(body, n) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return bad(&p, 400, NULL, "invalid_json", "the request body must be a JSON object");
    }
    int err = 0;
    const cJSON *input = NULL;
    for (const cJSON *v = root->child; v && !err; v = v->next) {
        const char *k = v->string;
        for (const cJSON *w = root->child; w != v; w = w->next)
            if (!strcmp(w->string, k)) {
                err = bad(&p, 400, k, "invalid_value", "%s is given twice", k);
                break;
            }
        if (err) break;
        if (!strcmp(k, "input")) {
            input = v;
        } else if (!strcmp(k, "model")) {
            if (cJSON_IsNull(v)) continue;
            if (!cJSON_IsString(v))
                err = bad(&p, 400, k, "invalid_type", "model must be a string");
            else if (!(out->model = vkpt_strdup(v->valuestring)))
                err = bad(&p, 500, NULL, NULL, "out of memory");
        } else if (!strcmp(k, "encoding_format")) {
            if (cJSON_IsNull(v)) continue;
            if (!cJSON_IsString(v) ||
                (strcmp(v->valuestring, "float") && strcmp(v->valuestring, "base64")))
                err = bad(&p, 400, k, "invalid_value",
                          "encoding_format must be \"float\" or \"base64\"");
            else
                out->base64 = !strcmp(v->valuestring, "base64");
        } else if (!strcmp(k, "dimensions")) {
            int64_t d;
            if (cJSON_IsNull(v)) continue;
            if (!int_in(v, 1, 1 << 20, &d))
                err = bad(&p, 400, k, "invalid_value", "dimensions must be an integer >= 1");
            else
                out->dims = (uint32_t)d;
        } else if (!strcmp(k, "user")) {
            if (!cJSON_IsString(v) && !cJSON_IsNull(v))
                err = bad(&p, 400, k, "invalid_type", "user must be a string");
        } else if (!strcmp(k, "pooling")) { /* vkpt extension */
            int pl = cJSON_IsString(v) ? vkpt_pooling_by_name(v->valuestring) : -1;
            if (pl <= 0)
                err = bad(&p, 400, k, "invalid_value",
                          "pooling must be \"cls\", \"mean\" or \"last\"");
            else
                out->pooling = pl;
        } else if (!strcmp(k, "normalize")) { /* vkpt extension */
            if (!cJSON_IsBool(v))
                err = bad(&p, 400, k, "invalid_type", "normalize must be true or false");
            else
                out->normalize = cJSON_IsTrue(v) ? VKPT_NORMALIZE_ON : VKPT_NORMALIZE_OFF;
        } else {
            err = bad(&p, 400, k, "unknown_parameter", "Unrecognized request argument supplied: %s",
                      k);
        }
    }
    if (!err && !input)
        err = bad(&p, 400, "input", "missing_required_parameter",
                  "you must provide an input (a string, an array of strings, or token ids)");
    if (!err) err = parse_input(&p, input, out);
    cJSON_Delete(root);
    if (err) srv_embed_spec_free(out);
    return err;
}

/* ---- answers ----------------------------------------------------------------------- */

void srv_base64_f32(srv_buf *out, const float *v, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t bytes = n * 4, i = 0;
    if (srv_buf_reserve(out, (bytes + 2) / 3 * 4 + 1)) return;
    uint8_t b[3];
    uint32_t w = 0;
    while (i < bytes) {
        size_t k = 0;
        for (; k < 3 && i < bytes; k++, i++) {
            if (i % 4 == 0) memcpy(&w, &v[i / 4], 4);
            b[k] = (uint8_t)(w >> (8 * (i % 4))); /* little-endian bytes of the f32 */
        }
        char q[4];
        q[0] = tbl[b[0] >> 2];
        q[1] = tbl[((b[0] & 3) << 4) | (k > 1 ? b[1] >> 4 : 0)];
        q[2] = k > 1 ? tbl[((b[1] & 15) << 2) | (k > 2 ? b[2] >> 6 : 0)] : '=';
        q[3] = k > 2 ? tbl[b[2] & 63] : '=';
        srv_buf_append(out, q, 4);
    }
}

/* The shortest decimal that reads back as the same float. */
static void json_f32(srv_buf *o, float x)
{
    char buf[32];
    if (!isfinite(x)) {
        srv_buf_puts(o, "null");
        return;
    }
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    srv_buf_puts(o, buf);
}

static void write_body(const srv_embed *e, srv_buf *o)
{
    srv_buf_puts(o, "{\"object\":\"list\",\"data\":[");
    for (uint32_t i = 0; i < e->spec.n_inputs; i++) {
        const float *v = e->vecs + (size_t)i * e->dims;
        srv_buf_printf(o, "%s{\"object\":\"embedding\",\"index\":%u,\"embedding\":", i ? "," : "",
                       i);
        if (e->spec.base64) {
            srv_buf_puts(o, "\"");
            srv_base64_f32(o, v, e->dims);
            srv_buf_puts(o, "\"");
        } else {
            srv_buf_puts(o, "[");
            for (uint32_t k = 0; k < e->dims; k++) {
                if (k) srv_buf_puts(o, ",");
                json_f32(o, v[k]);
            }
            srv_buf_puts(o, "]");
        }
        srv_buf_puts(o, "}");
    }
    srv_buf_puts(o, "],\"model\":");
    srv_buf_json_str(o, e->model->id, strlen(e->model->id));
    srv_buf_printf(o, ",\"usage\":{\"prompt_tokens\":%u,\"total_tokens\":%u}}", e->prompt_tokens,
                   e->prompt_tokens);
}

/* An error answer in the route's shape, with admission's header lines
 * (served-model-name) and `extra` (NULL or header lines). */
static void answer_error(srv_embed *e, srv_conn *conn, int status, const char *param,
                         const char *code, const char *msg, const char *extra)
{
    char hdr[512];
    snprintf(hdr, sizeof hdr, "%s%s", e->adm.extra_headers, extra ? extra : "");
    if (status == 503 && !strstr(hdr, "Retry-After"))
        snprintf(hdr + strlen(hdr), sizeof hdr - strlen(hdr), "Retry-After: 1\r\n");
    srv_conn_error_shaped(conn, e->db_errors, status, param, code, msg, hdr);
}

/* ---- lifetime ------------------------------------------------------------------------ */

static void on_closed(uv_handle_t *h)
{
    srv_embed *e = h->data;
    vkpt_server *s = e->srv;
    uv_mutex_destroy(&e->mu);
    srv_embed_spec_free(&e->spec);
    vkpt_free(e->vecs);
    vkpt_free(e->rq);
    vkpt_free(e->slots);
    srv_list_remove(&e->link);
    vkpt_free(e);
    s->n_gens--;
    srv_maybe_finish_drain(s);
}

/* -> CLOSED: every callback has arrived (or nothing was submitted). */
static void emb_close(srv_embed *e)
{
    if (e->state == EMB_CLOSED) return;
    e->state = EMB_CLOSED;
    e->parked = false;
    if (e->conn) {
        srv_conn *conn = e->conn;
        e->conn = NULL;
        conn->embed = NULL;
        answer_error(e, conn, 500, NULL, NULL, "the request ended without an answer", NULL);
    }
    for (uint32_t i = 0; e->rq && i < e->submitted; i++) vkpt_embed_request_release(e->rq[i]);
    if (e->adm_started) {
        e->adm_started = false;
        e->adm.tokens_done = e->tokens_done;
        e->adm.queue_ns = e->queue_ns;
        e->model->adm->embed_finish(&e->adm); /* may free the model: not used after this */
    }
    uv_close((uv_handle_t *)&e->async, on_closed);
}

/* Answer an error and close (nothing in the embedder yet). */
static void emb_fail(srv_embed *e, int status, const char *param, const char *code, const char *msg)
{
    if (e->conn && !e->canceled) {
        srv_conn *conn = e->conn;
        e->conn = NULL;
        conn->embed = NULL;
        answer_error(e, conn, status, param, code, msg, NULL);
    }
    emb_close(e);
}

void srv_embed_fail(srv_embed *e, int status, const char *code, const char *msg,
                    const char *extra_headers)
{
    e->parked = false;
    if (e->conn && !e->canceled) {
        srv_conn *conn = e->conn;
        e->conn = NULL;
        conn->embed = NULL;
        answer_error(e, conn, status, NULL, code, msg, extra_headers);
    }
    emb_close(e);
}

/* Runs on the embedder's worker thread: keep the vector, wake the loop
 * after the last one. */
static void on_vector(const vkpt_embed_result *r, void *ud)
{
    emb_slot *sl = ud;
    srv_embed *e = sl->e;
    uv_mutex_lock(&e->mu);
    if (r->queued_ns > e->queue_ns) e->queue_ns = r->queued_ns;
    if (r->vec) {
        memcpy(e->vecs + (size_t)sl->i * e->dims, r->vec, (size_t)r->dims * sizeof(float));
        e->tokens_done += r->n_tokens;
    } else if (r->canceled)
        e->any_canceled = true;
    else if (!e->err)
        e->err = r->err ? r->err : VKPT_EIO;
    if (--e->pending == 0) uv_async_send(&e->async);
    uv_mutex_unlock(&e->mu);
}

/* DONE: the last vector arrived. */
static void on_async(uv_async_t *a)
{
    srv_embed *e = a->data;
    if (e->state != EMB_QUEUED) return;
    uv_mutex_lock(&e->mu);
    bool done = e->pending == 0;
    int err = e->err;
    bool canceled = e->any_canceled;
    uv_mutex_unlock(&e->mu);
    if (!done) return;
    e->state = EMB_DONE;
    srv_model_metrics *mm = &e->model->m;
    srv_conn *conn = e->canceled ? NULL : e->conn;
    if (!err && !canceled) {
        mm->prompt_tokens += e->prompt_tokens;
        srv_hist_observe(&mm->e2e, (double)(vkpt_now_ns() - e->t_arrival_ns) / 1e9);
    } else {
        mm->finished_error += err != 0;
    }
    if (conn) {
        e->conn = NULL;
        conn->embed = NULL;
        conn->log_prompt_tokens = e->prompt_tokens;
        if (err) {
            bool lost = err == VKPT_EDEVLOST;
            char msg[300];
            snprintf(msg, sizeof msg, "embedding failed: %s", vkpt_strerror(err));
            answer_error(e, conn, lost ? 503 : 500, NULL, lost ? "device_lost" : "embedding_failed",
                         msg, NULL);
        } else if (canceled) {
            answer_error(e, conn, 503, NULL, "server_shutting_down",
                         "the request was canceled: the server is shutting down", NULL);
        } else {
            srv_buf b = {0};
            write_body(e, &b);
            if (srv_buf_ok(&b))
                srv_conn_respond(conn, 200, "application/json",
                                 e->adm.extra_headers[0] ? e->adm.extra_headers : NULL, b.p, b.n);
            else
                answer_error(e, conn, 500, NULL, NULL, "out of memory writing the response", NULL);
            srv_buf_free(&b);
        }
    }
    emb_close(e);
}

static void emb_submit_to(srv_embed *e, vkpt_embedder *emb);

/* PARSE -> QUEUED: every input is token ids; check them, pass admission
 * (a provisioned endpoint's model), submit. */
static void emb_submit(srv_embed *e)
{
    srv_model *m = e->model;
    const srv_embed_spec *s = &e->spec;
    char msg[512];
    if (e->canceled) {
        emb_close(e);
        return;
    }
    if (e->work_err) {
        snprintf(msg, sizeof msg, "input %u: %s", e->work_at,
                 e->work_err == VKPT_ENOMEM ? "out of memory" : vkpt_strerror(e->work_err));
        emb_fail(e, e->work_err == VKPT_ENOMEM ? 500 : 400, "input",
                 e->work_err == VKPT_ENOMEM ? NULL : "invalid_prompt", msg);
        return;
    }
    /* an endpoint's replicas embed at most the entity's context */
    uint32_t max_len = m->embedder ? vkpt_embedder_max_seq_len(m->embedder) : m->n_ctx;
    for (uint32_t i = 0; i < s->n_inputs; i++) {
        char param[32];
        snprintf(param, sizeof param, s->n_inputs > 1 ? "input[%u]" : "input", i);
        if (s->n_ids[i] > max_len) {
            snprintf(msg, sizeof msg,
                     "This model's maximum context length is %u tokens, however %s has %u "
                     "tokens. Please shorten it.",
                     max_len, s->n_inputs > 1 ? param : "the input", s->n_ids[i]);
            emb_fail(e, 400, param, "context_length_exceeded", msg);
            return;
        }
        for (uint32_t t = 0; t < s->n_ids[i]; t++)
            if ((uint32_t)s->ids[i][t] >= m->n_vocab) {
                snprintf(msg, sizeof msg, "%s: token id %d is outside the vocabulary (0..%u)",
                         param, s->ids[i][t], m->n_vocab - 1);
                emb_fail(e, 400, param, "invalid_value", msg);
                return;
            }
        e->prompt_tokens += s->n_ids[i];
    }
    vkpt_embedder *emb = m->embedder;
    if (m->adm) {
        e->adm.tokens = e->prompt_tokens;
        int r = m->adm->embed_admit(&e->adm, &emb);
        if (r == SRV_ADMIT_WAIT) {
            e->parked = true;
            return;
        }
        if (r != SRV_ADMIT_GO) return; /* answered and closed */
    }
    emb_submit_to(e, emb);
}

void srv_embed_resume(srv_embed *e, vkpt_embedder *emb)
{
    e->parked = false;
    emb_submit_to(e, emb);
}

/* QUEUED: every input goes to `emb` (the model's embedder, or the replica
 * admission picked). */
static void emb_submit_to(srv_embed *e, vkpt_embedder *emb)
{
    const srv_embed_spec *s = &e->spec;
    char msg[512];
    e->emb = emb;
    uint32_t n_embd = vkpt_embedder_dim(emb);
    if (s->dims > n_embd) {
        snprintf(msg, sizeof msg, "dimensions must be at most %u for this model; got %u", n_embd,
                 s->dims);
        emb_fail(e, 400, "dimensions", "invalid_value", msg);
        return;
    }
    e->dims = s->dims ? s->dims : n_embd;
    vkpt_embed_params p = {.pooling = s->pooling, .normalize = s->normalize, .dims = s->dims};
    e->vecs = vkpt_malloc((size_t)s->n_inputs * e->dims * sizeof(float));
    e->rq = vkpt_calloc(s->n_inputs, sizeof *e->rq);
    e->slots = vkpt_calloc(s->n_inputs, sizeof *e->slots);
    if (!e->vecs || !e->rq || !e->slots) {
        emb_fail(e, 500, NULL, NULL, "out of memory accepting the request");
        return;
    }
    e->state = EMB_QUEUED;
    int err = 0;
    uv_mutex_lock(&e->mu);
    e->pending = s->n_inputs; /* held at n until every submit is done */
    uv_mutex_unlock(&e->mu);
    for (uint32_t i = 0; i < s->n_inputs && !err; i++) {
        e->slots[i] = (emb_slot){e, i};
        err = vkpt_embedder_submit(emb, s->ids[i], s->n_ids[i], &p, on_vector, &e->slots[i],
                                   &e->rq[i]);
        if (!err) e->submitted++;
    }
    if (err) {
        /* the inputs already submitted still call back: cancel them and let
         * the last callback close the request, with this error */
        snprintf(msg, sizeof msg, "%s", vkpt_errmsg(err));
        for (uint32_t i = 0; i < e->submitted; i++) vkpt_embed_request_cancel(e->rq[i]);
        if (e->conn && !e->canceled) {
            srv_conn *conn = e->conn;
            e->conn = NULL;
            conn->embed = NULL;
            bool unavailable = err == VKPT_ESTATE || err == VKPT_EDEVLOST;
            answer_error(e, conn,
                         unavailable          ? 503
                         : err == VKPT_EINVAL ? 400
                                              : 500,
                         NULL,
                         unavailable          ? "engine_unavailable"
                         : err == VKPT_EINVAL ? "invalid_value"
                                              : NULL,
                         msg, NULL);
        }
        e->canceled = true;
    }
    uv_mutex_lock(&e->mu);
    e->pending -= s->n_inputs - e->submitted;
    bool none_left = e->pending == 0;
    uv_mutex_unlock(&e->mu);
    if (none_left) {
        if (e->submitted) /* every callback came already: answer now */
            on_async(&e->async);
        else
            emb_close(e);
    }
}

static void tokenize_all(srv_embed *e)
{
    srv_embed_spec *s = &e->spec;
    const vkpt_tokenizer *tok = e->model->tok;
    for (uint32_t i = 0; i < s->n_inputs && !e->work_err; i++) {
        vkpt_tokens t = {0};
        /* the model's special tokens ([CLS] .. [SEP]); special-token text in
         * the input is plain text (it is a client's content) */
        e->work_err =
            vkpt_tokenizer_encode(tok, s->texts[i], s->text_lens[i], VKPT_TOK_ADD_SPECIAL, &t);
        if (!e->work_err && !t.n) e->work_err = VKPT_EINVAL;
        if (e->work_err) {
            e->work_at = i;
            vkpt_tokens_free(&t);
            break;
        }
        s->ids[i] = t.ids; /* owned by the spec now (vkpt_free) */
        s->n_ids[i] = (uint32_t)t.n;
    }
}

static void work_cb(uv_work_t *w)
{
    tokenize_all(w->data);
}

static void after_work_cb(uv_work_t *w, int status)
{
    srv_embed *e = w->data;
    e->work_pending = false;
    if (status == UV_ECANCELED) e->canceled = true;
    emb_submit(e);
}

/* ---- the handler ----------------------------------------------------------------------- */

void srv_h_embeddings(srv_ctx *ctx)
{
    vkpt_server *s = ctx->srv;
    srv_embed_spec spec;
    int status = 0;
    char param[64], msg[512];
    const char *code = NULL;
    const srv_buf *body = &ctx->req->body;
    if (srv_embed_parse(body->p ? body->p : "", body->n, &spec, &status, param, sizeof param, &code,
                        msg, sizeof msg)) {
        srv_conn_error(ctx->conn, status, param[0] ? param : NULL, code, "%s", msg);
        return;
    }
    srv_model *m = srv_model_find(s, spec.model);
    if (!m) {
        char list[256] = "";
        size_t used = 0;
        for (size_t i = 0; i < s->n_models && used < sizeof list - 1; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "",
                                     s->models[i].id);
        srv_conn_error(
            ctx->conn, 404, "model", "model_not_found",
            "The model \"%s\" does not exist; this server serves %s (see GET /v1/models)",
            spec.model, list[0] ? list : "no model directly (endpoints only)");
        srv_embed_spec_free(&spec);
        return;
    }
    srv_embed_start(ctx, m, &spec, false);
}

void srv_embed_start(srv_ctx *ctx, srv_model *m, srv_embed_spec *spec_in, bool db_errors)
{
    vkpt_server *s = ctx->srv;
    srv_embed_spec spec = *spec_in;
    memset(spec_in, 0, sizeof *spec_in);
    /* an endpoint's model embeds when its admission has embedding hooks */
    if (m->adm ? !m->adm->embed_admit : !m->embedder) {
        const char *msg = "The model \"%s\" generates text; it has no embeddings. Serve an "
                          "embedding model (bert, nomic-bert, GTE) for /v1/embeddings";
        if (db_errors)
            srv_conn_db_error(ctx->conn, 400, srv_db_error_code(400), NULL, msg, m->id);
        else
            srv_conn_error(ctx->conn, 400, "model", "invalid_value", msg, m->id);
        srv_embed_spec_free(&spec);
        return;
    }
    if (m->embedder && spec.dims > vkpt_embedder_dim(m->embedder)) {
        srv_conn_error(ctx->conn, 400, "dimensions", "invalid_value",
                       "dimensions must be at most %u for this model; got %u",
                       vkpt_embedder_dim(m->embedder), spec.dims);
        srv_embed_spec_free(&spec);
        return;
    }
    srv_embed *e = vkpt_calloc(1, sizeof *e);
    if (!e || uv_mutex_init(&e->mu)) {
        vkpt_free(e);
        srv_embed_spec_free(&spec);
        srv_conn_error(ctx->conn, 500, NULL, NULL, "out of memory accepting the request");
        return;
    }
    e->srv = s;
    e->model = m;
    e->spec = spec;
    e->db_errors = db_errors;
    e->conn = ctx->conn;
    ctx->conn->embed = e;
    e->t_arrival_ns = ctx->conn->t_req_ns;
    e->adm.req = e;
    e->adm.model = m;
    srv_list_init(&e->adm.link);
    srv_list_push(&s->embeds, &e->link);
    s->n_gens++;
    uv_async_init(&s->loop, &e->async, on_async);
    e->async.data = e;
    e->work.data = e;
    if (m->adm) {
        e->adm_started = true;
        m->adm->embed_start(&e->adm);
    }
    if (e->spec.texts) {
        /* token arrays for the tokenized texts */
        e->spec.ids = vkpt_calloc(e->spec.n_inputs, sizeof *e->spec.ids);
        e->spec.n_ids = vkpt_calloc(e->spec.n_inputs, sizeof *e->spec.n_ids);
        if (!e->spec.ids || !e->spec.n_ids) {
            emb_fail(e, 500, NULL, NULL, "out of memory accepting the request");
            return;
        }
        size_t bytes = 0;
        for (uint32_t i = 0; i < e->spec.n_inputs; i++) bytes += e->spec.text_lens[i];
        if (bytes > INLINE_TEXT_BYTES &&
            uv_queue_work(&s->loop, &e->work, work_cb, after_work_cb) == 0) {
            e->work_pending = true;
            return;
        }
        tokenize_all(e);
    }
    emb_submit(e);
}

void srv_embed_cancel_all(vkpt_server *s)
{
    for (srv_list *n = s->embeds.next; n != &s->embeds; n = n->next) {
        srv_embed *e = srv_container_of(n, srv_embed, link);
        for (uint32_t i = 0; e->rq && i < e->submitted; i++) vkpt_embed_request_cancel(e->rq[i]);
        /* closing keeps e in s->embeds until its handle is closed: safe here */
        if (e->parked)
            srv_embed_fail(e, 503, "server_shutting_down",
                           "the request was canceled: the server is shutting down", NULL);
    }
}

void srv_embed_detach(srv_embed *e)
{
    e->conn = NULL;
    e->canceled = true;
    for (uint32_t i = 0; e->rq && i < e->submitted; i++) vkpt_embed_request_cancel(e->rq[i]);
    /* parked for a replica: nothing will wake it, close it now */
    if (e->parked) emb_close(e);
    /* PARSE with work pending: after_work_cb closes it; QUEUED: the last
     * callback does */
}
