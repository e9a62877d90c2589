/* Generation requests: from a validated spec to the engine and back to the
 * socket. See request.h for the state machine and the threading rules. */
#include "request.h"

#include "endpoints.h"
#include "sse.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Prompts longer than this are rendered and tokenized on the thread pool so
 * the loop stays responsive. */
#define INLINE_PROMPT_BYTES 4096
/* Unsent stream bytes a client may accumulate before it is disconnected. */
#define SLOW_CLIENT_BYTES   (16u << 20)
/* Events a request's queue holds before it first grows (two buffers). */
#define QUEUE_INITIAL       16

static void gen_close(srv_gen *g);
static void gen_submit(srv_gen *g);
static void answer_error(srv_gen *g, srv_conn *conn, int status, const char *param,
                         const char *code, const char *msg, const char *extra);

void srv_gen_spec_free(srv_gen_spec *s)
{
    vkpt_free(s->model);
    vkpt_free(s->bias);
    for (size_t i = 0; i < s->n_stops; i++) vkpt_free(s->stops[i]);
    vkpt_free(s->stops);
    cJSON_Delete(s->messages);
    cJSON_Delete(s->template_kwargs);
    cJSON_Delete(s->tools);
    vkpt_free(s->prompt);
    vkpt_free(s->prompt_ids);
    memset(s, 0, sizeof *s);
}

/* ---- engine thread ------------------------------------------------------------ */

/* Runs on the engine thread: copy the event, wake the loop. The queue keeps
 * one free slot for DONE, so a failed growth can drop a TOKEN (reported as
 * an error) but never the DONE that lets the request close. uv_async_send
 * happens inside the lock: once the loop has seen DONE (under the same
 * lock), this thread no longer touches the request. */
static void on_engine_event(const vkpt_gen_event *ev, void *ud)
{
    srv_gen *g = ud;
    uint64_t t = vkpt_now_ns();
    uv_mutex_lock(&g->mu);
    if (g->q_n + 1 >= g->q_cap && ev->type != VKPT_EV_DONE) {
        size_t cap = g->q_cap * 2;
        srv_gen_event *q = vkpt_realloc(g->q, cap * sizeof *q);
        if (q) {
            g->q = q;
            g->q_cap = cap;
        }
    }
    if (g->q_n + (ev->type == VKPT_EV_DONE ? 0 : 1) < g->q_cap) {
        g->q[g->q_n].ev = *ev;
        g->q[g->q_n].t_ns = t;
        g->q_n++;
    } else {
        g->q_oom = true;
    }
    uv_async_send(&g->async);
    uv_mutex_unlock(&g->mu);
}

/* ---- output helpers ----------------------------------------------------------- */

static void gen_flush(srv_gen *g)
{
    if (g->out.n && g->conn && !g->canceled) {
        srv_conn_stream_send(g->conn, g->out.p, g->out.n);
        /* A client that stops reading must not grow our memory without
         * bound: past the limit it is treated as gone. */
        if (g->conn && srv_conn_backlog(g->conn) > SLOW_CLIENT_BYTES)
            srv_conn_abort(g->conn, "it stopped reading its stream");
    }
    srv_buf_reset(&g->out);
}

static int lp_push(srv_choice *c, const srv_lp *lp)
{
    if (c->n_lps == c->cap_lps) {
        size_t cap = c->cap_lps ? c->cap_lps * 2 : 16;
        srv_lp *p = vkpt_realloc(c->lps, cap * sizeof *p);
        if (!p) return VKPT_ENOMEM;
        c->lps = p;
        c->cap_lps = cap;
    }
    c->lps[c->n_lps++] = *lp;
    return 0;
}

static void gen_check_all_ended(srv_gen *g)
{
    for (uint32_t i = 0; i < g->n_choices; i++)
        if (!g->ch[i].ended) return;
    if (g->rq) vkpt_request_cancel(g->rq);
}

/* Text past the stop strings: content, or held back as a tool call. */
static void choice_emit(srv_gen *g, srv_choice *c, const char *p, size_t n)
{
    if (g->spec.tools_on)
        srv_tool_filter_feed(&c->tf, p, n, &c->text);
    else
        srv_buf_append(&c->text, p, n);
    c->text_total += (uint32_t)n;
}

