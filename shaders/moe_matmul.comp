#version 450
/* Expert matmul for many slots per expert (prefill):
 *   y[s][m] = sum_k W_e[m][k] x[row(s)][k]
 * over the tiles of moe_sort.comp, W stacked experts [n_expert][M][K] in a
 * GGUF weight format, f32 activations and accumulation.
 *
 * Workgroup (x, y) computes a BM x BN block: BM weight rows of tile
 * tile0 + y's expert by that tile's slots (at most BN, the sort's tile
 * size), with matmul.comp's scheme: 256 invocations, K in steps of 32, the
 * BM x 32 weight slice dequantized into shared memory (quant.glsl's dq8) and
 * the BN gathered activation rows staged beside it. Tiles past the count,
 * or of experts not bound to this dispatch, return at once. A slot's x row
 * is the slot (x_k = 0) or its token slot_pair[s] / x_k.
 *
 * Bindings: 0 W, 1 X (f32), 2 Y (f32), 3 slot_pair (u32), 4 tiles (u32). */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BM = 64; /* multiple of 16 */
layout(constant_id = 1) const uint BN = 32; /* multiple of 16: the sort's tile size */
/* float formats: x rows can be read as vec4 (K % 4 == 0, x_off % 4 == 0) */
layout(constant_id = 2) const bool ALIGNED = true;
const uint BK = 32u, TM = BM / 16u, TN = BN / 16u;

layout(push_constant) uniform PC { vkpt_pc_moe_mm pc; };
layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1 { float x1[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer SP { uint slot_pair[]; };
layout(std430, binding = 4) readonly buffer TL { uint tiles[]; };

#include "quant.glsl"

shared float ws[BK * BM]; /* [k][m] */
shared float xs[BK * BN]; /* [k][slot] */
shared uint xrow[BN];     /* element offset of each slot's x row */

void main()
{
    const uint tile = pc.tile0 + gl_WorkGroupID.y;
    if (tile >= tiles[pc.tl_off]) return;
    const uint rec = pc.tl_off + pc.tl_hdr + 4u * tile;
    const uint e = tiles[rec], s0 = tiles[rec + 1u], nt = min(tiles[rec + 2u], BN);
    if (e < pc.e0 || e - pc.e0 >= pc.n_e) return;
    const uint wbase = pc.w_off + (e - pc.e0) * pc.e_stride;

    const uint tid = gl_LocalInvocationIndex;
    const uint tx = tid & 15u, ty = tid >> 4;
    const uint m0 = gl_WorkGroupID.x * BM;
    const uint K = pc.K;
#if defined(WT_FLOAT)
    const uint rbytes = K * QB;
#else
    const uint rbytes = (K / QK) * QB;
#endif
    for (uint t = tid; t < BN; t += 256u) {
        uint s = s0 + min(t, nt - 1u);
        uint xr = pc.x_k == 0u ? s : slot_pair[pc.sp_off + s] / pc.x_k;
        xrow[t] = pc.x_off + xr * K;
    }
    float acc[TM * TN];
    for (uint i = 0u; i < TM * TN; i++) acc[i] = 0.0;
    barrier();

    for (uint k0 = 0u; k0 < K; k0 += BK) {
        for (uint g = tid; g < BM * 4u; g += 256u) {
            uint r = g >> 2, kk = (g & 3u) * 8u;
            uint row = min(m0 + r, pc.M - 1u);
#if defined(WT_FLOAT)
            uint rb = wbase + row * rbytes;
            for (uint i = 0u; i < 8u; i++) {
                uint k = k0 + kk + i;
                ws[(kk + i) * BM + r] = k < K ? w_elem(rb, k) : 0.0;
            }
#else
            uint k = k0 + kk;
            vec4 v0, v1;
            dq8(wbase + row * rbytes + (k / QK) * QB, (k % QK) / 8u, v0, v1);
            for (uint i = 0u; i < 4u; i++) {
                ws[(kk + i) * BM + r] = v0[i];
                ws[(kk + 4u + i) * BM + r] = v1[i];
            }
#endif
        }
        for (uint g = tid; g < BN * 8u; g += 256u) {
            uint t = g >> 3, kk = (g & 7u) * 4u;
            uint xb = xrow[t] + k0 + kk;
            vec4 v;
            if (ALIGNED) {
                v = k0 + kk < K ? x4[xb >> 2] : vec4(0.0);
            } else {
                for (uint i = 0u; i < 4u; i++) v[i] = k0 + kk + i < K ? x1[xb + i] : 0.0;
            }
            for (uint i = 0u; i < 4u; i++) xs[(kk + i) * BN + t] = v[i];
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
        for (uint j = 0u; j < TN; j++) {
            uint t = ty + 16u * j;
            if (t < nt) y[pc.y_off + (s0 + t) * pc.y_stride + row] = acc[i * TN + j];
        }
    }
}
