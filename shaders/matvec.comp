#version 450
/* Decode matmul: y[t][m] = sum_k W[m][k] x[t][k] (+ bias[m]) for NTOK <= 8
 * token rows, W in a GGUF weight format.
 *
 * One workgroup computes ROWS consecutive rows for all NTOK tokens. Its WG
 * threads stride over the row's units (32 weights of a quantized format,
 * 4 or 8 of a float one) so consecutive threads read consecutive bytes of
 * each row and every weight byte is read exactly once; activations are
 * re-read from cache. Per unit the weights are loaded and unpacked once per
 * row, then dotted with each token's activations; scales (and mins) apply
 * once per 16-element segment. Partial sums are reduced across the
 * workgroup with subgroupAdd and one shared-memory pass (SUBGROUP), or
 * through shared memory alone.
 *
 * INTDOT: activations come quantized (vkpt_k_quantize_act: int8 per element
 * packed 4 to a word, one f32 scale per 32) and each segment is 4 packed
 * int8 dot products.
 *
 * Bindings: 0 W (words / uvec4), 1 X (f32 [n_tok][K]; INTDOT: the q8
 * values as words), 2 Y (f32), 3 bias (f32; bound to anything when flags
 * bit 0 is clear), 4 (INTDOT) the q8 scales. Offsets in the push constants are in bytes
 * (w_off) or elements of the binding. */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#ifdef INTDOT
#extension GL_EXT_integer_dot_product : require
#endif

#ifdef WG_FIXED
/* a fixed size: Vulkan 1.3 SPIR-V would express a specialized one with
 * LocalSizeId, which needs the maintenance4 feature */
layout(local_size_x = WG_FIXED) in;
const uint WG = WG_FIXED;
#else
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64; /* a power of two */
#endif
layout(constant_id = 1) const uint ROWS = 2;
/* token slots: the launcher rounds n_tok up to 1, 2, 4 or 8 (fewer
 * pipelines); slots past pc.n_tok are skipped */
layout(constant_id = 2) const uint NTOK = 1;
/* float formats: rows are 16-byte aligned and K % (4 or 8) == 0, so units
 * are read as uvec4 (set by the launcher; else element-wise with bounds) */
layout(constant_id = 3) const bool ALIGNED = true;

layout(push_constant) uniform PC { vkpt_pc_mm pc; };
layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
#ifdef INTDOT
layout(std430, binding = 1) readonly buffer Xq { uint xq[]; };
layout(std430, binding = 1) readonly buffer Xq4 { uvec4 xq4[]; };
layout(std430, binding = 4) readonly buffer Xd { float xd[]; };
#else
layout(std430, binding = 1) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1 { float x1[]; };
#endif
layout(std430, binding = 2) buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer B { float bias[]; };

#include "quant.glsl"

const uint NACC = ROWS * NTOK;
shared float red[NACC * WG];

float acc[NACC];

#if defined(WT_FLOAT)
#if defined(WT_F32)
const uint FU = 4u; /* elements per unit: one uvec4 */
#else
const uint FU = 8u;
#endif

/* The FU weights of unit u of the row at byte rb, as two vec4 (F32: b = 0). */
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

void accumulate(uint row0)
{
    const uint K = pc.K, nu = (K + FU - 1u) / FU;
    const uint rbytes = K * QB;
    for (uint u = gl_LocalInvocationID.x; u < nu; u += WG) {
        for (uint r = 0u; r < ROWS; r++) {
            uint rb = pc.w_off + min(row0 + r, pc.M - 1u) * rbytes;
            if (ALIGNED) {
                vec4 wa, wb;
                float_unit(rb, u, wa, wb);
                for (uint t = 0u; t < NTOK; t++) {
                    if (t >= pc.n_tok) break;
                    uint xb = (pc.x_off + t * K + u * FU) >> 2;
                    float s = dot(wa, x4[xb]);
                    if (FU == 8u) s += dot(wb, x4[xb + 1u]);
                    acc[r * NTOK + t] += s;
                }
            } else {
                for (uint i = 0u; i < FU; i++) {
                    uint k = u * FU + i;
                    if (k >= K) break;
                    float w = w_elem(rb, k);
                    for (uint t = 0u; t < NTOK && t < pc.n_tok; t++)
                        acc[r * NTOK + t] += w * x1[pc.x_off + t * K + k];
                }
            }
        }
    }
}
#else /* quantized */