/* Text for choice `c`, through its stop-string matcher. */
static void choice_text(srv_gen *g, srv_choice *c, const char *p, size_t n)
{
    if (c->ended) return;
    if (!c->stop) {
        choice_emit(g, c, p, n);
        return;
    }
    vkpt_span emit;
    int k = vkpt_stop_feed(c->stop, p, n, &emit);
    choice_emit(g, c, emit.p, emit.n);
    if (k >= 0) {
        c->ended = true;
        c->finish = SRV_FINISH_STOP;
        gen_check_all_ended(g);
    }
}

static void emit_chunk(srv_gen *g, uint32_t i, bool final)
{
    srv_choice *c = &g->ch[i];
    if (g->canceled || !g->conn) return;
    g->ops->chunk(g, i, final, &g->out);
    srv_buf_reset(&c->text);
    c->n_lps = 0;
}

/* ---- transitions ---------------------------------------------------------------- */

/* DECODE: one token of one choice. */
static void gen_on_token(srv_gen *g, const srv_gen_event *e)
{
    const vkpt_gen_event *ev = &e->ev;
    if (ev->choice >= g->n_choices) return;
    srv_choice *c = &g->ch[ev->choice];
    srv_model_metrics *mm = &g->model->m;
    if (!g->got_first) {
        g->got_first = true;
        g->t_first_ns = e->t_ns;
        g->state = SRV_GEN_DECODE;
        srv_hist_observe(&mm->ttft, (double)(e->t_ns - g->t_arrival_ns) / 1e9);
    } else if (c->last_ns) {
        srv_hist_observe(&mm->tpot, (double)(e->t_ns - c->last_ns) / 1e9);
    }
    c->last_ns = e->t_ns;
    if (c->ended) return;
    c->n_tokens++;
    g->completion_tokens++;
    if (g->spec.gp.logprobs) {
        srv_lp lp = {.id = ev->token, .logprob = ev->logprob, .text_offset = c->text_total};
        lp.n_top = ev->n_top < g->spec.gp.top_logprobs ? ev->n_top : g->spec.gp.top_logprobs;
        memcpy(lp.top_ids, ev->top_ids, lp.n_top * sizeof lp.top_ids[0]);
        memcpy(lp.top_lp, ev->top_logprobs, lp.n_top * sizeof lp.top_lp[0]);
        if (lp_push(c, &lp)) g->oom = true;
    }
    vkpt_span t = {0};
    if (vkpt_detok_push(c->detok, ev->token, &t)) {
        g->oom = true;
        return;
    }
    choice_text(g, c, t.p, t.n);
    /* Logprobs of tokens whose text is still held back wait for the text. */
    if (g->spec.stream && c->text.n) emit_chunk(g, ev->choice, false);
}

static int finish_of(int engine_finish)
{
    switch (engine_finish) {
    case VKPT_FINISH_STOP: return SRV_FINISH_STOP;
    case VKPT_FINISH_LENGTH: return SRV_FINISH_LENGTH;
    default: return SRV_FINISH_ABORT;
    }
}

