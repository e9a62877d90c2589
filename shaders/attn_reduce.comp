#version 450
/* Combine the split-K partial results of the decode attention
 * (attn.comp with DECODE) into the output rows (k_attn.c).
 *
 * meta at list_off: per decode sequence {seq, first item, item count}
 * (n_seqs 0xffffffff: the counts are meta[list_off], meta[list_off + 1]);
 * the sequence's output row is its q_start (meta[4*seq]). For head h:
 *   m = max_i m_i,  l = sum_i l_i e^(m_i - m),  out = sum_i acc_i e^(m_i - m) / l
 * Splits without any valid key (l_i = 0, m_i = -inf) weigh nothing.
 * One workgroup per (sequence, head): x = sequence (grid-strided), y = head.
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform PC { vkpt_pc_attn_reduce pc; };
layout(std430, binding = 0) readonly buffer Meta { uint meta[]; };
layout(std430, binding = 1) readonly buffer PA { float part_acc[]; };
layout(std430, binding = 2) readonly buffer ML { vec2 ml[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };

void main()
{
    uint h = gl_WorkGroupID.y;
    uint D = pc.head_dim;
    /* n_seqs == ~0: a replayed step's {n_seqs, list_off} at meta[list_off] */
    uint n_seqs = pc.n_seqs, list_off = pc.list_off;
    if (n_seqs == 0xffffffffu) {
        n_seqs = meta[pc.list_off];
        list_off = meta[pc.list_off + 1u];
    }
    for (uint ds = gl_WorkGroupID.x; ds < n_seqs; ds += gl_NumWorkGroups.x) {
        uint s = meta[list_off + 3u * ds];
        uint first = meta[list_off + 3u * ds + 1u];
        uint cnt = meta[list_off + 3u * ds + 2u];
        uint row = meta[4u * s];
        float m = uintBitsToFloat(0xff800000u);
        for (uint i = 0; i < cnt; i++) m = max(m, ml[(first + i) * pc.n_head + h].x);
        float l = 0.0;
        for (uint i = 0; i < cnt; i++) {
            vec2 e = ml[(first + i) * pc.n_head + h];
            if (e.y > 0.0) l += e.y * exp(e.x - m);
        }
        for (uint d = gl_LocalInvocationID.x; d < D; d += gl_WorkGroupSize.x) {
            float acc = 0.0;
            for (uint i = 0; i < cnt; i++) {
                vec2 e = ml[(first + i) * pc.n_head + h];
                if (e.y > 0.0) acc += part_acc[((first + i) * pc.n_head + h) * D + d] * exp(e.x - m);
            }
            o[(row * pc.n_head + h) * D + d] = l > 0.0 ? acc / l : 0.0;
        }
    }
}
