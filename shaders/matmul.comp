#version 450
/* Prefill matmul: y[t][m] = sum_k W[m][k] x[t][k] (+ bias[m]) for many
 * tokens, W in a GGUF weight format, f32 activations and accumulation.
 *
 * A workgroup of 256 invocations (16 x 16) computes a BM x BN tile (BM
 * weight rows by BN tokens; each invocation TM = BM/16 rows strided by 16
 * and TN = BN/16 tokens strided by 16). K advances in steps of 32: each
 * step dequantizes the BM x 32 weight slice into shared memory (quant.glsl's
 * dq8, one 8-element group per invocation per pass) and stages the BN x 32
 * activation slice beside it, then every invocation does TM x TN x 32 FMAs
 * from shared memory. Edges (M, n_tok, and K for float formats) are
 * clamped on load and masked on store, so no shape is special.
 *
 * Bindings: 0 W, 1 X (f32 [n_tok][K]), 2 Y (f32), 3 bias (f32). */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BM = 64; /* multiple of 16 */
layout(constant_id = 1) const uint BN = 64; /* multiple of 16 */
/* float formats: x rows can be read as vec4 (K % 4 == 0, x_off % 4 == 0) */
layout(constant_id = 2) const bool ALIGNED = true;
const uint BK = 32u, TM = BM / 16u, TN = BN / 16u;

layout(push_constant) uniform PC { vkpt_pc_mm pc; };
layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1 { float x1[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer B { float bias[]; };

#include "quant.glsl"

shared float ws[BK * BM]; /* [k][m] */
shared float xs[BK * BN]; /* [k][t] */

void main()
{
    const uint tid = gl_LocalInvocationIndex;
    const uint tx = tid & 15u, ty = tid >> 4;
    const uint m0 = gl_WorkGroupID.x * BM, t0 = gl_WorkGroupID.y * BN;
    const uint K = pc.K;
#if defined(WT_FLOAT)
    const uint rbytes = K * QB;
#else
    const uint rbytes = (K / QK) * QB;
#endif
    float acc[TM * TN];
    for (uint i = 0u; i < TM * TN; i++) acc[i] = 0.0;

    for (uint k0 = 0u; k0 < K; k0 += BK) {
        /* weights: BM rows x 4 groups of 8 */
        for (uint g = tid; g < BM * 4u; g += 256u) {
            uint r = g >> 2, kk = (g & 3u) * 8u;
            uint row = min(m0 + r, pc.M - 1u);
#if defined(WT_FLOAT)
            uint rb = pc.w_off + row * rbytes;
            for (uint e = 0u; e < 8u; e++) {
                uint k = k0 + kk + e;
                ws[(kk + e) * BM + r] = k < K ? w_elem(rb, k) : 0.0;
            }
#else
            uint k = k0 + kk;
            vec4 v0, v1;
            dq8(pc.w_off + row * rbytes + (k / QK) * QB, (k % QK) / 8u, v0, v1);
            for (uint e = 0u; e < 4u; e++) {
                ws[(kk + e) * BM + r] = v0[e];
                ws[(kk + 4u + e) * BM + r] = v1[e];
            }
#endif
        }
        /* activations: BN tokens x 8 vec4 */
        for (uint g = tid; g < BN * 8u; g += 256u) {
            uint t = g >> 3, kk = (g & 7u) * 4u;
            uint tok = min(t0 + t, pc.n_tok - 1u);
            uint xb = pc.x_off + tok * K + k0 + kk;
            vec4 v;
            if (ALIGNED) {
                v = k0 + kk < K ? x4[xb >> 2] : vec4(0.0);
            } else {
                for (uint e = 0u; e < 4u; e++) v[e] = k0 + kk + e < K ? x1[xb + e] : 0.0;
            }
            for (uint e = 0u; e < 4u; e++) xs[(kk + e) * BN + t] = v[e];
        }
        barrier();
        for (uint k = 0u; k < BK; k++) {
            float wv[TM], xv[TN];
            for (uint i = 0u; i < TM; i++) wv[i] = ws[k * BM + tx + 16u * i];
            for (uint j = 0u; j < TN; j++) xv[j] = xs[k * BN + ty + 16u * j];
            for (uint i = 0u; i < TM; i++)
                for (uint j = 0u; j < TN; j++) acc[i * TN + j] += wv[i] * xv[j];
        }
        barrier();
    }

    for (uint i = 0u; i < TM; i++) {
        uint row = m0 + tx + 16u * i;
        if (row >= pc.M) continue;
        float b = (pc.flags & 1u) != 0u ? bias[pc.b_off + row] : 0.0;
        for (uint j = 0u; j < TN; j++) {
            uint tok = t0 + ty + 16u * j;
            if (tok < pc.n_tok) y[pc.y_off + tok * pc.y_stride + row] = acc[i * TN + j] + b;
        }
    }
}
