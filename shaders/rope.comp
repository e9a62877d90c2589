#version 450
/* Rotary position embedding, in place on f32 rows (k_rope.c).
 *
 * x holds [n_rows][n_heads][head_dim] starting at x_off with rows x_stride
 * elements apart (so q or k inside a fused qkv buffer works). Row t has
 * position pos[t]. The first rot_dim = 2*rot_half dims of each head are
 * rotated, the rest are left untouched. Pair k (k < rot_half) is
 *   interleaved (GGUF llama):  (2k, 2k+1)
 *   neox (Hugging Face):       (k, k + rot_half)
 * and is rotated by the angle a = float(pos) * inv_freq[k], one f32
 * multiply as transformers does, then
 *   c = cos(a)*mscale, s = sin(a)*mscale
 *   y0 = x0*c - x1*s,  y1 = x1*c + x0*s
 *
 * cos/sin: GLSL's builtins only promise 2^-11 absolute error on [-pi, pi]
 * (Vulkan spec) and are often worse after their own range reduction at the
 * large angles of long contexts, so this file reduces the angle itself
 * (exact products, no fma needed) and evaluates minimax polynomials on
 * [-pi/4, pi/4]: within ~2.5e-7 of the exact cos/sin of the f32 angle on
 * every device, for angles below 2^24.
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform PC { vkpt_pc_rope pc; };
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer P { uint pos[]; };
layout(std430, binding = 2) readonly buffer F { float inv_freq[]; };

/* sin and cos of a (f32), |a| < 2^24, within ~2.5e-7 absolute.
 * Reduction r = a - j*pi/2 without relying on a fused fma (drivers may split
 * it): j < 2^24 is split into 12-bit halves jh + jl and pi/2 into four
 * 12-bit chunks, so every product is exact and the running remainder is
 * exact until it is small. j = round(a * 2/pi) in f32 can be one off for
 * large a; one step puts r back into [-pi/4, pi/4]. */
void sincos_f32(float a, out float s, out float c)
{
    const float two_over_pi = 0.636619772367581343;
    const float p0 = uintBitsToFloat(0x3fc91000u); /* pi/2 = p0 + p1 + p2 + p3 + O(6e-18) */
    const float p1 = uintBitsToFloat(0xb6957000u);
    const float p2 = uintBitsToFloat(0xb06f5000u);
    const float p3 = uintBitsToFloat(0x298c2000u);
    precise float j = floor(a * two_over_pi + 0.5);
    precise float jh = floor(j * (1.0 / 4096.0)) * 4096.0;
    precise float jl = j - jh;
    precise float r = a - jh * p0;
    r = r - jl * p0;
    r = r - jh * p1;
    r = r - jl * p1;
    r = r - jh * p2;
    r = r - jl * p2;
    r = r - jh * p3;
    r = r - jl * p3;
    if (r > 0.78539816) {
        j += 1.0;
        r = r - p0;
        r = r - p1;
        r = r - p2;
        r = r - p3;
    } else if (r < -0.78539816) {
        j -= 1.0;
        r = r + p0;
        r = r + p1;
        r = r + p2;
        r = r + p3;
    }
    float z = r * r;
    /* Cephes sinf/cosf minimax coefficients for |r| <= pi/4 */
    float sp = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    float cp = 1.0 - 0.5 * z +
               z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    int q = int(j) & 3;
    s = q == 0 ? sp : q == 1 ? cp : q == 2 ? -sp : -cp;
    c = q == 0 ? cp : q == 1 ? -sp : q == 2 ? -cp : sp;
}

void main()
{
    uint half_ = pc.rot_half;
    uint per_row = pc.n_heads * half_;
    uint total = pc.n_rows * per_row;
    uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += step) {
        uint t = i / per_row;
        uint rem = i - t * per_row;
        uint h = rem / half_;
        uint k = rem - h * half_;
        precise float a = float(pos[t]) * inv_freq[k];
        float s, c;
        sincos_f32(a, s, c);
        c *= pc.mscale;
        s *= pc.mscale;
        uint base = pc.x_off + t * pc.x_stride + h * pc.head_dim;
        uint i0 = pc.neox != 0u ? base + k : base + 2u * k;
        uint i1 = pc.neox != 0u ? base + k + half_ : base + 2u * k + 1u;
        float x0 = x[i0], x1 = x[i1];
        x[i0] = x0 * c - x1 * s;
        x[i1] = x1 * c + x0 * s;
    }
}
