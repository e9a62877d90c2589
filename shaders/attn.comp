#version 450
/* Attention over the paged f16 KV cache, online softmax (k_attn.c).
 *
 * Cache (per layer): k, v: [n_blocks][n_kv_head][16 tok][head_dim] f16,
 * read as u32 pairs. Block table: u32; sequence s's logical block i is
 * bt[bt_start(s) + i]. meta (u32): the sequence records
 *   meta[4s .. 4s+3] = {q_start, q_len, kv_len, bt_start}
 * then the work items this dispatch covers, at items_off (or, when
 * pc.n_items is 0xffffffff, meta[pc.items_off] items at meta[pc.items_off + 1]:
 * the counts of a replayed command buffer's step, see vkpt_attn_plan_indirect):
 *   prefill: {seq, t0}        query rows t0 .. t0+BT-1 of the sequence
 *   decode:  {seq, k0, k1}    the one query row, keys k0 .. k1-1 (a split)
 * Query row t of s is at absolute position kv_len - q_len + t; with causal
 * it sees keys j <= pos (and j > pos - window when window > 0), without it
 * all kv_len keys.
 *
 * A workgroup takes one item for a slice of GH query heads of one kv head
 * (gl_WorkGroupID.y = kv_head * n_hsplit + slice): its M = BT*GH rows are
 * (token, head) pairs sharing every K/V tile it loads (GQA packing). Per
 * tile of BK keys (whole 16-token blocks): K into shared memory, scores
 * S = (scale*Q) K^T, per-row online softmax (running max m, sum l; rows
 * without any valid key so far keep m = -inf and weight 0), V into shared
 * memory, acc = acc*alpha + P V. Keys outside a row's range get weight 0
 * and are never loaded (the cache tail past kv_len may hold anything).
 *
 * prefill: out[q row][head][d] = acc / l (0 for a row with no key).
 * DECODE:  partial results of the split, unnormalized:
 *          part_acc[item][head][d] = acc, part_ml[item][head] = (m, l);
 *          attn_reduce.comp combines the splits.
 *
 * Specialization: 0 WG, 1 D = head_dim (multiple of 4), 2 M rows per tile,
 * 3 BK keys per tile (multiple of 16), 4 GH heads per workgroup (M % GH == 0).
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 128;
layout(constant_id = 1) const uint D = 64;
layout(constant_id = 2) const uint M = 16;
layout(constant_id = 3) const uint BK = 32;
layout(constant_id = 4) const uint GH = 1;

const uint D4 = D / 4;
const uint KS = D4 + 1; /* shared K/V row stride in uvec2, padded against bank conflicts */
const uint BT = M / GH;
const uint NPT = (M * D4 + WG - 1) / WG; /* output vec4s per invocation */

layout(push_constant) uniform PC { vkpt_pc_attn pc; };
layout(std430, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, binding = 1) readonly buffer BTab { uint bt[]; };
layout(std430, binding = 2) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer KC { uvec2 kc[]; };
layout(std430, binding = 4) readonly buffer VC { uvec2 vc[]; };
layout(std430, binding = 5) writeonly buffer O { vec4 o[]; };
#ifdef DECODE
layout(std430, binding = 6) writeonly buffer ML { vec2 ml[]; };
#endif

shared vec4 sQ[M * D4];
shared uvec2 sKV[BK * KS];
shared float sP[M * BK];
shared float sM[M];
shared float sL[M];
shared float sA[M];

#define NEG_INF uintBitsToFloat(0xff800000u)

vec4 unpack4(uvec2 u)
{
    return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
}

float tanh_safe(float v)
{
    return 1.0 - 2.0 / (exp(2.0 * v) + 1.0);
}

void load_tile(bool is_v, uint kt, uint lo, uint hi, uint bt0, uint hkv)
{
    for (uint idx = gl_LocalInvocationID.x; idx < BK * D4; idx += WG) {
        uint j = idx / D4, c = idx - j * D4;
        uint key = kt + j;
        uvec2 val = uvec2(0u);
        if (key >= lo && key < hi) {
            uint blk = bt[bt0 + key / 16u];
            if (blk < pc.n_blocks) {
                uint a = ((blk * pc.n_kv_head + hkv) * 16u + key % 16u) * D4 + c;
                val = is_v ? vc[a] : kc[a];
            }
        }
        sKV[j * KS + c] = val;
    }
}

