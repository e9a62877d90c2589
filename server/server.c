/* Server lifecycle: options, the model registry, the loop thread, signals
 * and the graceful drain; and the operational routes (/health, /ready,
 * /metrics).
 *
 * Drain: stop accepting, close idle connections, let generations finish
 * until the deadline, then cancel them; the loop ends when the last
 * generation has had its DONE (the engine may still call back until then,
 * so nothing it points at is freed earlier) and every handle is closed. */
#include "server_int.h"

#include "embeddings.h"
#include "endpoints.h"
#include "request.h"
#include "router.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Models without a chat template get this: BOS, then the message contents
 * one per line, which suits base and story models. */
static const char fallback_template[] =
    "{{ bos_token }}{% for message in messages %}{% if not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ message['content'] }}{% endfor %}";

int64_t srv_unix_time(void)
{
    return (int64_t)time(NULL);
}

srv_model *srv_model_find(vkpt_server *s, const char *name)
{
    if (!name) return s->n_models ? &s->models[0] : NULL;
    for (size_t i = 0; i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        if (!strcmp(m->id, name)) return m;
        for (size_t k = 0; k < m->n_aliases; k++)
            if (!strcmp(m->aliases[k], name)) return m;
    }
    /* a provisioned endpoint's name (OpenAI routes accept those too) */
    return srv_ep_find_model(s, name);
}

/* ---- create / destroy ---------------------------------------------------------- */

int vkpt_server_create(const vkpt_server_opts *opts, vkpt_server **out)
{
    *out = NULL;
    vkpt_server_opts o = opts ? *opts : (vkpt_server_opts){.port = -1};
    if (o.port < -1 || o.port > 65535)
        return vkpt_fail(VKPT_EINVAL, "port %d is not a TCP port (0..65535)", o.port);
    for (size_t i = 0; i < o.n_api_keys; i++)
        if (!o.api_keys[i] || !o.api_keys[i][0])
            return vkpt_fail(VKPT_EINVAL, "API key %zu is empty", i + 1);
    if (o.port == -1) o.port = 8080;
    if (!o.max_body_bytes) o.max_body_bytes = 8u << 20;
    if (!o.header_timeout_ms) o.header_timeout_ms = 10000;
    if (!o.body_timeout_ms) o.body_timeout_ms = 30000;
    if (!o.idle_timeout_ms) o.idle_timeout_ms = 30000;
    if (!o.shutdown_timeout_ms) o.shutdown_timeout_ms = 30000;
    if (!o.max_connections) o.max_connections = 1024;
    vkpt_server *s = vkpt_calloc(1, sizeof *s);
    if (!s) return vkpt_fail(VKPT_ENOMEM, "server");
    s->o = o;
    s->host = vkpt_strdup(o.host ? o.host : "127.0.0.1");
    s->keys = o.n_api_keys ? vkpt_calloc(o.n_api_keys, sizeof *s->keys) : NULL;
    if (!s->host || (o.n_api_keys && !s->keys)) goto oom;
    for (size_t i = 0; i < o.n_api_keys; i++) {
        if (!(s->keys[i] = vkpt_strdup(o.api_keys[i]))) goto oom;
        s->n_keys = i + 1;
    }
    s->o.host = s->host;
    s->o.api_keys = (const char *const *)s->keys;
    srv_list_init(&s->conns);
    srv_list_init(&s->gens);
    srv_list_init(&s->embeds);
    atomic_init(&s->stop_requested, 0);
    s->start_ns = vkpt_now_ns();
    if (uv_loop_init(&s->loop)) goto oom;
    s->loop_ready = true;
    *out = s;
    return 0;
oom:
    vkpt_server_destroy(s);
    return vkpt_fail(VKPT_ENOMEM, "server options");
}

static void model_free(srv_model *m)
{
    vkpt_free(m->id);
    for (size_t i = 0; i < m->n_aliases; i++) vkpt_free(m->aliases[i]);
    vkpt_free(m->aliases);
    vkpt_chat_template_destroy(m->tpl);
    vkpt_free(m->system_prompt);
}

void srv_model_free_fields(srv_model *m)
{
    model_free(m);
    memset(m, 0, sizeof *m);
}

