#version 450
/* Mixture-of-experts combine (k_moe.c): the weighted sum of a token's expert
 * outputs, back in token order, plus an optional shared expert, added to
 * (or written over) the output rows.
 *
 * For t < n_rows, i < n:
 *   r = sum_{j < k} wts[w_off + t*k + j] * d[d_off + pair_slot[ps_off + t*k + j]*d_stride + i]
 *   flags bit 1: r += g * sh[s_off + t*s_stride + i], g = sigmoid(gl[g_off + t*g_stride])
 *                (bit 2 too: g = 1, an ungated shared expert)
 *   flags bit 0: y[y_off + t*y_stride + i] += r   (the residual add), else = r
 * The k terms are summed in routing order (largest weight first). Elements
 * are grid-strided over n_rows * n.
 *
 * Bindings: 0 Y, 1 D (expert outputs per slot), 2 wts (f32), 3 pair_slot
 * (u32), 4 shared expert output (f32), 5 shared gate logits (f32); 4 and 5
 * are bound to anything when bit 1 is clear. */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { vkpt_pc_moe_combine pc; };
layout(std430, binding = 0) buffer Y { float y[]; };
layout(std430, binding = 1) readonly buffer D { float d[]; };
layout(std430, binding = 2) readonly buffer W { float wts[]; };
layout(std430, binding = 3) readonly buffer PS { uint pair_slot[]; };
layout(std430, binding = 4) readonly buffer S { float sh[]; };
layout(std430, binding = 5) readonly buffer G { float gl[]; };

void main()
{
    const uint n = pc.n, K = pc.k;
    const uint total = pc.n_rows * n;
    const uint step = gl_NumWorkGroups.x * WG;
    for (uint idx = gl_GlobalInvocationID.x; idx < total; idx += step) {
        uint t = idx / n, i = idx - t * n;
        float r = 0.0;
        for (uint j = 0u; j < K; j++) {
            uint p = t * K + j;
            r += wts[pc.w_off + p] * d[pc.d_off + pair_slot[pc.ps_off + p] * pc.d_stride + i];
        }
        if ((pc.flags & 2u) != 0u) {
            float g = 1.0;
            if ((pc.flags & 4u) == 0u) g = 1.0 / (1.0 + exp(-gl[pc.g_off + t * pc.g_stride]));
            r += g * sh[pc.s_off + t * pc.s_stride + i];
        }
        uint yo = pc.y_off + t * pc.y_stride + i;
        if ((pc.flags & 1u) != 0u)
            y[yo] += r;
        else
            y[yo] = r;
    }
}
