#version 450
/* RMSNorm and LayerNorm over rows of f32 (k_norm.c).
 *
 * Row (t, h), t < n_rows, h < n_heads, is the n elements at
 * x[x_off + t*x_stride + h*n]; its output goes to y[y_off + t*y_stride + h*n].
 * n_heads > 1 is the per-head norm (Qwen3 q/k norm): every head slice is
 * normalized on its own with the shared weight[n]. One workgroup per row,
 * rows grid-strided so any count fits the dispatch limits. y may alias x:
 * each element is read and written by the same invocation.
 *
 *   RMSNorm:   y = x / sqrt(mean(x^2) + eps) * w
 *   LayerNorm: y = (x - mean) / sqrt(var + eps) * w + b   (two-pass variance)
 * flags: 1 = multiply by w, 2 = add b.
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { vkpt_pc_norm pc; };
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

#include "wgreduce.glsl"

void main()
{
    uint lid = gl_LocalInvocationID.x;
    uint n = pc.n;
    bool use_w = (pc.flags & 1u) != 0u;
    uint rows = pc.n_rows * pc.n_heads;
    for (uint r = gl_WorkGroupID.x; r < rows; r += gl_NumWorkGroups.x) {
        uint t = r / pc.n_heads, h = r - t * pc.n_heads;
        uint xo = pc.x_off + t * pc.x_stride + h * n;
        uint yo = pc.y_off + t * pc.y_stride + h * n;
#ifdef LAYERNORM
        float s = 0.0;
        for (uint i = lid; i < n; i += WG) s += x[xo + i];
        float mean = wg_sum(s) / float(n);
        float v = 0.0;
        for (uint i = lid; i < n; i += WG) {
            float d = x[xo + i] - mean;
            v += d * d;
        }
        float inv = inversesqrt(wg_sum(v) / float(n) + pc.eps);
        bool use_b = (pc.flags & 2u) != 0u;
        for (uint i = lid; i < n; i += WG) {
            float o = (x[xo + i] - mean) * inv;
            if (use_w) o *= w[i];
            if (use_b) o += b[i];
            y[yo + i] = o;
        }
#else
        float s = 0.0;
        for (uint i = lid; i < n; i += WG) {
            float v = x[xo + i];
            s += v * v;
        }
        float inv = inversesqrt(wg_sum(s) / float(n) + pc.eps);
        for (uint i = lid; i < n; i += WG) {
            float o = x[xo + i] * inv;
            y[yo + i] = use_w ? o * w[i] : o;
        }
#endif
    }
}