void vkpt_server_destroy(vkpt_server *s)
{
    if (!s) return;
    if (s->thread_started && !s->joined) {
        vkpt_server_stop(s);
        vkpt_server_wait(s);
    }
    if (s->loop_ready) {
        /* handles left from a failed start */
        if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
            uv_close((uv_handle_t *)&s->listener, NULL);
        uv_run(&s->loop, UV_RUN_NOWAIT);
        if (uv_loop_close(&s->loop)) VKPT_LOGW("server: the event loop still had handles open");
    }
    srv_ep_destroy(s); /* replicas and their engines: nothing calls back any more */
    for (size_t i = 0; i < s->n_models; i++) model_free(&s->models[i]);
    vkpt_free(s->models);
    for (size_t i = 0; i < s->n_keys; i++) vkpt_free(s->keys[i]);
    vkpt_free(s->keys);
    vkpt_free(s->host);
    srv_http_metrics_free(&s->http_metrics);
    vkpt_free(s);
}

/* ---- models ----------------------------------------------------------------------- */

static bool name_taken(vkpt_server *s, const char *name)
{
    return srv_model_find(s, name) != NULL;
}

int srv_model_init_fields(srv_model *m, const char *id, const vkpt_tokenizer *tok, uint32_t n_ctx,
                          const char *chat_template, const char *system_prompt)
{
    memset(m, 0, sizeof *m);
    m->tok = tok;
    m->n_ctx = n_ctx;
    int32_t tv = vkpt_tokenizer_n_vocab(tok);
    m->n_vocab = tv > 0 ? (uint32_t)tv : 0;
    m->created = srv_unix_time();
    srv_model_metrics_init(&m->m);
    if (!(m->id = vkpt_strdup(id))) return vkpt_fail(VKPT_ENOMEM, "model");
    if (system_prompt && !(m->system_prompt = vkpt_strdup(system_prompt))) {
        srv_model_free_fields(m);
        return vkpt_fail(VKPT_ENOMEM, "model");
    }
    int err = 0;
    if (chat_template)
        err = vkpt_chat_template_create(chat_template, strlen(chat_template), &m->tpl);
    else if (!vkpt_tokenizer_chat_template(tok))
        err = vkpt_chat_template_create(fallback_template, sizeof fallback_template - 1, &m->tpl);
    if (err) srv_model_free_fields(m);
    return err;
}

/* A registry entry over an engine or (engine NULL) an embedder. */
static int add_entry(vkpt_server *s, const char *id, vkpt_engine *engine, vkpt_embedder *embedder,
                     const vkpt_server_model_opts *opts)
{
    static const vkpt_server_model_opts none = {0};
    if (!opts) opts = &none;
    if (!s || (!engine && !embedder) || !id || !id[0])
        return vkpt_fail(VKPT_EINVAL, "add_model needs a server, an engine and a model id");
    if (s->state != SRV_NEW) return vkpt_fail(VKPT_ESTATE, "models are added before start");
    if (name_taken(s, id)) return vkpt_fail(VKPT_EEXISTS, "model name \"%s\" is taken", id);
    for (size_t i = 0; i < opts->n_aliases; i++)
        if (opts->aliases[i] && strcmp(opts->aliases[i], id) && name_taken(s, opts->aliases[i]))
            return vkpt_fail(VKPT_EEXISTS, "model name \"%s\" is taken", opts->aliases[i]);
    srv_model *arr = vkpt_realloc(s->models, (s->n_models + 1) * sizeof *arr);
    if (!arr) return vkpt_fail(VKPT_ENOMEM, "model registry");
    s->models = arr;
    srv_model *m = &s->models[s->n_models];
    memset(m, 0, sizeof *m);
    m->engine = engine;
    m->embedder = embedder;
    m->model = engine ? vkpt_engine_model(engine) : vkpt_embedder_model(embedder);
    m->tok = vkpt_model_tokenizer(m->model);
    const vkpt_model_info *info = vkpt_model_get_info(m->model);
    uint32_t train = info->n_ctx_train ? info->n_ctx_train : 4096;
    m->n_ctx = opts->n_ctx ? opts->n_ctx : (train < 4096 ? train : 4096);
    if (embedder) m->n_ctx = vkpt_embedder_max_seq_len(embedder);
    int32_t tv = vkpt_tokenizer_n_vocab(m->tok);
    m->n_vocab = tv > 0 && (uint32_t)tv < info->n_vocab ? (uint32_t)tv : info->n_vocab;
    m->created = srv_unix_time();
    srv_model_metrics_init(&m->m);
    int err = 0;
    if (!(m->id = vkpt_strdup(id))) goto oom;
    if (opts->n_aliases) {
        if (!(m->aliases = vkpt_calloc(opts->n_aliases, sizeof *m->aliases))) goto oom;
        for (size_t i = 0; i < opts->n_aliases; i++) {
            if (!opts->aliases[i] || !strcmp(opts->aliases[i], id)) continue;
            if (!(m->aliases[m->n_aliases] = vkpt_strdup(opts->aliases[i]))) goto oom;
            m->n_aliases++;
        }
    }
    if (opts->system_prompt && !(m->system_prompt = vkpt_strdup(opts->system_prompt))) goto oom;
    if (opts->chat_template) {
        err = vkpt_chat_template_create(opts->chat_template, strlen(opts->chat_template), &m->tpl);
        if (err) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", vkpt_errmsg(err));
            model_free(m);
            return vkpt_fail(err, "chat template: %s", msg);
        }
    } else if (engine && !vkpt_tokenizer_chat_template(m->tok)) {
        err = vkpt_chat_template_create(fallback_template, sizeof fallback_template - 1, &m->tpl);
        if (err) {
            model_free(m);
            return err;
        }
        VKPT_LOGI("server: %s has no chat template; chats are its messages one per line", id);
    }
    s->n_models++;
    return 0;
