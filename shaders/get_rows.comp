#version 450
/* get_rows: out[i][:] = dequant(W[ids[i]]) in f32, for every weight format;
 * the embedding lookup. Bit-identical to vkpt_dequantize_row (quant.glsl's
 * dq8 evaluates the reference's expressions, `precise`).
 *
 * Invocation (x, y) writes elements 8x..8x+7 of output row y. W is bound
 * from row pc.row0 on, pc.rows rows (the launcher splits tensors larger
 * than one binding into row chunks, one dispatch each): ids outside the
 * chunk are skipped, and the last chunk writes zeros for ids past the end.
 *
 * Bindings: 0 W, 1 ids (u32), 2 out (f32). */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform PC { vkpt_pc_get_rows pc; };
layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer Ids { uint ids[]; };
layout(std430, binding = 2) writeonly buffer Out { float outp[]; };

#include "quant.glsl"

void main()
{
    const uint g = gl_GlobalInvocationID.x, i = gl_GlobalInvocationID.y;
    const uint K = pc.K;
    if (i >= pc.n || 8u * g >= K) return;
    const uint id = ids[pc.ids_off + i];
    const uint ob = pc.out_off + i * K + 8u * g;
    if (id < pc.row0 || id - pc.row0 >= pc.rows) {
        if ((pc.flags & 1u) != 0u && id >= pc.row0 + pc.rows)
            for (uint e = 0u; e < 8u && 8u * g + e < K; e++) outp[ob + e] = 0.0;
        return;
    }
    const uint r = id - pc.row0;
#if defined(WT_FLOAT)
    const uint rb = pc.w_off + r * K * QB;
    for (uint e = 0u; e < 8u && 8u * g + e < K; e++) outp[ob + e] = w_elem(rb, 8u * g + e);
#else
    const uint k = 8u * g;
    const uint bb = pc.w_off + r * (K / QK) * QB + (k / QK) * QB;
    vec4 v0, v1;
    dq8(bb, (k % QK) / 8u, v0, v1);
    for (uint e = 0u; e < 4u; e++) {
        outp[ob + e] = v0[e];
        outp[ob + 4u + e] = v1[e];
    }
#endif
}
