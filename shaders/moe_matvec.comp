#version 450
/* Expert matmul for few slots per expert (decode, small batches):
 *   y[s][m] = sum_k W_e[m][k] x[row(s)][k]
 * for every slot s of every tile, e the tile's expert, W stacked experts
 * [n_expert][M][K] in a GGUF weight format.
 *
 * The tiles (moe_sort.comp) say which expert and which slots each
 * workgroup row works on: workgroup (x, y) computes ROWS weight rows of
 * tile tile0 + y for its (at most NTOK) slots, so only the experts some
 * token chose are read, each weight byte once per tile. Workgroups past the
 * tile count, or whose expert lies outside the experts bound to this
 * dispatch [e0, e0 + n_e), return at once. A slot's x row is the slot itself
 * (x_k = 0: the down projection, over per-slot activations) or its token,
 * slot_pair[s] / x_k (gate and up, over per-token activations).
 *
 * The inner loops are matvec.comp's: invocations stride over 32-weight
 * units (4 or 8 of a float format) so rows are read coalesced, scales apply
 * per 16 weights, and partial sums reduce through subgroupAdd (SUBGROUP) or
 * shared memory. A slot's result does not depend on NTOK, on ROWS or on
 * which other slots share its tile.
 *
 * Bindings: 0 W, 1 X (f32), 2 Y (f32), 3 slot_pair (u32), 4 tiles (u32). */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64; /* a power of two */
layout(constant_id = 1) const uint ROWS = 2;
layout(constant_id = 2) const uint NTOK = 1; /* slots per tile: the sort's tile size */
/* float formats: rows are 16-byte aligned and K % (4 or 8) == 0, so units
 * are read as uvec4 (else element-wise with bounds) */
layout(constant_id = 3) const bool ALIGNED = true;

layout(push_constant) uniform PC { vkpt_pc_moe_mm pc; };
layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1 { float x1[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer SP { uint slot_pair[]; };
layout(std430, binding = 4) readonly buffer TL { uint tiles[]; };

#include "quant.glsl"

const uint NACC = ROWS * NTOK;
shared float red[NACC * WG];

float acc[NACC];
uint xrow[NTOK]; /* element offset of each slot's x row */

#if defined(WT_FLOAT)
#if defined(WT_F32)
const uint FU = 4u;
#else
const uint FU = 8u;
#endif

void float_unit(uint rb, uint u, out vec4 a, out vec4 b)
{
#if defined(WT_F32)
    a = uintBitsToFloat(wq4[(rb >> 4) + u]);
    b = vec4(0.0);
#elif defined(WT_F16)
    uvec4 w = wq4[(rb >> 4) + u];
    a = vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
    b = vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w));
#else
    uvec4 w = wq4[(rb >> 4) + u];
    a = uintBitsToFloat(uvec4(w.x << 16, w.x & 0xFFFF0000u, w.y << 16, w.y & 0xFFFF0000u));
    b = uintBitsToFloat(uvec4(w.z << 16, w.z & 0xFFFF0000u, w.w << 16, w.w & 0xFFFF0000u));
#endif
}

void accumulate(uint wbase, uint row0, uint nt)
{
    const uint K = pc.K, nu = (K + FU - 1u) / FU;
    const uint rbytes = K * QB;
    for (uint u = gl_LocalInvocationID.x; u < nu; u += WG) {
        for (uint r = 0u; r < ROWS; r++) {
            uint rb = wbase + min(row0 + r, pc.M - 1u) * rbytes;
            if (ALIGNED) {
                vec4 wa, wb;
                float_unit(rb, u, wa, wb);
                for (uint t = 0u; t < NTOK; t++) {
                    if (t >= nt) break;
                    uint xb = (xrow[t] + u * FU) >> 2;
                    float s = dot(wa, x4[xb]);
                    if (FU == 8u) s += dot(wb, x4[xb + 1u]);
                    acc[r * NTOK + t] += s;
                }
            } else {
                for (uint i = 0u; i < FU; i++) {
                    uint k = u * FU + i;
                    if (k >= K) break;
                    float w = w_elem(rb, k);
                    for (uint t = 0u; t < NTOK && t < nt; t++)
                        acc[r * NTOK + t] += w * x1[xrow[t] + k];
                }
            }
        }
    }
}
#else /* quantized */

