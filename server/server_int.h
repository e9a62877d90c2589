/* The server's shared state: the vkpt_server struct, the model registry and
 * the declarations the modules share. Loop-thread only unless a field says
 * otherwise. */
#ifndef VKPT_SERVER_INT_H
#define VKPT_SERVER_INT_H

#include "vkpt/embed.h"
#include "vkpt/server.h"
#include "vkpt/tokenizer.h"

#include "http.h"
#include "metrics.h"
#include "util.h"

#include <stdatomic.h>
#include <uv.h>

/* One servable model: an engine and what the API layer needs about it. The
 * registry maps names (id and aliases) to these; endpoints of later APIs map
 * onto the same entries (srv_model_find). */
typedef struct srv_model {
    char *id;
    char **aliases;
    size_t n_aliases;
    vkpt_engine *engine;     /* NULL for an embedding model */
    vkpt_embedder *embedder; /* NULL for a generative model (embeddings.c) */
    const vkpt_model *model;
    const vkpt_tokenizer *tok;
    vkpt_chat_template *tpl; /* our own (override or fallback); NULL: the tokenizer's */
    char *system_prompt;
    uint32_t n_ctx, n_vocab;
    int64_t created; /* unix seconds when added */
    srv_model_metrics m;
    /* a provisioned endpoint's served entity: admission decides the engine
     * (engine is NULL then); NULL for a model served directly */
    const struct srv_admission *adm;
    void *adm_ud;
} srv_model;

enum srv_state { SRV_NEW = 0, SRV_RUNNING, SRV_DRAINING, SRV_STOPPED };

struct vkpt_server {
    vkpt_server_opts o; /* strings below are our copies */
    char *host;
    char **keys;
    size_t n_keys;
    srv_model *models;
    size_t n_models;

    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t stop_async; /* vkpt_server_stop from any thread or a signal */
    uv_signal_t sigint, sigterm;
    uv_timer_t drain_timer;
    uv_thread_t thread;
    bool loop_ready, listening, thread_started, joined;
    int port;
    int state;                 /* enum srv_state */
    bool canceling;            /* past the drain deadline: generations are canceled */
    atomic_int stop_requested; /* count of stop requests (signals) */
    int exit_err;

    srv_list conns;
    size_t n_conns;
    srv_list gens;   /* generations not yet closed */
    srv_list embeds; /* embedding requests not yet closed */
    size_t n_gens;   /* both */
    uint64_t next_id;
    uint64_t start_ns;

    srv_http_metrics http_metrics;
    struct srv_ep *ep; /* provisioned endpoints (endpoints.h), NULL when not enabled */
    char readbuf[64 * 1024];
};

/* Find the model served under `name` (id or alias); NULL name: the default
 * (first) model. NULL when unknown. */
srv_model *srv_model_find(vkpt_server *s, const char *name);

/* Called when a request's answer is complete or a generation closed, so a
 * drain can finish. */
void srv_maybe_finish_drain(vkpt_server *s);

/* Time since the Unix epoch, seconds. */
int64_t srv_unix_time(void);

/* Fill a model entry that is not in s->models (a provisioned endpoint's
 * served entity): id, tokenizer, context, chat template (override, the
 * tokenizer's, or the plain fallback), system prompt, metrics. Free with
 * srv_model_free_fields. */
int srv_model_init_fields(srv_model *m, const char *id, const vkpt_tokenizer *tok, uint32_t n_ctx,
                          const char *chat_template, const char *system_prompt);
void srv_model_free_fields(srv_model *m);

#endif