/* DONE: the engine finished every choice. */
static void gen_on_done(srv_gen *g, const srv_gen_event *e)
{
    const vkpt_gen_event *ev = &e->ev;
    srv_model_metrics *mm = &g->model->m;
    g->state = SRV_GEN_DONE;
    g->adm_queue_ns = ev->queued_ns;
    g->prompt_tokens = ev->prompt_tokens ? ev->prompt_tokens : (uint32_t)g->prompt.n;
    g->cached_tokens = ev->cached_tokens;
    int err = 0;
    for (uint32_t i = 0; i < g->n_choices; i++) {
        srv_choice *c = &g->ch[i];
        if (!c->ended) {
            vkpt_span t = {0};
            if (!vkpt_detok_flush(c->detok, &t)) choice_text(g, c, t.p, t.n);
        }
        if (!c->ended) {
            if (c->stop) {
                vkpt_span rest = vkpt_stop_flush(c->stop);
                choice_emit(g, c, rest.p, rest.n);
            }
            c->finish = finish_of(ev->finish[i]);
            if (ev->finish[i] == VKPT_FINISH_ERROR) err = ev->err ? ev->err : VKPT_EIO;
        }
        if (c->tf.held.n) { /* tool calls, or text that only looked like one */
            int terr = srv_tool_parse(c->tf.fmt, c->tf.held.p, c->tf.held.n, g->spec.tools,
                                      &c->calls, &c->text);
            if (!terr && c->finish != SRV_FINISH_ABORT) c->finish = SRV_FINISH_TOOL_CALLS;
            if (terr == VKPT_ENOMEM) g->oom = true;
            if (terr) srv_buf_append(&c->text, c->tf.held.p, c->tf.held.n);
            srv_buf_reset(&c->tf.held);
        }
        if (c->finish == SRV_FINISH_STOP || c->finish == SRV_FINISH_TOOL_CALLS) mm->finished_stop++;
        if (c->finish == SRV_FINISH_LENGTH) mm->finished_length++;
    }
    bool aborted = false;
    for (uint32_t i = 0; i < g->n_choices; i++) aborted |= g->ch[i].finish == SRV_FINISH_ABORT;
    if (g->oom && !err) err = VKPT_ENOMEM;
    if (err)
        mm->finished_error++;
    else if (aborted)
        mm->finished_abort++;
    mm->prompt_tokens += g->prompt_tokens;
    mm->cached_tokens += g->cached_tokens;
    mm->completion_tokens += g->completion_tokens;
    srv_hist_observe(&mm->e2e, (double)(e->t_ns - g->t_arrival_ns) / 1e9);

    srv_conn *conn = g->canceled ? NULL : g->conn;
    if (!conn) {
        gen_close(g);
        return;
    }
    conn->log_prompt_tokens = g->prompt_tokens;
    conn->log_completion_tokens = g->completion_tokens;
    int status = 0;
    const char *code = NULL;
    char msg[512] = "";
    if (err) {
        status = err == VKPT_EDEVLOST ? 503 : 500;
        code = err == VKPT_EDEVLOST ? "device_lost" : "generation_failed";
        snprintf(msg, sizeof msg, "generation failed: %s", vkpt_strerror(err));
    } else if (aborted) {
        status = 503;
        code = "server_shutting_down";
        snprintf(msg, sizeof msg, "the request was canceled: the server is shutting down");
    }
    if (g->spec.stream) {
        if (status) {
            srv_sse_open(&g->out);
            srv_error_json(&g->out, status, NULL, code, msg);
            srv_sse_close(&g->out);
        } else {
            for (uint32_t i = 0; i < g->n_choices; i++) emit_chunk(g, i, true);
            if (g->spec.include_usage) g->ops->usage_chunk(g, &g->out);
        }
        srv_sse_done(&g->out);
        gen_flush(g);
        g->conn = NULL;
        conn->gen = NULL;
        srv_conn_stream_end(conn);
    } else {
        g->conn = NULL;
        conn->gen = NULL;
        if (status) {
            answer_error(g, conn, status, NULL, code, msg, NULL);
        } else {
            srv_buf body = {0};
            g->ops->body(g, &body);
            if (srv_buf_ok(&body))
                srv_conn_respond(conn, 200, "application/json",
                                 g->extra_headers[0] ? g->extra_headers : NULL, body.p, body.n);
            else
                srv_conn_error(conn, 500, NULL, NULL, "out of memory writing the response");
            srv_buf_free(&body);
        }
    }
    gen_close(g);
}

static void on_async(uv_async_t *a)
{
    srv_gen *g = a->data;
    if (g->state == SRV_GEN_CLOSED) return;
    uv_mutex_lock(&g->mu);
    srv_gen_event *evs = g->q;
    size_t n = g->q_n, cap = g->q_cap;
    g->q = g->q_spare;
    g->q_cap = g->q_spare_cap;
    g->q_n = 0;
    g->q_spare = evs;
    g->q_spare_cap = cap;
    bool dropped = g->q_oom;
    g->q_oom = false;
    uv_mutex_unlock(&g->mu);
    if (dropped) g->oom = true;
    for (size_t i = 0; i < n; i++) {
        if (evs[i].ev.type == VKPT_EV_TOKEN) {
            gen_on_token(g, &evs[i]);
        } else if (evs[i].ev.type == VKPT_EV_DONE) {
            gen_flush(g);
            gen_on_done(g, &evs[i]);
            return; /* closed */
        }
    }
    /* An event was lost to a failed allocation: end the request (it fails). */
    if (g->oom && g->rq) vkpt_request_cancel(g->rq);
    gen_flush(g);
}

/* An error answer: OpenAI's shape, or Databricks' on the serving-endpoints
 * routes; with the admission's headers (served-model-name) and `extra`. */
