#version 450
/* Prefill attention over the paged f16 KV cache with KHR cooperative
 * matrices (k_attn.c picks it when the device reports a 16x16x16
 * f16 x f16 -> f32 subgroup shape). Same metadata, masks, work items and
 * output as attn.comp's prefill path (see its header); only the two
 * products use cooperative matrices:
 *   S = (scale*Q) K^T   Q, K as f16 in shared memory, S in f32
 *   O = O*alpha + P V   P rounded to f16, O kept in f32 shared memory
 * Softmax and masking are scalar, one invocation per row, as in attn.comp.
 * Q and P rounded to f16 cost ~1e-3 of accuracy against the f32 path.
 *
 * Specialization: 0 WG (a multiple of the subgroup size), 1 D = head_dim
 * (multiple of 16), 2 M rows (multiple of 16), 3 BK keys per tile
 * (multiple of 16), 4 GH heads per workgroup (M % GH == 0).
 * Shared strides are padded and kept multiples of 16 bytes, as cooperative
 * matrix loads and stores require. */
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint D = 128;
layout(constant_id = 2) const uint M = 32;
layout(constant_id = 3) const uint BK = 32;
layout(constant_id = 4) const uint GH = 1;

const uint QS = D + 8;  /* f16 row stride of sQ and sKV */
const uint SS = BK + 4; /* f32 row stride of sS */
const uint PS = BK + 8; /* f16 row stride of sP */
const uint OS = D + 4;  /* f32 row stride of sO */
const uint BT = M / GH;

layout(push_constant) uniform PC { vkpt_pc_attn pc; };
layout(std430, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, binding = 1) readonly buffer BTab { uint bt[]; };
layout(std430, binding = 2) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer KC { uint kc[]; };
layout(std430, binding = 4) readonly buffer VC { uint vc[]; };
layout(std430, binding = 5) writeonly buffer O { float o[]; };

shared float16_t sQ[M * QS];
shared float16_t sKV[BK * QS];
shared float sS[M * SS];
shared float16_t sP[M * PS];
shared float sO[M * OS];
shared float sM[M];
shared float sL[M];
shared float sA[M];

#define NEG_INF uintBitsToFloat(0xff800000u)

float tanh_safe(float v)
{
    return 1.0 - 2.0 / (exp(2.0 * v) + 1.0);
}

/* K or V rows kt .. kt+BK-1 of kv head hkv into sKV (f16), zeros outside [lo, hi) */
void load_tile(bool is_v, uint kt, uint lo, uint hi, uint bt0, uint hkv)
{
    const uint D2 = D / 2;
    for (uint idx = gl_LocalInvocationID.x; idx < BK * D2; idx += WG) {
        uint j = idx / D2, c = idx - j * D2;
        uint key = kt + j;
        f16vec2 val = f16vec2(0.0);
        if (key >= lo && key < hi) {
            uint blk = bt[bt0 + key / 16u];
            if (blk < pc.n_blocks) {
                uint a = ((blk * pc.n_kv_head + hkv) * 16u + key % 16u) * D2 + c;
                val = unpackFloat2x16(is_v ? vc[a] : kc[a]);
            }
        }
        sKV[j * QS + 2u * c] = val.x;
        sKV[j * QS + 2u * c + 1u] = val.y;
    }
}

