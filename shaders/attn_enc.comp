#version 450
/* Non-causal attention for encoders over a packed batch of sequences, f32
 * throughout (k_encattn.c).
 *
 * The step's sequences are packed row after row; a work item is three u32
 * {start, len, t0}: query rows t0 .. t0+WG-1 of the sequence whose rows are
 * start .. start+len-1, which attend to all len rows of that same sequence
 * (and nothing else). q, k, v are row views in vec4 units: row r of head h
 * is q4[q_off + r*q_stride + h*D4 + c], c < D4 = head_dim/4, and likewise k
 * and v with kv head h / (n_head / n_kv_head). out row r of head h is
 * o4[o_off + r*o_stride + h*D4 + c].
 *
 * A workgroup takes one item for one q head (gl_WorkGroupID.y); each
 * invocation owns one query row, keeps q and its accumulator in registers,
 * and walks the sequence's keys in tiles of BK rows staged in shared memory
 * (every invocation reads the same K/V element at once: broadcasts). Online
 * softmax per tile: scores s_j = scale * q.k_j, running max m and sum l,
 * acc = acc*exp(m_old - m) + sum_j exp(s_j - m) v_j; out = acc / l.
 *
 * Why not the paged kernel (attn.comp): that one reads K/V from the f16
 * cache; an encoder has no cache to keep, and f16 K/V costs about 1e-3
 * relative accuracy where embeddings are checked to 1e-4 against f32
 * transformers.
 *
 * Specialization: 0 WG (query rows per item), 1 D = head_dim (multiple of
 * 4), 2 BK keys per tile. Shared memory: 2*BK*D floats.
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
layout(constant_id = 1) const uint D = 64;
layout(constant_id = 2) const uint BK = 32;

const uint D4 = D / 4;

layout(push_constant) uniform PC { vkpt_pc_attn_enc pc; };
layout(std430, binding = 0) readonly buffer Items { uint items[]; };
layout(std430, binding = 1) readonly buffer Q { vec4 q4[]; };
layout(std430, binding = 2) readonly buffer K { vec4 k4[]; };
layout(std430, binding = 3) readonly buffer V { vec4 v4[]; };
layout(std430, binding = 4) writeonly buffer O { vec4 o4[]; };

shared vec4 sK[BK * D4];
shared vec4 sV[BK * D4];

#define NEG_INF uintBitsToFloat(0xff800000u)

void main()
{
    uint lid = gl_LocalInvocationID.x;
    uint h = gl_WorkGroupID.y;
    uint hkv = h / (pc.n_head / pc.n_kv_head);
    for (uint it = gl_WorkGroupID.x; it < pc.n_items; it += gl_NumWorkGroups.x) {
        uint start = items[3u * it], len = items[3u * it + 1u], t0 = items[3u * it + 2u];
        uint t = t0 + lid;
        bool valid = t < len;
        vec4 qr[D4];
        vec4 acc[D4];
        for (uint c = 0u; c < D4; c++) {
            qr[c] = valid ? q4[pc.q_off + (start + t) * pc.q_stride + h * D4 + c] : vec4(0.0);
            acc[c] = vec4(0.0);
        }
        float m = NEG_INF, l = 0.0;
        for (uint kt = 0u; kt < len; kt += BK) {
            barrier(); /* the previous tile's readers are done */
            for (uint idx = lid; idx < BK * D4; idx += WG) {
                uint j = idx / D4, c = idx - j * D4;
                uint key = kt + j;
                vec4 kv = vec4(0.0), vv = vec4(0.0);
                if (key < len) {
                    kv = k4[pc.k_off + (start + key) * pc.k_stride + hkv * D4 + c];
                    vv = v4[pc.v_off + (start + key) * pc.v_stride + hkv * D4 + c];
                }
                sK[idx] = kv;
                sV[idx] = vv;
            }
            barrier();
            if (valid) {
                uint nk = min(BK, len - kt);
                float s[BK];
                float mt = m;
                for (uint j = 0u; j < nk; j++) {
                    float d = 0.0;
                    for (uint c = 0u; c < D4; c++) d += dot(qr[c], sK[j * D4 + c]);
                    s[j] = d * pc.scale;
                    mt = max(mt, s[j]);
                }
                float alpha = exp(m - mt); /* 0 on the first tile (m = -inf) */
                l *= alpha;
                for (uint c = 0u; c < D4; c++) acc[c] *= alpha;
                for (uint j = 0u; j < nk; j++) {
                    float p = exp(s[j] - mt);
                    l += p;
                    for (uint c = 0u; c < D4; c++) acc[c] += p * sV[j * D4 + c];
                }
                m = mt;
            }
        }
        if (valid) {
            float inv = 1.0 / l;
            for (uint c = 0u; c < D4; c++)
                o4[pc.o_off + (start + t) * pc.o_stride + h * D4 + c] = acc[c] * inv;
        }
    }
}