static void answer_error(srv_gen *g, srv_conn *conn, int status, const char *param,
                         const char *code, const char *msg, const char *extra)
{
    char hdr[512];
    snprintf(hdr, sizeof hdr, "%s%s", g->extra_headers, extra ? extra : "");
    srv_conn_error_shaped(conn, g->spec.db_errors, status, param, code, msg, hdr);
}

void srv_gen_fail(srv_gen *g, int status, const char *param, const char *code, const char *msg,
                  const char *extra_headers)
{
    g->parked = false;
    if (g->conn && !g->canceled) {
        srv_conn *conn = g->conn;
        g->conn = NULL;
        conn->gen = NULL;
        answer_error(g, conn, status, param, code, msg, extra_headers);
    }
    gen_close(g);
}

/* Answer an error before the request reached the engine, then close. */
static void gen_fail(srv_gen *g, int status, const char *param, const char *code, const char *msg)
{
    srv_gen_fail(g, status, param, code, msg, NULL);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* PARSE -> QUEUED: the prompt is tokenized; check it against the context,
 * set up the choices, submit. */
static void gen_tokenized(srv_gen *g)
{
    srv_model *m = g->model;
    char msg[512];
    if (g->canceled) {
        gen_close(g);
        return;
    }
    if (g->srv->canceling) {
        gen_fail(g, 503, NULL, "server_shutting_down",
                 "the request was canceled: the server is shutting down");
        return;
    }
    if (g->work_err) {
        bool oom = g->work_err == VKPT_ENOMEM;
        snprintf(msg, sizeof msg, "%s%s",
                 g->spec.api == SRV_API_CHAT ? "the chat template failed: " : "",
                 g->work_msg ? g->work_msg : vkpt_strerror(g->work_err));
        gen_fail(g, oom ? 500 : 400, g->spec.api == SRV_API_CHAT ? "messages" : "prompt",
                 oom ? NULL : "invalid_prompt", msg);
        return;
    }
    uint32_t n_prompt = (uint32_t)g->prompt.n;
    const char *pparam = g->spec.api == SRV_API_CHAT ? "messages" : "prompt";
    if (n_prompt == 0) {
        gen_fail(g, 400, pparam, "invalid_prompt",
                 "the prompt is empty (and the model adds no BOS token): give some text");
        return;
    }
    if (g->prompt.n >= m->n_ctx) {
        snprintf(msg, sizeof msg,
                 "This model's maximum context length is %u tokens. However, your %s has %u "
                 "tokens. Please shorten it.",
                 m->n_ctx, g->spec.api == SRV_API_CHAT ? "messages" : "prompt", n_prompt);
        gen_fail(g, 400, pparam, "context_length_exceeded", msg);
        return;
    }
    uint32_t room = m->n_ctx - n_prompt;
    if (!g->spec.max_tokens_set) {
        g->spec.gp.max_tokens = g->spec.api == SRV_API_COMPLETION && room > 16 ? 16 : room;
    } else if (g->spec.gp.max_tokens > room) {
        snprintf(msg, sizeof msg,
                 "This model's maximum context length is %u tokens. However, you requested %llu "
                 "tokens (%u in the %s, %u for the completion). Please reduce the length of the "
                 "%s or max_tokens.",
                 m->n_ctx, (unsigned long long)n_prompt + g->spec.gp.max_tokens, n_prompt, pparam,
                 g->spec.gp.max_tokens, pparam);
        gen_fail(g, 400, "max_tokens", "context_length_exceeded", msg);
        return;
    }
    if (!g->spec.seed_set)
        g->spec.gp.sampling.seed =
            mix64(vkpt_now_ns() ^ mix64(g->srv->next_id * 0x9E3779B97F4A7C15ull));
    g->n_choices = g->spec.gp.n;
    /* <tool_call> blocks where the vocabulary has the tag, else JSON answers */
    int tool_fmt =
        vkpt_tokenizer_find(m->tok, "<tool_call>", 11) >= 0 ? SRV_TOOLS_TAGS : SRV_TOOLS_JSON;
    for (uint32_t i = 0; i < g->n_choices; i++) {
        srv_choice *c = &g->ch[i];
        c->tf.fmt = tool_fmt;
        int err = vkpt_detok_create(m->tok, VKPT_DETOK_SKIP_SPECIAL, &c->detok);
        /* Prime the decoder with the prompt so the first generated piece gets
         * the context rules (a leading space after a word) right. */
        vkpt_span ignore;
        for (size_t k = 0; !err && k < g->prompt.n; k++)
            err = vkpt_detok_push(c->detok, g->prompt.ids[k], &ignore);
        if (!err && g->spec.n_stops)
            err = vkpt_stop_create((const char *const *)g->spec.stops, g->spec.n_stops, &c->stop);
        if (!err && g->spec.echo) {
            if (g->spec.prompt) {
                srv_buf_append(&c->text, g->spec.prompt, g->spec.prompt_len);
            } else {
                char *txt = NULL;
                size_t len = 0;
                err = vkpt_tokenizer_decode(m->tok, g->prompt.ids, g->prompt.n, 0, &txt, &len);
                if (!err) srv_buf_append(&c->text, txt, len);
                vkpt_free(txt);
            }
            c->text_total = (uint32_t)c->text.n;
        }
        if (err || !srv_buf_ok(&c->text)) {
            gen_fail(g, 500, NULL, NULL, "out of memory setting up the request");
            return;
        }
    }
    gen_submit(g);
}

/* QUEUED: into `engine`. */
static void gen_submit_to(srv_gen *g, vkpt_engine *engine)
{
    int err = vkpt_engine_submit(engine, g->prompt.ids, (uint32_t)g->prompt.n, &g->spec.gp,
                                 on_engine_event, g, &g->rq);
    if (err) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", vkpt_errmsg(err));
        g->rq = NULL;
        if (err == VKPT_ERANGE)
            gen_fail(g, 400, "max_tokens", "context_length_exceeded", msg);
        else if (err == VKPT_EINVAL)
            gen_fail(g, 400, NULL, "invalid_value", msg);
        else if (err == VKPT_ESTATE || err == VKPT_EDEVLOST)
            gen_fail(g, 503, NULL, "engine_unavailable", msg);
        else
            gen_fail(g, 500, NULL, NULL, msg);
        return;
    }
    g->state = SRV_GEN_QUEUED;
    if (g->spec.stream && g->conn) {
        char hdr[384];
        snprintf(hdr, sizeof hdr, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n%s",
                 g->extra_headers);
        srv_conn_stream_begin(g->conn, 200, "text/event-stream", hdr);
        g->stream_opened = true;
        for (uint32_t i = 0; i < g->n_choices; i++) emit_chunk(g, i, false);
        gen_flush(g);
    }
}

