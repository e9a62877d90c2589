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
 * at the drain deadline). */
#ifndef VKPT_SERVER_EMBEDDINGS_H
#define VKPT_SERVER_EMBEDDINGS_H

#include "router.h"

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

/* The handler is srv_h_embeddings (router.h). The connection is closing: write nothing more, cancel in the embedder. */
void srv_embed_detach(srv_embed *e);

#endif
