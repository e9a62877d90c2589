/* A generation request: the state machine that answers one completion or
 * chat completion over an engine.
 *
 *   PARSE    validated spec; rendering the chat template and tokenizing
 *            (inline, or on libuv's thread pool for large prompts)
 *   QUEUED   submitted to the engine (prefill happens inside the engine)
 *   DECODE   tokens arriving: detokenize, stop strings, logprobs, stream
 *   DONE     the engine's DONE event: final chunk or whole response
 *   CLOSED   engine handle released, async handle closed, memory freed
 *
 * One function per transition (gen_tokenized, gen_submit, gen_on_token,
 * gen_on_done, gen_close). The engine callback runs on the engine thread and
 * only appends the event to this request's queue under its mutex and wakes
 * the loop with uv_async_send (inside the lock, so the DONE post is complete
 * before the loop can see DONE and free the request); everything else runs
 * on the loop thread. A client that disconnects detaches the request, which
 * cancels it in the engine; it closes when its DONE arrives. */
#ifndef VKPT_SERVER_REQUEST_H
#define VKPT_SERVER_REQUEST_H

#include "router.h"
#include "server_int.h"
#include "toolcall.h"

#include <cjson/cJSON.h>

enum srv_api { SRV_API_CHAT = 0, SRV_API_COMPLETION = 1 };

/* A validated generation request (openai.c fills it). */
typedef struct srv_gen_spec {
    int api;     /* enum srv_api */
    char *model; /* requested name; NULL: the default model */
    bool stream, include_usage;
    bool echo;          /* completions: prepend the prompt to the text */
    vkpt_gen_params gp; /* gp.sampling.bias points into `bias` */
    vkpt_logit_edit *bias;
    bool max_tokens_set; /* else: the rest of the context (chat) or 16 (completions) */
    bool seed_set;
    char **stops;
    size_t n_stops;
    /* chat */
    cJSON *messages;        /* [{role, content: string[, name]}] */
    cJSON *template_kwargs; /* extra template variables, or NULL */
    bool add_generation_prompt;
    cJSON *tools;  /* [{type: "function", function: {name, ...}}], or NULL */
    bool tools_on; /* tools given and tool_choice is not "none": rendered and parsed */
    /* completions: text or token ids */
    char *prompt;
    size_t prompt_len;
    int32_t *prompt_ids;
    size_t n_prompt_ids;
    /* errors answered Databricks-shaped (the serving-endpoints routes) */
    bool db_errors;
} srv_gen_spec;
void srv_gen_spec_free(srv_gen_spec *s);

/* One generated token's log-probabilities. */
typedef struct srv_lp {
    int32_t id;
    float logprob;
    uint32_t n_top;
    uint32_t text_offset; /* completions: where its text starts in the choice's text */
    int32_t top_ids[VKPT_MAX_TOP_LOGPROBS];
    float top_lp[VKPT_MAX_TOP_LOGPROBS];
} srv_lp;

enum srv_finish {
    SRV_FINISH_NONE = 0,
    SRV_FINISH_STOP,
    SRV_FINISH_LENGTH,
    SRV_FINISH_TOOL_CALLS,
    SRV_FINISH_ABORT
};

typedef struct srv_choice {
    vkpt_detok *detok;
    vkpt_stop *stop;
    srv_buf text; /* streaming: not yet sent; else all of it */
    srv_lp *lps;  /* likewise */
    size_t n_lps, cap_lps;
    uint32_t n_tokens;    /* tokens taken (up to the stop string) */
    uint32_t text_total;  /* bytes of text produced so far */
    int finish;           /* enum srv_finish */
    bool ended;           /* a stop string matched: later tokens are dropped */
    bool started;         /* streaming: the first chunk was sent */
    uint64_t last_ns;     /* arrival of the previous token */
    srv_tool_filter tf;   /* spec.tools_on: text held back as a possible tool call */
    srv_tool_calls calls; /* the tool calls found at the end */
} srv_choice;

enum srv_gen_state {
    SRV_GEN_PARSE = 0,
    SRV_GEN_QUEUED,
    SRV_GEN_DECODE,
    SRV_GEN_DONE,
    SRV_GEN_CLOSED
};

