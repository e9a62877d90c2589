#version 450
/* Activation quantization for the integer-dot matvec: each block of 32 f32
 * becomes 32 int8 (packed 4 to a word, element 4j + b in byte b of word j)
 * and one f32 scale d = amax * (1/127), q = roundEven(x / d) (0 for an
 * all-zero block). One invocation per block.
 *
 * Bindings: 0 X (f32, x_off a multiple of 4), 1 Q (words from q_off),
 * 2 D (f32 scales from d_off; the same buffer as Q, another range). */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform PC { vkpt_pc_quant_act pc; };
layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) writeonly buffer Q { uint q[]; };
layout(std430, binding = 2) writeonly buffer D { float qd[]; };

void main()
{
    const uint b = gl_GlobalInvocationID.x;
    if (b >= pc.n_blocks) return;
    const uint xb = (pc.x_off >> 2) + 8u * b;
    vec4 v[8];
    float amax = 0.0;
    for (uint j = 0u; j < 8u; j++) {
        v[j] = x4[xb + j];
        vec4 a = abs(v[j]);
        amax = max(amax, max(max(a.x, a.y), max(a.z, a.w)));
    }
    const float d = amax * (1.0 / 127.0);
    const float id = d != 0.0 ? 1.0 / d : 0.0;
    for (uint j = 0u; j < 8u; j++) {
        ivec4 iq = clamp(ivec4(roundEven(v[j] * id)), -127, 127);
        q[pc.q_off + 8u * b + j] = (uint(iq.x) & 0xFFu) | ((uint(iq.y) & 0xFFu) << 8) |
                                   ((uint(iq.z) & 0xFFu) << 16) | (uint(iq.w) << 24);
    }
    qd[pc.d_off + b] = d;
}