void main()
{
    uint lid = gl_LocalInvocationID.x;
    uint hkv = gl_WorkGroupID.y / pc.n_hsplit;
    uint g0 = (gl_WorkGroupID.y - hkv * pc.n_hsplit) * GH; /* first head of the slice in the group */
    /* n_items == ~0: a replayed step's counts, {n_items, items_off} at meta[items_off] */
    uint n_items = pc.n_items, items_off = pc.items_off;
    if (n_items == 0xffffffffu) {
        n_items = meta[pc.items_off];
        items_off = meta[pc.items_off + 1u];
    }
    for (uint it = gl_WorkGroupID.x; it < n_items; it += gl_NumWorkGroups.x) {
#ifdef DECODE
        uint s = meta[items_off + 3u * it];
        uint k0 = meta[items_off + 3u * it + 1u];
        uint k1 = meta[items_off + 3u * it + 2u];
        uint t0 = 0u;
#else
        uint s = meta[items_off + 2u * it];
        uint t0 = meta[items_off + 2u * it + 1u];
#endif
        uint q_start = meta[4u * s], q_len = meta[4u * s + 1u];
        uint kv_len = meta[4u * s + 2u], bt0 = meta[4u * s + 3u];
        uint base_pos = kv_len - q_len; /* position of row 0 of the sequence */
        uint nt = min(BT, q_len - t0);  /* valid tokens of this item */
        uint lo = 0u, hi = kv_len;
        if (pc.causal != 0u) {
            hi = min(kv_len, base_pos + t0 + nt);
            if (pc.window > 0u) lo = uint(max(int(base_pos + t0) - int(pc.window) + 1, 0));
        }
#ifdef DECODE
        lo = max(lo, k0);
        hi = min(hi, k1);
#endif

        /* Q tile (pre-scaled) and softmax state */
        for (uint idx = lid; idx < M * D4; idx += WG) {
            uint r = idx / D4, c = idx - r * D4;
            uint ti = r / GH, g = g0 + r - ti * GH;
            vec4 v = vec4(0.0);
            if (ti < nt && g < pc.group) {
                uint qa = pc.q_off + (q_start + t0 + ti) * pc.q_stride +
                          (hkv * pc.group + g) * D + 4u * c;
                v = vec4(q[qa], q[qa + 1u], q[qa + 2u], q[qa + 3u]) * pc.scale;
            }
            sQ[idx] = v;
        }
        for (uint r = lid; r < M; r += WG) {
            sM[r] = NEG_INF;
            sL[r] = 0.0;
        }
        vec4 acc[NPT];
        for (uint i = 0; i < NPT; i++) acc[i] = vec4(0.0);

        for (uint kt = lo & ~15u; kt < hi; kt += BK) {
            barrier(); /* previous tile's readers of sKV/sP are done */
            load_tile(false, kt, lo, hi, bt0, hkv);
            barrier();
            for (uint idx = lid; idx < M * BK; idx += WG) {
                uint r = idx / BK, j = idx - r * BK;
                uint ti = r / GH, g = g0 + r - ti * GH;
                uint key = kt + j;
                uint pos = base_pos + t0 + ti;
                bool ok = ti < nt && g < pc.group && key >= lo && key < hi;
                if (pc.causal != 0u)
                    ok = ok && key <= pos && (pc.window == 0u || key + pc.window > pos);
                float sc = NEG_INF;
                if (ok) {
                    sc = 0.0;
                    for (uint c = 0; c < D4; c++) sc += dot(sQ[r * D4 + c], unpack4(sKV[j * KS + c]));
                    if (pc.softcap > 0.0) sc = pc.softcap * tanh_safe(sc / pc.softcap);
                }
                sP[idx] = sc;
            }
            barrier();
            load_tile(true, kt, lo, hi, bt0, hkv);
            for (uint r = lid; r < M; r += WG) {
                float m_old = sM[r];
                float m_new = m_old;
                for (uint j = 0; j < BK; j++) m_new = max(m_new, sP[r * BK + j]);
                float alpha = 1.0, sum = 0.0;
                if (m_new == NEG_INF) {
                    for (uint j = 0; j < BK; j++) sP[r * BK + j] = 0.0;
                } else {
                    alpha = exp(m_old - m_new);
                    for (uint j = 0; j < BK; j++) {
                        float p = exp(sP[r * BK + j] - m_new);
                        sP[r * BK + j] = p;
                        sum += p;
                    }
                }
                sM[r] = m_new;
                sL[r] = sL[r] * alpha + sum;
                sA[r] = alpha;
            }
            barrier();
            for (uint i = 0; i < NPT; i++) {
                uint idx = lid + i * WG;
                if (idx < M * D4) {
                    uint r = idx / D4, c = idx - r * D4;
                    vec4 a = acc[i] * sA[r];
                    for (uint j = 0; j < BK; j++) a += sP[r * BK + j] * unpack4(sKV[j * KS + c]);
                    acc[i] = a;
                }
            }
        }
        barrier();

        for (uint i = 0; i < NPT; i++) {
            uint idx = lid + i * WG;
            if (idx >= M * D4) continue;
            uint r = idx / D4, c = idx - r * D4;
            uint ti = r / GH, g = g0 + r - ti * GH;
            if (ti >= nt || g >= pc.group) continue;
            uint head = hkv * pc.group + g;
#ifdef DECODE
            o[(it * pc.n_head + head) * D4 + c] = acc[i];
            if (c == 0u) ml[it * pc.n_head + head] = vec2(sM[r], sL[r]);
#else
            float l = sL[r];
            o[((q_start + t0 + ti) * pc.n_head + head) * D4 + c] = l > 0.0 ? acc[i] / l : vec4(0.0);
#endif
        }
        barrier(); /* sM/sL/sQ are reset by the next item */
    }
}