void main()
{
    uint lid = gl_LocalInvocationID.x;
    uint sg = gl_SubgroupID, nsg = gl_NumSubgroups;
    uint hkv = gl_WorkGroupID.y / pc.n_hsplit;
    uint g0 = (gl_WorkGroupID.y - hkv * pc.n_hsplit) * GH;
    /* n_items == ~0: {n_items, items_off} at meta[items_off] (attn.comp) */
    uint n_items = pc.n_items, items_off = pc.items_off;
    if (n_items == 0xffffffffu) {
        n_items = meta[pc.items_off];
        items_off = meta[pc.items_off + 1u];
    }
    for (uint it = gl_WorkGroupID.x; it < n_items; it += gl_NumWorkGroups.x) {
        uint s = meta[items_off + 2u * it];
        uint t0 = meta[items_off + 2u * it + 1u];
        uint q_start = meta[4u * s], q_len = meta[4u * s + 1u];
        uint kv_len = meta[4u * s + 2u], bt0 = meta[4u * s + 3u];
        uint base_pos = kv_len - q_len;
        uint nt = min(BT, q_len - t0);
        uint lo = 0u, hi = kv_len;
        if (pc.causal != 0u) {
            hi = min(kv_len, base_pos + t0 + nt);
            if (pc.window > 0u) lo = uint(max(int(base_pos + t0) - int(pc.window) + 1, 0));
        }

        for (uint idx = lid; idx < M * D; idx += WG) {
            uint r = idx / D, d = idx - r * D;
            uint ti = r / GH, g = g0 + r - ti * GH;
            float v = 0.0;
            if (ti < nt && g < pc.group)
                v = q[pc.q_off + (q_start + t0 + ti) * pc.q_stride + (hkv * pc.group + g) * D + d] *
                    pc.scale;
            sQ[r * QS + d] = float16_t(v);
            sO[r * OS + d] = 0.0;
        }
        for (uint r = lid; r < M; r += WG) {
            sM[r] = NEG_INF;
            sL[r] = 0.0;
        }

        for (uint kt = lo & ~15u; kt < hi; kt += BK) {
            barrier(); /* previous tile's readers of sKV, sP, sO are done */
            load_tile(false, kt, lo, hi, bt0, hkv);
            barrier();
            /* S = Q K^T, one 16x16 block per subgroup at a time */
            for (uint b = sg; b < (M / 16u) * (BK / 16u); b += nsg) {
                uint mi = b / (BK / 16u), nj = b - mi * (BK / 16u);
                coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> acc =
                    coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>(0.0);
                for (uint k = 0; k < D; k += 16u) {
                    coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> ma;
                    coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB> mb;
                    coopMatLoad(ma, sQ, mi * 16u * QS + k, QS, gl_CooperativeMatrixLayoutRowMajor);
                    /* B(k, n) = K[n][k]: column-major over K's rows */
                    coopMatLoad(mb, sKV, nj * 16u * QS + k, QS,
                                gl_CooperativeMatrixLayoutColumnMajor);
                    acc = coopMatMulAdd(ma, mb, acc);
                }
                coopMatStore(acc, sS, mi * 16u * SS + nj * 16u, SS,
                             gl_CooperativeMatrixLayoutRowMajor);
            }
            barrier();
            load_tile(true, kt, lo, hi, bt0, hkv);
            for (uint r = lid; r < M; r += WG) {
                uint ti = r / GH, g = g0 + r - ti * GH;
                uint pos = base_pos + t0 + ti;
                bool row_ok = ti < nt && g < pc.group;
                float m_old = sM[r], m_new = m_old;
                for (uint j = 0; j < BK; j++) {
                    uint key = kt + j;
                    bool ok = row_ok && key >= lo && key < hi;
                    if (pc.causal != 0u)
                        ok = ok && key <= pos && (pc.window == 0u || key + pc.window > pos);
                    float sc = sS[r * SS + j];
                    if (pc.softcap > 0.0) sc = pc.softcap * tanh_safe(sc / pc.softcap);
                    sc = ok ? sc : NEG_INF;
                    sS[r * SS + j] = sc;
                    m_new = max(m_new, sc);
                }
                float alpha = 1.0, sum = 0.0;
                if (m_new != NEG_INF) alpha = exp(m_old - m_new);
                for (uint j = 0; j < BK; j++) {
                    float p = m_new == NEG_INF ? 0.0 : exp(sS[r * SS + j] - m_new);
                    sP[r * PS + j] = float16_t(p);
                    sum += p;
                }
                sM[r] = m_new;
                sL[r] = sL[r] * alpha + sum;
                sA[r] = alpha;
            }
            barrier();
            for (uint idx = lid; idx < M * D; idx += WG) {
                uint r = idx / D;
                sO[r * OS + idx - r * D] *= sA[r];
            }
            barrier();
            /* O += P V, one 16x16 block of O per subgroup at a time */
            for (uint b = sg; b < (M / 16u) * (D / 16u); b += nsg) {
                uint mi = b / (D / 16u), nj = b - mi * (D / 16u);
                coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> acc;
                coopMatLoad(acc, sO, mi * 16u * OS + nj * 16u, OS,
                            gl_CooperativeMatrixLayoutRowMajor);
                for (uint k = 0; k < BK; k += 16u) {
                    coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> ma;
                    coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB> mb;
                    coopMatLoad(ma, sP, mi * 16u * PS + k, PS, gl_CooperativeMatrixLayoutRowMajor);
                    coopMatLoad(mb, sKV, k * QS + nj * 16u, QS, gl_CooperativeMatrixLayoutRowMajor);
                    acc = coopMatMulAdd(ma, mb, acc);
                }
                coopMatStore(acc, sO, mi * 16u * OS + nj * 16u, OS,
                             gl_CooperativeMatrixLayoutRowMajor);
            }
        }
        barrier();

        for (uint idx = lid; idx < M * D; idx += WG) {
            uint r = idx / D, d = idx - r * D;
            uint ti = r / GH, g = g0 + r - ti * GH;
            if (ti >= nt || g >= pc.group) continue;
            float l = sL[r];
            o[((q_start + t0 + ti) * pc.n_head + hkv * pc.group + g) * D + d] =
                l > 0.0 ? sO[r * OS + d] / l : 0.0;
        }
        barrier(); /* shared state is reset by the next item */
    }
}