typedef struct srv_gen_event {
    vkpt_gen_event ev;
    uint64_t t_ns; /* when the engine posted it */
} srv_gen_event;

typedef struct srv_gen srv_gen;

/* How one API writes its answers. */
typedef struct srv_gen_ops {
    const char *id_prefix; /* "chatcmpl-", "cmpl-" */
    /* streaming: a chunk with choice `i`'s pending text and logprobs, and its
     * finish_reason when `final`. */
    void (*chunk)(srv_gen *g, uint32_t i, bool final, srv_buf *out);
    /* streaming: the usage chunk (stream_options.include_usage). */
    void (*usage_chunk)(srv_gen *g, srv_buf *out);
    /* the whole non-streaming answer */
    void (*body)(srv_gen *g, srv_buf *out);
} srv_gen_ops;

struct srv_gen {
    srv_list link; /* srv->gens */
    vkpt_server *srv;
    srv_model *model;
    srv_conn *conn; /* NULL once the client is gone */
    int state;      /* enum srv_gen_state */
    const srv_gen_ops *ops;
    srv_gen_spec spec;
    char id[48];
    int64_t created;
    vkpt_tokens prompt;
    vkpt_request *rq;
    bool canceled;      /* client gone or server deadline: no answer is written */
    bool work_pending;  /* tokenizing on the thread pool */
    bool stream_opened; /* streaming headers sent */
    uv_work_t work;
    int work_err;
    char *work_msg; /* error detail from the worker */

    /* engine -> loop hand-off; `mu` guards q */
    uv_async_t async;
    uv_mutex_t mu;
    srv_gen_event *q, *q_spare;
    size_t q_n, q_cap, q_spare_cap;
    bool q_oom; /* an event was dropped (engine side, under mu) */
    bool oom;   /* loop side: an event or a buffer was lost; the request fails */

    srv_choice ch[VKPT_MAX_CHOICES];
    uint32_t n_choices;
    uint32_t prompt_tokens, cached_tokens, completion_tokens;
    uint64_t t_arrival_ns, t_first_ns;
    bool got_first;
    srv_buf out; /* bytes for the socket, written once per drain */

    /* a provisioned endpoint's request (model->adm, endpoints.h) */
    bool adm_started;        /* model->adm->start was called; finish is due */
    bool parked;             /* waiting for a replica (cold start): in no engine yet */
    srv_list adm_link;       /* the served entity's list of parked requests */
    void *adm_replica;       /* the replica admission chose */
    double adm_charged;      /* tokens charged to the endpoint's bucket */
    uint64_t adm_wait_ns;    /* when it began to wait for a replica, 0 if it did not */
    uint64_t adm_queue_ns;   /* its engine queue time (from DONE) */
    char extra_headers[256]; /* response header lines from admission ("served-model-name: ...") */
};

/* Answer ctx's request with a generation over model `m`; takes `spec` over
 * (it is zeroed). Errors are answered here. */
void srv_gen_start(srv_ctx *ctx, srv_model *m, srv_gen_spec *spec, const srv_gen_ops *ops);
/* The connection is closing: write nothing more, cancel in the engine. */
void srv_gen_detach(srv_gen *g);
/* Cancel every generation (the drain deadline). */
void srv_gen_cancel_all(vkpt_server *s);
/* Answer an error for a request that is in no engine (refused or parked
 * by admission), then close it. `extra_headers` is NULL or header lines. */
void srv_gen_fail(srv_gen *g, int status, const char *param, const char *code, const char *msg,
                  const char *extra_headers);
/* A parked request got its replica: submit it to `engine`. */
void srv_gen_resume(srv_gen *g, vkpt_engine *engine);

/* Render a chat for model `m` as its template does (system prompt added,
 * generation prompt per spec) and tokenize it; or tokenize a completion
 * prompt. Thread-safe (runs on the pool). `msg` gets a detail on error. */
int srv_gen_tokenize(const srv_model *m, const srv_gen_spec *spec, vkpt_tokens *out,
                     char **msg_take);

#endif
