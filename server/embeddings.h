/* POST /v1/embeddings: OpenAI's embeddings API over an embedder
 * (include/vkpt/embed.h).
 *
 * A request is a small state machine like a generation's (request.h):
 *   PARSE    validated body; texts tokenized (inline, or on libuv's thread
 *            pool for large bodies)
 *   QUEUED   every input submitted to the embedder (they batch there with
 *            other clients' inputs)
 *   DONE     the last input's callback: the whole answer is written
 *   CLOSED   embedder handles released, async handle closed, memory freed
 * The embedder's callbacks run on its worker thread and only copy the
 * vector into the request's slot under its mutex; the last one wakes the
 * loop with uv_async_send (inside the lock, so the loop sees a complete
 * request). A client that disconnects detaches the request and cancels its
 * inputs in the embedder; it closes when the last callback has arrived.
 * While in flight a request counts in the server's n_gens, so a graceful
 * stop waits for it (embeddings finish in one step; they are not canceled
 * at the drain deadline).
 *
 * A provisioned endpoint's model (srv_model.adm, endpoints.h) has no
 * embedder of its own: once the inputs are tokenized, admission charges
 * their tokens to the endpoint and picks a replica's embedder (GO), or
 * refuses (429 over max), or parks the request until a replica starts
 * (WAIT, then srv_embed_resume or srv_embed_fail). */
#ifndef VKPT_SERVER_EMBEDDINGS_H
#define VKPT_SERVER_EMBEDDINGS_H

#include "router.h"
#include "util.h"
#include "vkpt/embed.h"

#include <stddef.h>
#include <stdint.h>

typedef struct srv_embed srv_embed;

/* Limits of the API (OpenAI's). */
#define SRV_EMBED_MAX_INPUTS 2048

/* A validated embeddings request body (pure: no model needed), for the
 * handler and the unit tests. */
typedef struct srv_embed_spec {
    char *model;       /* requested name; NULL: the default model */
    bool base64;       /* encoding_format "base64" */
    uint32_t dims;     /* "dimensions"; 0: all */
    int pooling;       /* vkpt extension "pooling": enum vkpt_pooling (0: the model's) */
    int normalize;     /* vkpt extension "normalize": enum vkpt_normalize (0: the model's) */
    uint32_t n_inputs; /* 1..SRV_EMBED_MAX_INPUTS */
    char **texts;      /* [n_inputs] when the inputs are strings, else NULL */
    size_t *text_lens; /* [n_inputs] */
    int32_t **ids;     /* [n_inputs] when the inputs are token ids, else NULL */
    uint32_t *n_ids;   /* [n_inputs] */
} srv_embed_spec;

/* Parse and validate a body. 0 and `out` filled (free with
 * srv_embed_spec_free), or a negative code with status/param/code/message
 * for the answer (out left empty). */
int srv_embed_parse(const char *body, size_t n, srv_embed_spec *out, int *status, char *param,
                    size_t param_cap, const char **code, char *msg, size_t msg_cap);
void srv_embed_spec_free(srv_embed_spec *s);

/* JSON of n little-endian f32 values as base64 (RFC 4648, padded), appended
 * to `out`. */
void srv_base64_f32(srv_buf *out, const float *v, size_t n);

/* What a provisioned endpoint's admission keeps on an embeddings request
 * (endpoints_rt.c; loop thread). */
typedef struct srv_embed_adm {
    srv_embed *req;
    struct srv_model *model;
    srv_list link;           /* the served entity's parked requests */
    void *replica;           /* the replica admission chose */
    double charged;          /* tokens charged to the endpoint's bucket */
    uint32_t tokens;         /* the inputs' tokens (the charge) */
    uint32_t tokens_done;    /* embedded, known at finish */
    uint64_t wait_ns;        /* when it began to wait for a replica; a duration once resumed */
    uint64_t queue_ns;       /* its longest input's time in the embedder's queue */
    char extra_headers[256]; /* response header lines ("served-model-name: ...") */
} srv_embed_adm;

/* Answer ctx's request with embeddings from model `m`; takes `spec` over (it
 * is zeroed). `db_errors`: errors are Databricks-shaped (the invocations
 * route). Errors are answered here. */
void srv_embed_start(srv_ctx *ctx, struct srv_model *m, srv_embed_spec *spec, bool db_errors);
/* A parked request got its replica: submit its inputs to `emb`. */
void srv_embed_resume(srv_embed *e, vkpt_embedder *emb);
/* Answer an error for a request in no embedder (refused or parked by
 * admission), then close it. `extra_headers` is NULL or header lines. */
void srv_embed_fail(srv_embed *e, int status, const char *code, const char *msg,
                    const char *extra_headers);

/* The handler is srv_h_embeddings (router.h). The connection is closing:
 * write nothing more, cancel in the embedder. */
void srv_embed_detach(srv_embed *e);
/* The drain deadline: cancel every embedding request in an embedder; those
 * parked for a replica are answered 503 and closed. */
void srv_embed_cancel_all(vkpt_server *s);

#endif
