/* Activation kernels (shaders/act.comp) and C references: the gated
 * SwiGLU/GeGLU products, plain GELU/SiLU, scale and clamp (DBRX clip_qkv).
 * The residual add is vkpt_k_add_f32 (kernels.h).
 *
 * Every operand is a row view (k_rows.h) over [n_rows][n] f32, so the gate
 * and up halves of one fused [n_rows][2*ff] buffer (vkpt_glu_split) and two
 * separate buffers both work. y may be the same view as x (in place), or as
 * gate/up. Launchers return 0, VKPT_EINVAL (unknown act, views too small)
 * or the pipeline's error. */
#ifndef VKPT_K_ACT_H
#define VKPT_K_ACT_H

#include "k_rows.h"

enum vkpt_act {
    VKPT_ACT_SILU = 0, /* x * sigmoid(x) (SwiGLU's gate) */
    VKPT_ACT_GELU_TANH =
        1, /* 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))): gelu_pytorch_tanh, gelu_new */
    VKPT_ACT_GELU_ERF = 2, /* 0.5x(1 + erf(x/sqrt2)): "gelu" */
};

/* y = act(gate) * up */
int vkpt_k_glu(vkpt_cmd *c, int act, const vkpt_rows *gate, const vkpt_rows *up, const vkpt_rows *y,
               uint32_t n, uint32_t n_rows);
/* y = act(x) */
int vkpt_k_act(vkpt_cmd *c, int act, const vkpt_rows *x, const vkpt_rows *y, uint32_t n,
               uint32_t n_rows);
/* y = x * s */
int vkpt_k_scale(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, uint32_t n, uint32_t n_rows,
                 float s);
/* y = min(max(x, lo), hi) */
int vkpt_k_clamp(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, uint32_t n, uint32_t n_rows,
                 float lo, float hi);

/* Gate and up views of a fused [n_rows][2*ff] buffer (gate first). */
static inline void vkpt_glu_split(const vkpt_buf *gu, uint32_t ff, vkpt_rows *gate, vkpt_rows *up)
{
    *gate = vkpt_rows_of(gu, 0, 2 * ff);
    *up = vkpt_rows_of(gu, ff, 2 * ff);
}

/* References in double: act(v) with v promoted, rounded once. */
float vkpt_ref_act1(int act, float v);
void vkpt_ref_glu(int act, const float *gate, size_t g_stride, const float *up, size_t u_stride,
                  float *y, size_t y_stride, uint32_t n, uint32_t n_rows);

#endif