/* Admission first for a provisioned endpoint's model (it may refuse with
 * 429, or park the request until a replica starts). */
static void gen_submit(srv_gen *g)
{
    srv_model *m = g->model;
    vkpt_engine *engine = m->engine;
    if (m->adm) {
        int r = m->adm->admit(g, &engine);
        if (r == SRV_ADMIT_WAIT) {
            g->parked = true;
            return;
        }
        if (r != SRV_ADMIT_GO) return; /* answered and closed */
    }
    gen_submit_to(g, engine);
}

void srv_gen_resume(srv_gen *g, vkpt_engine *engine)
{
    g->parked = false;
    gen_submit_to(g, engine);
}

static void on_gen_closed(uv_handle_t *h)
{
    srv_gen *g = h->data;
    vkpt_server *s = g->srv;
    for (uint32_t i = 0; i < VKPT_MAX_CHOICES; i++) {
        vkpt_detok_destroy(g->ch[i].detok);
        vkpt_stop_destroy(g->ch[i].stop);
        srv_buf_free(&g->ch[i].text);
        vkpt_free(g->ch[i].lps);
        srv_tool_filter_free(&g->ch[i].tf);
        srv_tool_calls_free(&g->ch[i].calls);
    }
    uv_mutex_destroy(&g->mu);
    vkpt_free(g->q);
    vkpt_free(g->q_spare);
    vkpt_free(g->work_msg);
    vkpt_tokens_free(&g->prompt);
    srv_buf_free(&g->out);
    srv_gen_spec_free(&g->spec);
    srv_list_remove(&g->link);
    s->n_gens--;
    vkpt_free(g);
    srv_maybe_finish_drain(s);
}

/* -> CLOSED. The engine handle is released (after DONE, or never
 * submitted); memory goes in the async handle's close callback. */
