/* Normalization kernels (shaders/norm.comp) and their C references:
 * RMSNorm, LayerNorm (with/without weight and bias), and the per-head RMSNorm
 * of Qwen3's q/k norm.
 *
 * Rows: for t < n_rows and h < n_heads, the n elements starting at
 * x.off + t*x.stride + h*n are normalized on their own and written to the
 * same place in y. n_heads = 1 is the plain norm over rows of n; n_heads > 1
 * normalizes every head_dim = n slice of [n_rows][n_heads][n] with one shared
 * weight[n]. y may be x (in place).
 *
 * Launchers record one dispatch (the subgroup variant when the device has
 * subgroup arithmetic) and return 0, VKPT_EINVAL for a bad shape or a buffer
 * too small, or the pipeline's error. Gemma's (1 + w) weights are the
 * loader's business (add 1 once at load). */
#ifndef VKPT_K_NORM_H
#define VKPT_K_NORM_H

#include "k_rows.h"

/* y = x / sqrt(mean(x^2) + eps) * w (w: [n] f32, or NULL for no weight) */
int vkpt_k_rmsnorm(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, const vkpt_buf *w,
                   uint32_t n, uint32_t n_heads, uint32_t n_rows, float eps);
/* y = (x - mean) / sqrt(var + eps) * w + b (biased variance, as
 * torch.nn.LayerNorm); w and b each optional (NULL) */
int vkpt_k_layernorm(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, const vkpt_buf *w,
                     const vkpt_buf *b, uint32_t n, uint32_t n_rows, float eps);

/* References (double accumulation); same row addressing with plain arrays:
 * row (t, h) at x + t*x_stride + h*n. */
void vkpt_ref_rmsnorm(const float *x, size_t x_stride, float *y, size_t y_stride, const float *w,
                      uint32_t n, uint32_t n_heads, uint32_t n_rows, float eps);
void vkpt_ref_layernorm(const float *x, size_t x_stride, float *y, size_t y_stride, const float *w,
                        const float *b, uint32_t n, uint32_t n_rows, float eps);

#endif
