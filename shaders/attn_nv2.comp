#version 450
/* Prefill attention over the paged f16 KV cache on VK_NV_cooperative_matrix2
 * workgroup-scope matrices (k_attn.c picks it when the device has NV2 and
 * the caller allows cooperative matrices). Same metadata, masks, work items
 * and output as attn.comp's prefill path and attn_cm.comp (see their
 * headers):
 *   S = (scale Q) K^T    Q (M x D) and K^T (D x BK) f16, S f32
 *   O = O alpha + P V    P (M x BK) f16, V (BK x D) f16, O f32
 * O stays in a workgroup accumulator for the whole key loop.
 *
 * UNVERIFIED ON HARDWARE: compiled and validated (spirv-val) at build time
 * only.
 *
 * Q, K^T and V come through coopMatLoadTensorNV with decode functions:
 * K^T's tensor layout is D x kv keys in blocks of 1 x 16 (one KV-cache block
 * of 16 tokens), V's kv keys x D in blocks of 16 x 1, so the decode function
 * gets the cache block's index in the sequence's block table and the token
 * in it, and reads the block table (paged KV) and the cache. Keys past
 * the tile's end (hi) are clamped to zero by the layout; keys before lo and
 * past each row's causal/window limit are masked in the softmax. The
 * decode functions read the current work item's values (block-table start,
 * kv head, rows) from module-scope variables that main sets, the same in
 * every invocation of the workgroup.
 *
 * Softmax and masking are scalar, one invocation per row, through shared
 * memory (S stored, P loaded), as in attn_cm.comp. The rescale of O by each
 * row's alpha and the final division by the row sum are per-element
 * operations; the result is stored through a 1-D layout over `o` and a 3-D
 * view (tokens x heads x D, strided like `o`), clipped to the item's rows.
 *
 * Specialization: 0 WG (one the device lists for workgroup-scope matrices),
 * 1 D = head_dim (multiple of 16), 2 M rows (multiple of 16), 3 BK keys per
 * tile (multiple of 16), 4 GH heads per workgroup (GH divides group, so a
 * workgroup never reaches into the next kv head's q heads). */
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_buffer_reference : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(constant_id = 1) const uint D = 128;
layout(constant_id = 2) const uint M = 64;
layout(constant_id = 3) const uint BK = 32;
layout(constant_id = 4) const uint GH = 1;

const uint SS = BK + 4; /* f32 row stride of sS (16-byte multiple) */
const uint PS = BK + 8; /* f16 row stride of sP (16-byte multiple) */
const uint BT = M / GH; /* tokens per work item */

layout(push_constant) uniform PC { vkpt_pc_attn pc; };
layout(std430, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, binding = 1) readonly buffer BTab { uint bt[]; };
layout(std430, binding = 2) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer KC { uint kc[]; };
layout(std430, binding = 4) readonly buffer VC { uint vc[]; };
layout(std430, binding = 5) writeonly buffer O { float o[]; };

shared float sS[M * SS];
shared float16_t sP[M * PS];
shared float sM[M];
shared float sL[M];
shared float sA[M];

#define NEG_INF uintBitsToFloat(0xff800000u)

/* the current work item, for the decode functions (uniform in the workgroup) */
uint g_qrow;  /* first q row of the item: q_start + t0 */
uint g_nt;    /* its tokens */
uint g_head0; /* its first q head: hkv * group + g0 */
uint g_hkv;   /* its kv head */
uint g_bt0;   /* its sequence's block-table start */

/* the pointee type decode functions must name; they address the bindings
 * from block coordinates instead (q rows are not 16-byte aligned, cache
 * blocks are reached through the block table) */
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Unused { uint u; };

/* Q row r = token r / GH, head r % GH of the item; element d; scaled */
float16_t decode_q(const in Unused p, const in uint bc[2], const in uint ib[2])
{
    uint ti = bc[0] / GH, gi = bc[0] - ti * GH;
    if (ti >= g_nt) return float16_t(0.0);
    return float16_t(q[pc.q_off + (g_qrow + ti) * pc.q_stride + (g_head0 + gi) * D + bc[1]] *
                     pc.scale);
}

/* f16 element d of token `tok` of cache block number `cb` of the sequence */
float16_t cache_elem(bool is_v, uint cb, uint tok, uint d)
{
    uint blk = bt[g_bt0 + cb];
    if (blk >= pc.n_blocks) return float16_t(0.0);
    uint a = ((blk * pc.n_kv_head + g_hkv) * 16u + tok) * D + d;
    uint w = is_v ? vc[a >> 1] : kc[a >> 1];
    return unpackFloat2x16(w)[a & 1u];
}

