#version 450
/* Write new K/V rows (f32) into the paged f16 KV cache (k_attn.c).
 *
 * k, v: [n_rows][n_kv_head][head_dim] f32 at k_off/v_off with rows
 * k_stride/v_stride elements apart (so the K and V parts of a fused qkv
 * buffer work). slot[t] = block*16 + offset is the cache slot of row t;
 * 0xffffffff skips the row (padding), as does a slot past n_blocks.
 * Cache: [n_blocks][n_kv_head][16 tok][head_dim] f16, accessed as u32
 * pairs (head_dim is even), so no 16-bit storage feature is needed.
 * f32 -> f16 by packHalf2x16 (round to nearest even on the drivers we test).
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform PC { vkpt_pc_kvwrite pc; };
layout(std430, binding = 0) readonly buffer K { float k[]; };
layout(std430, binding = 1) readonly buffer V { float v[]; };
layout(std430, binding = 2) readonly buffer S { uint slot[]; };
layout(std430, binding = 3) writeonly buffer KC { uint kc[]; };
layout(std430, binding = 4) writeonly buffer VC { uint vc[]; };

void main()
{
    uint d2n = pc.head_dim / 2u;
    uint per_row = pc.n_kv_head * d2n;
    uint total = pc.n_rows * per_row;
    uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += step) {
        uint t = i / per_row;
        uint rem = i - t * per_row;
        uint h = rem / d2n;
        uint d2 = rem - h * d2n;
        uint s = slot[t];
        if (s == 0xffffffffu || s / 16u >= pc.n_blocks) continue;
        uint dst = ((s / 16u * pc.n_kv_head + h) * 16u + s % 16u) * d2n + d2;
        uint ks = pc.k_off + t * pc.k_stride + h * pc.head_dim + 2u * d2;
        uint vs = pc.v_off + t * pc.v_stride + h * pc.head_dim + 2u * d2;
        kc[dst] = packHalf2x16(vec2(k[ks], k[ks + 1u]));
        vc[dst] = packHalf2x16(vec2(v[vs], v[vs + 1u]));
    }
}
