/* Logits kernels (shaders/logits.comp) and C references: per-row
 * reductions so only a few values per sequence go back to the host
 * (argmax; sorted top-k; max and log-sum-exp at a temperature), plus the
 * in-place temperature division and sparse logit adjustments the sampler
 * applies before them.
 *
 * Logits are a row view over [n_rows][n] f32 (vocab n up to 2^22 - 1).
 * Ordering, everywhere: larger value first; equal values (-0 == +0): the
 * lower token index first; NaN below -inf (never an argmax unless the row is
 * all NaN, which gives index 0xffffffff). References agree exactly.
 * Launchers return 0, VKPT_EINVAL for bad shapes/buffers, or the pipeline's
 * error; they pick subgroup variants when the device has subgroup arithmetic. */
#ifndef VKPT_K_LOGITS_H
#define VKPT_K_LOGITS_H

#include "k_rows.h"

#define VKPT_TOPK_MAX    64
#define VKPT_LOGITS_MAXN ((1u << 22) - 1) /* top-k's index select works on 22 bits */

/* idx[r] (u32) and val[r] (f32) of each row's maximum. */
int vkpt_k_argmax(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                  const vkpt_buf *out_idx, const vkpt_buf *out_val);
/* The k (1..64, <= n) largest of each row, sorted: val[r*k + i] (f32),
 * idx[r*k + i] (u32). */
int vkpt_k_topk(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows, uint32_t k,
                const vkpt_buf *out_val, const vkpt_buf *out_idx);
/* With z = x / temp[r] (temps: [n_rows] f32, > 0): out[2r] = max z,
 * out[2r+1] = log sum exp z, so log p(token) = z_token - out[2r+1]. -inf
 * logits contribute nothing; a row of -inf gives (-inf, -inf). */
int vkpt_k_logsumexp(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                     const vkpt_buf *temps, const vkpt_buf *out);
/* x[r][i] /= temp[r], in place. */
int vkpt_k_logits_temp(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                       const vkpt_buf *temps);

/* One sparse edit of a logit (12 bytes, the GPU layout). */
typedef struct vkpt_logit_adj {
    uint32_t id; /* token; ids >= n are ignored */
    float rep;   /* repetition penalty (1: none): x < 0 ? x*rep : x/rep, as transformers */
    float delta; /* then added: logit_bias, -presence, -frequency*count */
} vkpt_logit_adj;

/* Apply entries[offsets[r] .. offsets[r+1]) to row r, in place. offsets:
 * [n_rows + 1] u32; entries: n_entries vkpt_logit_adj. Ids within a row
 * must be distinct (the host merges duplicates); offsets past n_entries
 * are cut there. */
int vkpt_k_logits_adjust(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                         const vkpt_buf *offsets, const vkpt_buf *entries, uint32_t n_entries);

/* References (rows x_stride apart). */
void vkpt_ref_argmax(const float *x, size_t x_stride, uint32_t n, uint32_t n_rows, uint32_t *idx,
                     float *val);
void vkpt_ref_topk(const float *x, size_t x_stride, uint32_t n, uint32_t n_rows, uint32_t k,
                   float *val, uint32_t *idx);
void vkpt_ref_logsumexp(const float *x, size_t x_stride, uint32_t n, uint32_t n_rows,
                        const float *temps, float *out);
void vkpt_ref_logits_temp(float *x, size_t x_stride, uint32_t n, uint32_t n_rows,
                          const float *temps);
void vkpt_ref_logits_adjust(float *x, size_t x_stride, uint32_t n, uint32_t n_rows,
                            const uint32_t *offsets, const vkpt_logit_adj *entries);

#endif
