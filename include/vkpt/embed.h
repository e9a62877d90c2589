/* vkpt embeddings: an embedder is one encoder model (BERT/BGE, GTE v1.5,
 * nomic-bert) on one device queue, with a worker thread that batches the
 * sequences of every client into steps (continuous batching for encoders:
 * as many whole sequences as fit the step's token budget) and pools each
 * sequence's hidden states into one vector on the GPU (CLS, mean or last
 * token; optional L2 normalisation; optional truncation to fewer dims).
 *
 * The threading and ownership contract is include/vkpt/engine.h's: the
 * caller submits from any thread and gets exactly one callback per request,
 * which runs ON THE WORKER THREAD and must not block (copy the vector, wake
 * your own loop). The embedder never touches sockets.
 *
 * Request lifetime: submit -> one callback (the vector, or an error, or
 * canceled) -> vkpt_embed_request_release by the submitter, after the
 * callback (or before it, to give up: the request is then canceled and
 * freed by the worker). Cancel is allowed any time before release.
 */
#ifndef VKPT_EMBED_H
#define VKPT_EMBED_H

#include "vkpt/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How a sequence's hidden states become one vector. */
enum vkpt_pooling {
    VKPT_POOLING_DEFAULT = 0, /* the embedder's default (see vkpt_embedder_opts) */
    VKPT_POOLING_CLS = 1,     /* the first token's state ([CLS]) */
    VKPT_POOLING_MEAN = 2,    /* the mean over the sequence's tokens */
    VKPT_POOLING_LAST = 3,    /* the last token's state */
};
/* "cls", "mean", "last" (and "default"); "?" for others. */
const char *vkpt_pooling_name(int pooling);
/* By name (as above, case-sensitive); -1 when unknown. */
int vkpt_pooling_by_name(const char *name);

enum vkpt_normalize {
    VKPT_NORMALIZE_DEFAULT = 0, /* the embedder's default */
    VKPT_NORMALIZE_ON = 1,      /* divide by the L2 norm (of the dims returned) */
    VKPT_NORMALIZE_OFF = 2,     /* return the pooled vector as is */
};

typedef struct vkpt_embedder vkpt_embedder;
typedef struct vkpt_embed_request vkpt_embed_request;
/* The device arbiter of include/vkpt/engine.h (vkpt_arbiter_create). */
typedef struct vkpt_arbiter vkpt_arbiter;

typedef struct vkpt_embedder_opts {
    /* Longest input in tokens (0: the model's max_position_embeddings /
     * context_length, at most 8192). Longer inputs are refused. */
    uint32_t max_seq_len;
    /* Tokens one step takes across sequences (0: 2048; raised to
     * max_seq_len). Scratch memory grows with it. */
    uint32_t max_batch_tokens;
    uint32_t max_seqs; /* sequences per step (0: 64) */
    uint32_t queue;    /* device compute queue */
    /* Defaults for requests that leave pooling / normalisation to the
     * embedder: VKPT_POOLING_DEFAULT / VKPT_NORMALIZE_DEFAULT take the
     * model's own (vkpt_model_info.pooling / .normalize, from its files). */
    int pooling;
    int normalize;
    /* Every projection uses the same kernel whatever the batch: a vector
     * does not depend on what else was in its step. */
    bool batch_invariant;
    /* Share the device with engines and other embedders (NULL: run steps
     * freely). Each step is taken as a turn under the arbiter and counts
     * its input tokens, as an engine's steps count theirs: with every
     * member busy, this embedder gets weight / sum(weights) of the tokens
     * the device processes. */
    vkpt_arbiter *arbiter;
    double weight; /* share under the arbiter (> 0; provisioned tokens/s) */
} vkpt_embedder_opts;

/* Create the embedder over a loaded encoder model (vkpt_model_info.causal
 * false) and start its worker thread. The model must outlive it.
 * VKPT_EUNSUPPORTED for a causal model; VKPT_EDEVMEM when the scratch for
 * max_batch_tokens does not fit. */