static void gen_close(srv_gen *g)
{
    if (g->state == SRV_GEN_CLOSED) return;
    g->state = SRV_GEN_CLOSED;
    if (g->conn) {
        srv_conn *conn = g->conn;
        g->conn = NULL;
        conn->gen = NULL;
        answer_error(g, conn, 500, NULL, NULL, "the request ended without an answer", NULL);
    }
    if (g->rq) vkpt_request_release(g->rq);
    g->rq = NULL;
    if (g->adm_started) {
        g->adm_started = false;
        g->model->adm->finish(g); /* may free the model: not used after this */
    }
    uv_close((uv_handle_t *)&g->async, on_gen_closed);
}

/* ---- tokenizing --------------------------------------------------------------- */

static int render_chat(const srv_model *m, const srv_gen_spec *spec, char **text, size_t *len)
{
    cJSON *vars = cJSON_CreateObject();
    cJSON *msgs = cJSON_Duplicate(spec->messages, 1);
    if (!vars || !msgs) goto oom;
    if (m->system_prompt) {
        cJSON *first = cJSON_GetArrayItem(msgs, 0);
        cJSON *role = first ? cJSON_GetObjectItemCaseSensitive(first, "role") : NULL;
        if (!cJSON_IsString(role) || strcmp(role->valuestring, "system")) {
            cJSON *sys = cJSON_CreateObject();
            if (!sys || !cJSON_AddStringToObject(sys, "role", "system") ||
                !cJSON_AddStringToObject(sys, "content", m->system_prompt)) {
                cJSON_Delete(sys);
                goto oom;
            }
            cJSON_InsertItemInArray(msgs, 0, sys);
        }
    }
    if (spec->template_kwargs) {
        for (cJSON *kv = spec->template_kwargs->child; kv; kv = kv->next) {
            cJSON *dup = cJSON_Duplicate(kv, 1);
            if (!dup) goto oom;
            cJSON_AddItemToObject(vars, kv->string, dup);
        }
    }
    cJSON_DeleteItemFromObjectCaseSensitive(vars, "messages");
    cJSON_AddItemToObject(vars, "messages", msgs);
    msgs = NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(vars, "add_generation_prompt");
    cJSON_AddBoolToObject(vars, "add_generation_prompt", spec->add_generation_prompt);
    if (spec->tools_on) {
        cJSON *tools = cJSON_Duplicate(spec->tools, 1);
        if (!tools) goto oom;
        cJSON_DeleteItemFromObjectCaseSensitive(vars, "tools");
        if (!cJSON_AddItemToObject(vars, "tools", tools)) {
            cJSON_Delete(tools);
            goto oom;
        }
    }
    int err;
    if (m->tpl) {
        /* Our own template gets the special-token strings the tokenizer's would. */
        const vkpt_tokenizer_specials *sp = vkpt_tokenizer_get_specials(m->tok);
        const struct {
            const char *name;
            int32_t id;
        } st[] = {{"bos_token", sp->bos},
                  {"eos_token", sp->eos},
                  {"unk_token", sp->unk},
                  {"pad_token", sp->pad}};
        for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
            if (cJSON_GetObjectItemCaseSensitive(vars, st[i].name)) continue;
            vkpt_span t = st[i].id >= 0 ? vkpt_tokenizer_token(m->tok, st[i].id) : (vkpt_span){0};
            char *s = vkpt_strndup(t.p ? t.p : "", t.n);
            if (!s) goto oom;
            cJSON_AddStringToObject(vars, st[i].name, s);
            vkpt_free(s);
        }
        err = vkpt_chat_template_render(m->tpl, vars, text, len);
    } else {
        err = vkpt_tokenizer_apply_chat_template(m->tok, vars, text, len);
    }
    cJSON_Delete(vars);
    return err;
oom:
    cJSON_Delete(vars);
    cJSON_Delete(msgs);
    return vkpt_fail(VKPT_ENOMEM, "out of memory rendering the chat");
}

int srv_gen_tokenize(const srv_model *m, const srv_gen_spec *spec, vkpt_tokens *out,
                     char **msg_take)
{
    int err = 0;
    *msg_take = NULL;
    if (spec->api == SRV_API_COMPLETION) {
        if (spec->prompt_ids) {
            for (size_t i = 0; !err && i < spec->n_prompt_ids; i++)
                err = vkpt_tokens_push(out, spec->prompt_ids[i]);
        } else {
            err = vkpt_tokenizer_encode(m->tok, spec->prompt ? spec->prompt : "", spec->prompt_len,
                                        VKPT_TOK_DEFAULT, out);
        }
    } else {
        char *text = NULL;
        size_t len = 0;
        err = render_chat(m, spec, &text, &len);
        /* The rendered chat carries its own special tokens (BOS, turn markers). */
        if (!err) err = vkpt_tokenizer_encode(m->tok, text, len, VKPT_TOK_PARSE_SPECIAL, out);
        vkpt_free(text);
    }
    if (err) *msg_take = vkpt_strdup(vkpt_errmsg(err));
    return err;
}