/* K^T (d, key): blockCoords (d, key / 16), coordInBlock (0, key % 16) */
float16_t decode_k(const in Unused p, const in uint bc[2], const in uint ib[2])
{
    return cache_elem(false, bc[1], ib[1], bc[0]);
}

/* V (key, d): blockCoords (key / 16, d), coordInBlock (key % 16, 0) */
float16_t decode_v(const in Unused p, const in uint bc[2], const in uint ib[2])
{
    return cache_elem(true, bc[0], ib[0], bc[1]);
}

float rescale(const in uint row, const in uint col, const in float v)
{
    return v * sA[row];
}

float normalize_row(const in uint row, const in uint col, const in float v)
{
    float l = sL[row];
    return l > 0.0 ? v / l : 0.0;
}

float tanh_safe(float v)
{
    return 1.0 - 2.0 / (exp(2.0 * v) + 1.0);
}

#define TL2 tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV>
#define TL1 tensorLayoutNV<1, gl_CooperativeMatrixClampModeConstantNV>

void main()
{
    uint lid = gl_LocalInvocationID.x;
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
        g_qrow = q_start + t0;
        g_nt = nt;
        g_head0 = hkv * pc.group + g0;
        g_hkv = hkv;
        g_bt0 = bt0;

        TL2 lq = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
        lq = setTensorLayoutDimensionNV(lq, M, D);
        coopmat<float16_t, gl_ScopeWorkgroup, M, D, gl_MatrixUseA> mq;
        coopMatLoadTensorNV(mq, q, 0, lq, decode_q);
        TL2 lk = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
        lk = setTensorLayoutBlockSizeNV(lk, 1, 16);
        lk = setTensorLayoutDimensionNV(lk, D, hi);
        TL2 lv = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
        lv = setTensorLayoutBlockSizeNV(lv, 16, 1);
        lv = setTensorLayoutDimensionNV(lv, hi, D);

        coopmat<float, gl_ScopeWorkgroup, M, D, gl_MatrixUseAccumulator> acc =
            coopmat<float, gl_ScopeWorkgroup, M, D, gl_MatrixUseAccumulator>(0.0);
        for (uint r = lid; r < M; r += WG) {
            sM[r] = NEG_INF;
            sL[r] = 0.0;
        }

        for (uint kt = lo & ~15u; kt < hi; kt += BK) {
            coopmat<float16_t, gl_ScopeWorkgroup, D, BK, gl_MatrixUseB> mk;
            coopMatLoadTensorNV(mk, kc, 0, sliceTensorLayoutNV(lk, 0, D, kt, BK), decode_k);
            coopmat<float, gl_ScopeWorkgroup, M, BK, gl_MatrixUseAccumulator> ms =
                coopmat<float, gl_ScopeWorkgroup, M, BK, gl_MatrixUseAccumulator>(0.0);
            ms = coopMatMulAdd(mq, mk, ms);
            /* the previous tile's readers of sS, sP and sA are done */
            barrier();
            coopMatStore(ms, sS, 0, SS, gl_CooperativeMatrixLayoutRowMajor);
            barrier();
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
            coopmat<float16_t, gl_ScopeWorkgroup, M, BK, gl_MatrixUseA> mp;
            coopMatLoad(mp, sP, 0, PS, gl_CooperativeMatrixLayoutRowMajor);
            coopmat<float16_t, gl_ScopeWorkgroup, BK, D, gl_MatrixUseB> mv;
            coopMatLoadTensorNV(mv, vc, 0, sliceTensorLayoutNV(lv, kt, BK, 0, D), decode_v);
            coopMatPerElementNV(acc, acc, rescale);
            acc = coopMatMulAdd(mp, mv, acc);
        }
        barrier(); /* sL final */
        coopMatPerElementNV(acc, acc, normalize_row);

        /* row r = (token r / GH, head r % GH) -> o[((g_qrow + t) n_head +
         * g_head0 + h) D + d]: a 3-D view over a 1-D layout of o */
        uint first = (g_qrow * pc.n_head + g_head0) * D;
        uint total = (q_start + q_len) * pc.n_head * D;
        TL1 lo1 = createTensorLayoutNV(1, gl_CooperativeMatrixClampModeConstantNV);
        lo1 = setTensorLayoutDimensionNV(lo1, total);
        lo1 = sliceTensorLayoutNV(lo1, first, total - first);
        tensorViewNV<3, true> vo = createTensorViewNV(3, true);
        vo = setTensorViewDimensionsNV(vo, BT, GH, D);
        vo = setTensorViewStrideNV(vo, pc.n_head * D, D, 1);
        vo = setTensorViewClipNV(vo, 0, nt * GH, 0, D);
        coopMatStoreTensorNV(acc, o, 0, lo1, vo);
        barrier(); /* shared state is reset by the next item */
    }
}