oom:
    model_free(m);
    return vkpt_fail(VKPT_ENOMEM, "model registry");
}

int vkpt_server_add_model(vkpt_server *s, const char *id, vkpt_engine *engine,
                          const vkpt_server_model_opts *opts)
{
    if (!engine) return vkpt_fail(VKPT_EINVAL, "add_model needs an engine");
    return add_entry(s, id, engine, NULL, opts);
}

int vkpt_server_add_embedder(vkpt_server *s, const char *id, vkpt_embedder *embedder,
                             const vkpt_server_model_opts *opts)
{
    if (!embedder) return vkpt_fail(VKPT_EINVAL, "add_embedder needs an embedder");
    return add_entry(s, id, NULL, embedder, opts);
}

/* ---- loop, signals, drain ------------------------------------------------------------ */

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void srv_maybe_finish_drain(vkpt_server *s)
{
    if (s->state != SRV_DRAINING || s->n_gens) return;
    srv_http_close_all(s);
    s->state = SRV_STOPPED;
    srv_ep_stop(s);
    uv_timer_stop(&s->drain_timer);
    close_handle((uv_handle_t *)&s->drain_timer);
    close_handle((uv_handle_t *)&s->stop_async);
    if (s->o.handle_signals) {
        close_handle((uv_handle_t *)&s->sigint);
        close_handle((uv_handle_t *)&s->sigterm);
    }
    VKPT_LOGI("server: stopped");
}

static void on_drain_deadline(uv_timer_t *t)
{
    vkpt_server *s = t->data;
    if (s->n_gens)
        VKPT_LOGW("server: %zu requests still running at the shutdown deadline; canceling them",
                  s->n_gens);
    srv_gen_cancel_all(s);
    srv_embed_cancel_all(s);
}

static void begin_drain(vkpt_server *s)
{
    if (s->state != SRV_RUNNING) return;
    s->state = SRV_DRAINING;
    VKPT_LOGI("server: shutting down: no new connections; %zu requests in flight (deadline %u ms)",
              s->n_gens, s->o.shutdown_timeout_ms);
    srv_http_stop_accepting(s);
    uv_timer_start(&s->drain_timer, on_drain_deadline, s->o.shutdown_timeout_ms, 0);
    srv_maybe_finish_drain(s);
}

static void handle_stop(vkpt_server *s)
{
    int n = atomic_load(&s->stop_requested);
    begin_drain(s);
    if (n >= 2 && s->state == SRV_DRAINING) {
        VKPT_LOGW("server: second stop request: canceling %zu requests now", s->n_gens);
        srv_gen_cancel_all(s);
        srv_embed_cancel_all(s);
    }
}

static void on_stop_async(uv_async_t *a)
{
    handle_stop(a->data);
}

static void on_signal(uv_signal_t *h, int signum)
{
    vkpt_server *s = h->data;
    atomic_fetch_add(&s->stop_requested, 1);
    VKPT_LOGI("server: %s received", signum == SIGINT ? "SIGINT" : "SIGTERM");
    handle_stop(s);
}