void accumulate(uint wbase, uint row0, uint nt)
{
    const uint K = pc.K, nb = K / QK, nu = nb * QUNITS;
    const uint rbytes = nb * QB;
    for (uint u = gl_LocalInvocationID.x; u < nu; u += WG) {
        uint b = u / QUNITS, ui = u % QUNITS;
        uint k0 = b * QK + unit_k0(ui), k1 = b * QK + unit_k1(ui);
        for (uint r = 0u; r < ROWS; r++) {
            uint bb = wbase + min(row0 + r, pc.M - 1u) * rbytes + b * QB;
            uvec4 qa, qb;
            vec4 so;
            unit_load(bb, ui, qa, qb, so);
#ifdef Q_SIGNED
            vec4 a0 = sbytes_f(qa.x), a1 = sbytes_f(qa.y), a2 = sbytes_f(qa.z),
                 a3 = sbytes_f(qa.w);
            vec4 c0 = sbytes_f(qb.x), c1 = sbytes_f(qb.y), c2 = sbytes_f(qb.z),
                 c3 = sbytes_f(qb.w);
#else
            vec4 a0 = bytes_f(qa.x), a1 = bytes_f(qa.y), a2 = bytes_f(qa.z), a3 = bytes_f(qa.w);
            vec4 c0 = bytes_f(qb.x), c1 = bytes_f(qb.y), c2 = bytes_f(qb.z), c3 = bytes_f(qb.w);
#endif
            for (uint t = 0u; t < NTOK; t++) {
                if (t >= nt) break;
                uint xa = (xrow[t] + k0) >> 2, xc = (xrow[t] + k1) >> 2;
                vec4 xa0 = x4[xa], xa1 = x4[xa + 1u], xa2 = x4[xa + 2u], xa3 = x4[xa + 3u];
                vec4 xc0 = x4[xc], xc1 = x4[xc + 1u], xc2 = x4[xc + 2u], xc3 = x4[xc + 3u];
                float da = dot(a0, xa0) + dot(a1, xa1) + dot(a2, xa2) + dot(a3, xa3);
                float dc = dot(c0, xc0) + dot(c1, xc1) + dot(c2, xc2) + dot(c3, xc3);
                float s = so.x * da + so.z * dc;
#ifdef Q_OFFSET
                const vec4 one = vec4(1.0);
                s += so.y * dot(xa0 + xa1 + xa2 + xa3, one) + so.w * dot(xc0 + xc1 + xc2 + xc3, one);
#endif
                acc[r * NTOK + t] += s;
            }
        }
    }
}
#endif

void main()
{
    const uint tile = pc.tile0 + gl_WorkGroupID.y;
    /* uniform per workgroup: every invocation returns together, before any barrier */
    if (tile >= tiles[pc.tl_off]) return;
    const uint rec = pc.tl_off + pc.tl_hdr + 4u * tile;
    const uint e = tiles[rec], s0 = tiles[rec + 1u], nt = min(tiles[rec + 2u], NTOK);
    if (e < pc.e0 || e - pc.e0 >= pc.n_e) return;
    const uint wbase = pc.w_off + (e - pc.e0) * pc.e_stride;
    const uint row0 = gl_WorkGroupID.x * ROWS;
    const uint tid = gl_LocalInvocationID.x;
    for (uint t = 0u; t < NTOK; t++) {
        uint s = s0 + min(t, nt - 1u);
        uint xr = pc.x_k == 0u ? s : slot_pair[pc.sp_off + s] / pc.x_k;
        xrow[t] = pc.x_off + xr * pc.K;
    }
    for (uint i = 0u; i < NACC; i++) acc[i] = 0.0;
    accumulate(wbase, row0, nt);

#ifdef SUBGROUP
    for (uint i = 0u; i < NACC; i++) {
        float s = subgroupAdd(acc[i]);
        if (subgroupElect()) red[i * WG + gl_SubgroupID] = s;
    }
    barrier();
    const uint nparts = gl_NumSubgroups;
#else
    for (uint i = 0u; i < NACC; i++) red[i * WG + tid] = acc[i];
    barrier();
    const uint nparts = WG;
#endif
    for (uint i = tid; i < NACC; i += WG) {
        uint r = i / NTOK, t = i % NTOK, row = row0 + r;
        if (row >= pc.M || t >= nt) continue;
        float s = 0.0;
        for (uint p = 0u; p < nparts; p++) s += red[i * WG + p];
        y[pc.y_off + (s0 + t) * pc.y_stride + row] = s;
    }
}
