/* Rotary position embedding (shaders/rope.comp): the host-side
 * inverse-frequency tables for each scaling scheme, the launcher and the C
 * reference.
 *
 * Numerics follow Hugging Face transformers: the table is computed in f32
 * with the same operation order as its rope init functions, and the kernel
 * takes the angle as one f32 product float(pos) * inv_freq[k], as
 * transformers' f32 matmul of inv_freq and positions does. The kernel's
 * cos/sin of that f32 angle are within a few f32 ulp of exact (its own range
 * reduction; positions < 2^24), so outputs agree with transformers' f32
 * results to about 1e-6 relative, and with exact-angle math to about
 * |pos * inv_freq| * 2^-24 radians of phase: the f32 angle rounding that
 * transformers has too, kept on purpose. */
#ifndef VKPT_K_ROPE_H
#define VKPT_K_ROPE_H

#include "k_rows.h"

enum vkpt_rope_scaling {
    VKPT_ROPE_PLAIN = 0,  /* inv_freq[k] = theta^(-2k/rot_dim) ("default") */
    VKPT_ROPE_LINEAR = 1, /* plain / factor */
    VKPT_ROPE_LLAMA3 = 2, /* transformers' _compute_llama3_parameters */
    VKPT_ROPE_YARN = 3,   /* transformers' _compute_yarn_parameters; cos/sin scaled */
};

/* A model's RoPE parameters as config.json / GGUF give them. */
typedef struct vkpt_rope_cfg {
    int scaling;      /* enum vkpt_rope_scaling */
    uint32_t rot_dim; /* rotated dims per head: head_dim * partial_rotary_factor, even */
    double theta;     /* rope_theta (base), > 1 */
    double factor;    /* LINEAR, LLAMA3, YARN: rope_scaling.factor (> 0) */
    double low_freq_factor, high_freq_factor; /* LLAMA3 (high > low > 0) */
    /* LLAMA3, YARN: rope_scaling.original_max_position_embeddings; for YARN
     * without it, config.max_position_embeddings (what transformers uses) */
    uint32_t orig_ctx;
    double beta_fast, beta_slow; /* YARN; 0 means transformers' defaults 32 and 1 */
    /* YARN: attention_factor; 0 derives it as transformers does: from mscale
     * and mscale_all_dim when both are set (DeepSeek), else 0.1 ln(factor) + 1 */
    double attn_factor;
    double mscale, mscale_all_dim;
    bool no_truncate; /* YARN: rope_scaling.truncate == false */
} vkpt_rope_cfg;

/* Fill inv_freq[rot_dim/2] (f32) and *mscale, the factor multiplying cos and
 * sin (1 except for YARN). VKPT_EINVAL with a message for a bad config. */
int vkpt_rope_freqs(const vkpt_rope_cfg *cfg, float *inv_freq, float *mscale);

enum vkpt_rope_layout {
    VKPT_ROPE_INTERLEAVED = 0, /* pairs (2k, 2k+1): GGUF llama ("normal" mode) */
    VKPT_ROPE_NEOX = 1,        /* pairs (k, k + rot_dim/2): Hugging Face rotate_half */
};

/* Rotate x in place: [n_rows][n_heads][head_dim], row t at x.off + t*x.stride,
 * at position pos[t] (u32 buffer), with inv_freq[rot_dim/2] (f32 buffer).
 * Dims rot_dim..head_dim-1 of each head are left untouched. Returns 0 or
 * VKPT_EINVAL (odd or too large rot_dim, views too small, ...). */
int vkpt_k_rope(vkpt_cmd *c, const vkpt_rows *x, const vkpt_buf *pos, const vkpt_buf *inv_freq,
                uint32_t n_rows, uint32_t n_heads, uint32_t head_dim, uint32_t rot_dim, int layout,
                float mscale);

/* Reference: the same f32 angle, cos/sin and the rotation in double. */
void vkpt_ref_rope(float *x, size_t x_stride, const uint32_t *pos, const float *inv_freq,
                   uint32_t n_rows, uint32_t n_heads, uint32_t head_dim, uint32_t rot_dim,
                   int layout, float mscale);

#endif