static void loop_thread(void *arg)
{
    vkpt_server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

int vkpt_server_start(vkpt_server *s)
{
    if (!s || s->state != SRV_NEW) return vkpt_fail(VKPT_ESTATE, "the server was started already");
    if (!s->n_models && !srv_ep_enabled(s))
        return vkpt_fail(VKPT_EINVAL, "the server has no model to serve");
    /* A peer closing its socket must be an error code, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    int err = srv_http_listen(s);
    if (err) return err;
    if ((err = srv_ep_start(s))) return err;
    uv_async_init(&s->loop, &s->stop_async, on_stop_async);
    s->stop_async.data = s;
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    if (s->o.handle_signals) {
        uv_signal_init(&s->loop, &s->sigint);
        uv_signal_init(&s->loop, &s->sigterm);
        s->sigint.data = s->sigterm.data = s;
        uv_signal_start(&s->sigint, on_signal, SIGINT);
        uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    }
    s->state = SRV_RUNNING;
    if (uv_thread_create(&s->thread, loop_thread, s)) {
        s->state = SRV_NEW;
        return vkpt_fail(VKPT_ENOMEM, "cannot start the server thread");
    }
    s->thread_started = true;
    for (size_t i = 0; i < s->n_models; i++)
        VKPT_LOGI("server: serving %s (context %u) on http://%s%s%s:%d", s->models[i].id,
                  s->models[i].n_ctx, strchr(s->host, ':') ? "[" : "", s->host,
                  strchr(s->host, ':') ? "]" : "", s->port);
    return 0;
}

int vkpt_server_port(const vkpt_server *s)
{
    return s ? s->port : 0;
}

void vkpt_server_stop(vkpt_server *s)
{
    if (!s || !s->thread_started) return;
    atomic_fetch_add(&s->stop_requested, 1);
    uv_async_send(&s->stop_async);
}

int vkpt_server_wait(vkpt_server *s)
{
    if (!s || !s->thread_started || s->joined) return 0;
    uv_thread_join(&s->thread);
    s->joined = true;
    return s->exit_err;
}

/* ---- operational routes ------------------------------------------------------------------- */

static bool any_device_lost(vkpt_server *s)
{
    for (size_t i = 0; i < s->n_models; i++) {
        if (s->models[i].embedder) {
            vkpt_embedder_stats es;
            vkpt_embedder_get_stats(s->models[i].embedder, &es);
            if (es.device_lost) return true;
            continue;
        }
        vkpt_engine_stats st;
        vkpt_engine_get_stats(s->models[i].engine, &st);
        if (st.device_lost) return true;
    }
    return false;
}

void srv_h_health(srv_ctx *ctx)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char lost[] = "{\"status\":\"error\",\"message\":\"a GPU device was lost; "
                               "requests on it fail\"}";
    if (any_device_lost(ctx->srv))
        srv_conn_respond(ctx->conn, 503, "application/json", NULL, lost, sizeof lost - 1);
    else
        srv_conn_respond(ctx->conn, 200, "application/json", NULL, ok, sizeof ok - 1);
}

void srv_h_ready(srv_ctx *ctx)
{
    vkpt_server *s = ctx->srv;
    const char *why = s->state != SRV_RUNNING ? "draining"
                      : any_device_lost(s)    ? "device_lost"
                                              : NULL;
    srv_buf b = {0};
    srv_buf_printf(&b, "{\"status\":\"%s\",\"models\":[", why ? why : "ready");
    for (size_t i = 0; i < s->n_models; i++) {
        if (i) srv_buf_puts(&b, ",");
        srv_buf_json_str(&b, s->models[i].id, strlen(s->models[i].id));
    }
    srv_buf_puts(&b, "]}");
    if (srv_buf_ok(&b))
        srv_conn_respond(ctx->conn, why ? 503 : 200, "application/json", NULL, b.p, b.n);
    else
        srv_conn_error(ctx->conn, 500, NULL, NULL, "out of memory");
    srv_buf_free(&b);
}

void srv_h_metrics(srv_ctx *ctx)
{
    srv_buf b = {0};
    srv_metrics_render(ctx->srv, &b);
    if (srv_buf_ok(&b))
        srv_conn_respond(ctx->conn, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
                         b.p ? b.p : "", b.n);
    else
        srv_conn_error(ctx->conn, 500, NULL, NULL, "out of memory rendering metrics");
    srv_buf_free(&b);
}