void accumulate(uint row0)
{
    const uint K = pc.K, nb = K / QK, nu = nb * QUNITS;
    const uint rbytes = nb * QB;
    for (uint u = gl_LocalInvocationID.x; u < nu; u += WG) {
        uint b = u / QUNITS, ui = u % QUNITS;
        uint k0 = b * QK + unit_k0(ui), k1 = b * QK + unit_k1(ui);
        for (uint r = 0u; r < ROWS; r++) {
            uint bb = pc.w_off + min(row0 + r, pc.M - 1u) * rbytes + b * QB;
            uvec4 qa, qb;
            vec4 so;
            unit_load(bb, ui, qa, qb, so);
#ifdef INTDOT
            for (uint t = 0u; t < NTOK; t++) {
                    if (t >= pc.n_tok) break;
                uint xb = pc.x_off + t * (K >> 2);
                uvec4 xa = xq4[(xb + (k0 >> 2)) >> 2];
                uvec4 xc = xq4[(xb + (k1 >> 2)) >> 2];
                int ia = dotPacked4x8EXT(int(qa.x), int(xa.x)) +
                         dotPacked4x8EXT(int(qa.y), int(xa.y)) +
                         dotPacked4x8EXT(int(qa.z), int(xa.z)) +
                         dotPacked4x8EXT(int(qa.w), int(xa.w));
                int ic = dotPacked4x8EXT(int(qb.x), int(xc.x)) +
                         dotPacked4x8EXT(int(qb.y), int(xc.y)) +
                         dotPacked4x8EXT(int(qb.z), int(xc.z)) +
                         dotPacked4x8EXT(int(qb.w), int(xc.w));
                uint xdb = pc.xd_off + t * (K >> 5);
                float da = xd[xdb + (k0 >> 5)], dc = xd[xdb + (k1 >> 5)];
                float s = da * so.x * float(ia) + dc * so.z * float(ic);
#ifdef Q_OFFSET
                const int ones = 0x01010101;
                int sa = dotPacked4x8EXT(ones, int(xa.x)) + dotPacked4x8EXT(ones, int(xa.y)) +
                         dotPacked4x8EXT(ones, int(xa.z)) + dotPacked4x8EXT(ones, int(xa.w));
                int sc = dotPacked4x8EXT(ones, int(xc.x)) + dotPacked4x8EXT(ones, int(xc.y)) +
                         dotPacked4x8EXT(ones, int(xc.z)) + dotPacked4x8EXT(ones, int(xc.w));
                s += da * so.y * float(sa) + dc * so.w * float(sc);
#endif
                acc[r * NTOK + t] += s;
            }
#else
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
                    if (t >= pc.n_tok) break;
                uint xa = (pc.x_off + t * K + k0) >> 2, xc = (pc.x_off + t * K + k1) >> 2;
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
#endif
        }
    }
}
#endif

void main()
{
    const uint row0 = gl_WorkGroupID.x * ROWS;
    const uint tid = gl_LocalInvocationID.x;
    for (uint i = 0u; i < NACC; i++) acc[i] = 0.0;
    accumulate(row0);

#ifdef SUBGROUP
    /* each subgroup's sum lands in red[i * WG + subgroup id] */
    for (uint i = 0u; i < NACC; i++) {
        float s = subgroupAdd(acc[i]);
        if (subgroupElect()) red[i * WG + gl_SubgroupID] = s;
    }
    barrier();
    const uint nparts = gl_NumSubgroups;
#else
    /* one barrier, then each output sums its WG partials: no subgroups here
     * means no fast path to protect, and every barrier costs (lavapipe
     * splits the shader into coroutines at each) */
    for (uint i = 0u; i < NACC; i++) red[i * WG + tid] = acc[i];
    barrier();
    const uint nparts = WG;
#endif
    for (uint i = tid; i < NACC; i += WG) {
        uint r = i / NTOK, t = i % NTOK, row = row0 + r;
        if (row >= pc.M || t >= pc.n_tok) continue;
        float s = 0.0;
        for (uint p = 0u; p < nparts; p++) s += red[i * WG + p];
        if ((pc.flags & 1u) != 0u) s += bias[pc.b_off + row];
        y[pc.y_off + t * pc.y_stride + row] = s;
    }
}
