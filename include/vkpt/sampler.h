/* Sampling one request's tokens from a runner step's output.
 *
 * The GPU returns the top candidates of the (edited) logits and two
 * log-sum-exps over the whole vocabulary; the sampler picks from those
 * exactly: when top-p, min-p or plain sampling needs tokens beyond the
 * candidates, it fetches the full row (rare) instead of approximating.
 * Penalties (presence, frequency, repetition) and logit_bias become sparse
 * logit edits the runner applies on the GPU before the reductions.
 *
 * Determinism: the random stream depends only on the seed and the number of
 * tokens drawn, never on other requests in the batch.
 */
#ifndef VKPT_SAMPLER_H
#define VKPT_SAMPLER_H

#include "vkpt/runner.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_sampling {
    float temperature;                         /* 0: greedy */
    uint32_t top_k;                            /* 0: off */
    float top_p;                               /* 1: off */
    float min_p;                               /* 0: off */
    float presence_penalty, frequency_penalty; /* OpenAI semantics, -2..2 */
    float repetition_penalty;                  /* 1: off (transformers semantics) */
    uint64_t seed;
    const vkpt_logit_edit *bias; /* logit_bias: (id, 1, delta) */
    uint32_t n_bias;
} vkpt_sampling;

#define VKPT_SAMPLING_DEFAULT                                          \
    {                                                                  \
        .temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f \
    }

typedef struct vkpt_sampler vkpt_sampler;

/* `prompt` tokens count for the repetition penalty (transformers applies it
 * to prompt and output alike); presence/frequency count output tokens only. */
int vkpt_sampler_create(const vkpt_sampling *s, uint32_t n_vocab, const int32_t *prompt,
                        uint32_t n_prompt, vkpt_sampler **out);
void vkpt_sampler_destroy(vkpt_sampler *s);
/* Temperature to pass in the step (1 for greedy). */
float vkpt_sampler_temperature(const vkpt_sampler *s);
/* The edits this request's next step needs; returns their count (<= cap). */
uint32_t vkpt_sampler_edits(const vkpt_sampler *s, vkpt_logit_edit *out, uint32_t cap);
/* Max edits a request can produce. */
uint32_t vkpt_sampler_max_edits(const vkpt_sampler *s);

/* Fetches the full edited logits row of a step output (vkpt_runner_logits_row). */
typedef int (*vkpt_row_fetch)(void *ud, uint32_t row, float *dst);

typedef struct vkpt_sample {
    int32_t token;
    float logprob; /* log p(token) under the edited distribution at temperature 1 */
} vkpt_sample;

/* Pick the next token from step output `o` and record it (penalties). */
int vkpt_sampler_pick(vkpt_sampler *s, const vkpt_step_out *o, vkpt_row_fetch fetch, void *ud,
                      vkpt_sample *out);

#ifdef __cplusplus
}
#endif
#endif