static void work_cb(uv_work_t *w)
{
    srv_gen *g = w->data;
    g->work_err = srv_gen_tokenize(g->model, &g->spec, &g->prompt, &g->work_msg);
}

static void after_work_cb(uv_work_t *w, int status)
{
    srv_gen *g = w->data;
    g->work_pending = false;
    if (status == UV_ECANCELED) g->canceled = true;
    gen_tokenized(g);
}

static size_t prompt_bytes(const srv_gen_spec *s)
{
    if (s->api == SRV_API_COMPLETION) return s->prompt_len + s->n_prompt_ids * 4;
    size_t n = 0;
    for (cJSON *m = s->messages ? s->messages->child : NULL; m; m = m->next) {
        cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(c)) n += strlen(c->valuestring);
    }
    return n;
}

/* -> PARSE */
void srv_gen_start(srv_ctx *ctx, srv_model *m, srv_gen_spec *spec, const srv_gen_ops *ops)
{
    vkpt_server *s = ctx->srv;
    srv_gen *g = vkpt_calloc(1, sizeof *g);
    if (g) {
        g->q = vkpt_malloc(QUEUE_INITIAL * sizeof *g->q);
        g->q_spare = vkpt_malloc(QUEUE_INITIAL * sizeof *g->q);
    }
    if (!g || !g->q || !g->q_spare || uv_mutex_init(&g->mu)) {
        if (g) {
            vkpt_free(g->q);
            vkpt_free(g->q_spare);
        }
        vkpt_free(g);
        srv_gen_spec_free(spec);
        srv_conn_error(ctx->conn, 500, NULL, NULL, "out of memory accepting the request");
        return;
    }
    g->q_cap = g->q_spare_cap = QUEUE_INITIAL;
    g->srv = s;
    g->model = m;
    g->ops = ops;
    g->spec = *spec;
    memset(spec, 0, sizeof *spec);
    g->conn = ctx->conn;
    ctx->conn->gen = g;
    g->t_arrival_ns = ctx->conn->t_req_ns;
    g->created = srv_unix_time();
    uint64_t n = ++s->next_id;
    snprintf(g->id, sizeof g->id, "%s%016llx%08llx", ops->id_prefix,
             (unsigned long long)mix64(s->start_ns ^ n), (unsigned long long)n);
    srv_list_init(&g->link);
    srv_list_init(&g->adm_link);
    srv_list_push(&s->gens, &g->link);
    s->n_gens++;
    if (m->adm) {
        g->adm_started = true;
        m->adm->start(g);
    }
    uv_async_init(&s->loop, &g->async, on_async);
    g->async.data = g;
    g->work.data = g;
    if (prompt_bytes(&g->spec) > INLINE_PROMPT_BYTES &&
        uv_queue_work(&s->loop, &g->work, work_cb, after_work_cb) == 0) {
        g->work_pending = true;
        return;
    }
    g->work_err = srv_gen_tokenize(m, &g->spec, &g->prompt, &g->work_msg);
    gen_tokenized(g);
}

void srv_gen_detach(srv_gen *g)
{
    g->conn = NULL;
    g->canceled = true;
    if (g->rq) vkpt_request_cancel(g->rq);
    /* parked for a replica: nothing will wake it, close it now */
    if (g->parked) gen_close(g);
    /* PARSE with work pending: after_work_cb closes it. */
}

void srv_gen_cancel_all(vkpt_server *s)
{
    s->canceling = true; /* and those still tokenizing will not be submitted */
    for (srv_list *n = s->gens.next; n != &s->gens; n = n->next) {
        srv_gen *g = srv_container_of(n, srv_gen, link);
        if (g->rq) vkpt_request_cancel(g->rq);
        /* closing keeps g in s->gens until its handle is closed: safe here */
        if (g->parked)
            srv_gen_fail(g, 503, NULL, "server_shutting_down",
                         "the request was canceled: the server is shutting down", NULL);
    }
}