int vkpt_embedder_create(vkpt_model *m, const vkpt_embedder_opts *opts, vkpt_embedder **out);
/* Stop the worker: queued requests get their callback with canceled set
 * first. Accepts NULL. */
void vkpt_embedder_destroy(vkpt_embedder *e);
const vkpt_model *vkpt_embedder_model(const vkpt_embedder *e);
/* The vector length (n_embd) and the longest input accepted. */
uint32_t vkpt_embedder_dim(const vkpt_embedder *e);
uint32_t vkpt_embedder_max_seq_len(const vkpt_embedder *e);
/* Change the embedder's share under its arbiter (no effect without one). */
void vkpt_embedder_set_weight(vkpt_embedder *e, double weight);
/* The pooling and normalisation a request with DEFAULT gets (never DEFAULT). */
int vkpt_embedder_default_pooling(const vkpt_embedder *e);
bool vkpt_embedder_default_normalize(const vkpt_embedder *e);

typedef struct vkpt_embed_params {
    int pooling;   /* enum vkpt_pooling */
    int normalize; /* enum vkpt_normalize */
    uint32_t dims; /* leading dims returned (Matryoshka truncation); 0: all */
} vkpt_embed_params;

typedef struct vkpt_embed_result {
    int err;           /* 0, or VKPT_E* when the step failed (VKPT_EDEVLOST, ...) */
    bool canceled;     /* canceled before it ran (vec is NULL) */
    const float *vec;  /* [dims]; valid only during the callback; NULL on error */
    uint32_t dims;     /* elements of vec */
    uint32_t n_tokens; /* the input's length */
    int pooling;       /* what was applied (never DEFAULT) */
    bool normalized;
    uint64_t queued_ns, done_ns; /* submit -> its step began; submit -> callback */
} vkpt_embed_result;

/* Runs on the worker thread; must not block or call back into the
 * embedder (except vkpt_embed_request_cancel). */
typedef void (*vkpt_embed_cb)(const vkpt_embed_result *r, void *ud);

/* Queue one input (token ids, copied; the model's special tokens such as
 * [CLS]/[SEP] included: vkpt_tokenizer_encode with VKPT_TOK_ADD_SPECIAL adds
 * them). Fails fast, with no callback, with VKPT_EINVAL (empty input, a
 * token id outside the vocabulary, a bad pooling/normalize/dims value),
 * VKPT_ERANGE (longer than max_seq_len) or VKPT_ESTATE (stopping, or the
 * device was lost). */
int vkpt_embedder_submit(vkpt_embedder *e, const int32_t *tokens, uint32_t n_tokens,
                         const vkpt_embed_params *p, vkpt_embed_cb cb, void *ud,
                         vkpt_embed_request **out);
/* Ask the worker to drop this request if it has not run yet (thread-safe,
 * idempotent). */
void vkpt_embed_request_cancel(vkpt_embed_request *rq);
/* The submitter is done with the handle (after its callback, or before it
 * to give up). Accepts NULL. */
void vkpt_embed_request_release(vkpt_embed_request *rq);

typedef struct vkpt_embedder_stats {
    uint32_t queued;          /* waiting for a step */
    uint64_t requests_done;   /* callbacks with a vector */
    uint64_t requests_failed; /* callbacks with err */
    uint64_t requests_canceled;
    uint64_t tokens; /* input tokens embedded */
    uint64_t steps;
    bool device_lost;
} vkpt_embedder_stats;
void vkpt_embedder_get_stats(vkpt_embedder *e, vkpt_embedder_stats *out);

/* Embed n_inputs inputs and wait: submits them all (they batch together
 * like any clients' requests) and writes vector i (p->dims floats, or
 * n_embd when 0) to out + i * out_stride. Thread-safe; for tools, tests and
 * benchmarks. Returns 0 or the first error (submit's or a step's). */
int vkpt_embedder_run(vkpt_embedder *e, const int32_t *const *inputs, const uint32_t *lens,
                      uint32_t n_inputs, const vkpt_embed_params *p, float *out, size_t out_stride);

#ifdef __cplusplus
}
#endif
#endif
