/* vkpt runner: one model's execution context on one device queue — the paged
 * KV cache, scratch buffers and the forward pass — driven one step at a time
 * over a batch of sequences at different positions.
 *
 * A step appends tokens to any number of open sequences (a prompt chunk, or
 * one token each for decoding) and returns, for the sequences that ask, the
 * top candidates of the next-token distribution and its normalizers, so only
 * a few numbers per sequence come back from the GPU. The scheduler (or `vkpt
 * run`) samples from those with vkpt_sampler.
 *
 * Threading: a runner belongs to one thread. Nothing is allocated inside
 * vkpt_runner_step (every buffer is sized at creation).
 */
#ifndef VKPT_RUNNER_H
#define VKPT_RUNNER_H

#include "vkpt/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_runner vkpt_runner;

#define VKPT_MAX_CAND 64

typedef struct vkpt_runner_opts {
    uint32_t n_ctx;    /* max tokens per sequence (0: model's training context, capped at 4096) */
    uint32_t max_seqs; /* sequences open at once (0: 1) */
    uint32_t max_step_tokens;   /* tokens per step across sequences (0: 512) */
    uint32_t kv_tokens;         /* KV-cache capacity in tokens (0: n_ctx * max_seqs) */
    uint32_t queue;             /* compute queue index on the device */
    bool all_logits;            /* allow steps that return every position's logits */
    uint32_t max_edits_per_row; /* logit edits per output row (0: 2048) */
    /* Batch-invariant numerics: every projection uses the same kernel whatever
     * the batch size, so a sequence's results do not depend on what else is in
     * the step (slower decode at batch 1). */
    bool batch_invariant;
    /* Record every step's command buffer afresh instead of replaying the one
     * recorded for the step's shape class (tests; VKPT_NO_REPLAY=1 does the
     * same). Results are identical either way. */
    bool no_replay;
} vkpt_runner_opts;

int vkpt_runner_create(vkpt_model *m, const vkpt_runner_opts *opts, vkpt_runner **out);
void vkpt_runner_destroy(vkpt_runner *r);
const vkpt_model *vkpt_runner_model(const vkpt_runner *r);

/* Open a sequence (empty); returns its id (>= 0) or VKPT_EFULL. */
int vkpt_runner_seq_open(vkpt_runner *r);
/* Close it and free its KV blocks. */
void vkpt_runner_seq_close(vkpt_runner *r, int seq);
/* Tokens in the sequence's cache. */
uint32_t vkpt_runner_seq_len(const vkpt_runner *r, int seq);
/* Drop tokens past `len` (len <= current length). */
int vkpt_runner_seq_truncate(vkpt_runner *r, int seq, uint32_t len);
/* Make `dst` (open, empty) share src's cached tokens (prompt KV for n > 1
 * choices): full blocks are shared by reference count, the partial last
 * block is copied. */
int vkpt_runner_seq_fork(vkpt_runner *r, int src, int dst);

typedef struct vkpt_runner_stats {
    uint32_t kv_blocks_total,
        kv_blocks_used;        /* used: held by sequences (cached-only blocks are free) */
    uint32_t kv_blocks_cached; /* blocks in the prefix cache */
    uint64_t prefix_hits, prefix_lookups; /* blocks reused / looked up */
    uint32_t seqs_open, max_seqs, n_ctx, max_step_tokens;
    /* Steps run; of those that ran, replayed command buffers (hits) and
     * recorded ones (misses); host CPU time of the runner's thread filling
     * inputs and planning (prep) and recording + submitting (submit). */
    uint64_t steps, replay_hits, replay_misses;
    uint64_t host_prep_ns, host_submit_ns;
} vkpt_runner_stats;
void vkpt_runner_get_stats(const vkpt_runner *r, vkpt_runner_stats *out);
/* Prefix cache. attach: `seq` (open, empty) adopts the cached blocks that
 * hold the longest prefix of tokens[0..n) in whole 16-token blocks; returns
 * the tokens now cached (a multiple of 16, 0 on a miss). register: offer the
 * sequence's full blocks to the cache; its content is a[0..na) then
 * b[0..nb) (prompt then generated tokens). Cached blocks stay after their
 * sequences close and are evicted least-recently-used when the cache needs
 * room. */
uint32_t vkpt_runner_prefix_attach(vkpt_runner *r, int seq, const int32_t *tokens, uint32_t n);
void vkpt_runner_prefix_register(vkpt_runner *r, int seq, const int32_t *a, uint32_t na,
                                 const int32_t *b, uint32_t nb);

/* Would appending n tokens to this sequence fit the KV cache now? */
bool vkpt_runner_can_append(const vkpt_runner *r, int seq, uint32_t n);
/* New KV blocks appending n tokens to the sequence takes (0 for an unknown
 * sequence). A step's appends together must fit the free blocks. */
uint32_t vkpt_runner_blocks_needed(const vkpt_runner *r, int seq, uint32_t n);
/* Blocks of the sequence no other sequence references (what closing it frees). */
uint32_t vkpt_runner_seq_exclusive_blocks(const vkpt_runner *r, int seq);

/* One sparse logit edit (same layout as the GPU's). */
typedef struct vkpt_logit_edit {
    uint32_t id;
    float rep;   /* repetition penalty factor (1: none) */
    float delta; /* added after it */
} vkpt_logit_edit;

typedef struct vkpt_step_seq {
    int seq;
    const int32_t *tokens;
    uint32_t n_tokens; /* >= 1 */
    /* Outputs for the last token: candidates and normalizers. */
    bool want_logits;
    /* Outputs for every token of this entry (needs opts.all_logits). */
    bool want_all_logits;
    float temperature;            /* for lse_temp; <= 0 treated as 1 */
    const vkpt_logit_edit *edits; /* applied to the output row(s) first */
    uint32_t n_edits;
} vkpt_step_seq;

typedef struct vkpt_step_out {
    uint32_t n_cand;
    float cand_logit[VKPT_MAX_CAND]; /* edited logits, largest first */
    int32_t cand_id[VKPT_MAX_CAND];
    float lse;      /* log-sum-exp of the edited logits */
    float lse_temp; /* log-sum-exp of edited logits / temperature */
    uint32_t row;   /* index for vkpt_runner_logits_row */
} vkpt_step_out;

/* Run one step. `out` gets one entry per output row, in order: for each
 * vkpt_step_seq with want_logits, its last token's row; with
 * want_all_logits, every token's row. *n_out receives the count. VKPT_EFULL
 * (and nothing runs) when the KV cache cannot hold the tokens; VKPT_EINVAL
 * for a bad batch (too many tokens, unknown sequence, token ids out of the
 * vocabulary). */
int vkpt_runner_step(vkpt_runner *r, const vkpt_step_seq *seqs, uint32_t n_seqs, vkpt_step_out *out,
                     uint32_t out_cap, uint32_t *n_out);
/* The full edited logits of output row `row` of the last step (n_vocab
 * floats). Valid until the next step. */
int vkpt_runner_logits_row(vkpt_runner *r, uint32_t row, float *dst);

#ifdef __cplusplus
}
#endif
#endif
